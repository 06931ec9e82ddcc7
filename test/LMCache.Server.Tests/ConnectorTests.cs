using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using LMCache.Connectors.Lm;
using LMCache.Core.Configuration;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Core.Serde;
using LMCache.Hosting;
using LMCache.Protocol;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.Remote;
using LMCache.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Server.Tests;

/// <summary>Our <c>lm://</c> connector against our server over real loopback sockets.</summary>
[Trait("Category", "Integration")]
[IntegrationTest]
public sealed class ConnectorTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Seed_flow_stores_through_one_engine_and_hits_through_another()
    {
        // The seed: `lmcache server localhost 65432` and engines with remote_url lm://localhost:65432.
        await using var harness = await ServerHarness.StartAsync();
        var registry = LMCacheBuiltIns.CreateConnectorRegistry();
        var engineOptions = new LMCacheEngineOptions { RemoteUrl = harness.Url };
        var context = new RemoteConnectorContext(engineOptions, NullLoggerFactory.Instance);
        var keys = Enumerable.Range(0, 8).Select(i => TestChunks.Key(i)).ToArray();

        using (var cpu = new LocalCpuBackend(16L << 20))
        {
            await using var writer = new RemoteBackend(registry.Create(harness.Url, context), new NaiveSerde(), cpu, RemoteBackendOptions.FromEngineOptions(engineOptions));
            for (var i = 0; i < keys.Length; i++)
            {
                using var chunk = TestChunks.Create(cpu, i);
                writer.SubmitPut(keys[i], chunk);
            }
            await writer.FlushAsync(Ct);
        }

        using var cpu2 = new LocalCpuBackend(16L << 20);
        await using var reader = new RemoteBackend(registry.Create(harness.Url, context), new NaiveSerde(), cpu2, RemoteBackendOptions.FromEngineOptions(engineOptions));
        Assert.Equal(keys.Length, await reader.ContainsPrefixAsync(keys, Ct));
        var read = new MemoryObject?[keys.Length];
        Assert.Equal(keys.Length, await reader.GetPrefixAsync(keys, read, Ct));
        for (var i = 0; i < keys.Length; i++)
        {
            Assert.Equal(TestChunks.SmallChunk(), read[i]!.Metadata);
            Assert.True(TestChunks.Matches(read[i]!, i));
            read[i]!.Release();
        }
        var stats = harness.Server.GetStatistics();
        Assert.Equal(keys.Length, stats.Keys);
        Assert.Equal(keys.Length, stats.Hits);
        Assert.Equal(0, cpu2.OutstandingObjects);
    }

    [Fact]
    public async Task Exists_prefix_stops_at_the_first_miss_in_one_batch()
    {
        await using var harness = await ServerHarness.StartAsync();
        await using var connector = harness.CreateConnector(connections: 1);
        using var allocator = new NativeSlabAllocator(16L << 20);
        var keys = Enumerable.Range(0, 300).Select(i => TestChunks.Key(i)).ToArray();
        for (var i = 0; i < 270; i++)
        {
            if (i == 200)
            {
                continue;
            }
            using var chunk = TestChunks.Create(allocator, i);
            await connector.PutAsync(keys[i], chunk, Ct);
        }
        Assert.Equal(200, await connector.ExistsPrefixAsync(keys, Ct));
        Assert.Equal(64, await connector.ExistsPrefixAsync(keys.AsMemory(0, 64), Ct));
        Assert.Equal(69, await connector.ExistsPrefixAsync(keys.AsMemory(201), Ct));
        // The connection is still in step after the pipelined batches.
        Assert.True(await connector.PingAsync(Ct));
    }

    [Fact]
    public async Task Get_prefix_returns_the_leading_hits_and_releases_the_rest()
    {
        await using var harness = await ServerHarness.StartAsync();
        await using var connector = harness.CreateConnector(connections: 4);
        using var allocator = new NativeSlabAllocator(16L << 20);
        var keys = Enumerable.Range(0, 20).Select(i => TestChunks.Key(i)).ToArray();
        for (var i = 0; i < keys.Length; i++)
        {
            if (i != 11)
            {
                using var chunk = TestChunks.Create(allocator, i);
                await connector.PutAsync(keys[i], chunk, Ct);
            }
        }
        var destination = new MemoryObject?[keys.Length];
        var count = await connector.GetPrefixAsync(keys, destination, allocator, Ct);
        Assert.Equal(11, count);
        for (var i = 0; i < count; i++)
        {
            Assert.True(TestChunks.Matches(destination[i]!, i));
            destination[i]!.Release();
        }
        Assert.All(destination.Skip(count), Assert.Null);
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public async Task Reply_whose_length_does_not_match_its_shape_is_a_miss_and_the_stream_stays_in_step()
    {
        await using var harness = await ServerHarness.StartAsync();
        var key = TestChunks.Key(1);
        // A raw PUT claiming shape [2,2,16,64] bf16 (8192 bytes) but carrying 100 bytes.
        using (var client = new TcpClient())
        {
            await client.ConnectAsync(harness.Endpoint, Ct);
            var header = new byte[LmRequestHeader.Size];
            new LmRequestHeader(LmCommand.Put, 100, 1, 3, 0, KvShape.Kv2Ltd(2, 16, 64), key.ToString()).WriteTo(header);
            await client.GetStream().WriteAsync(header, Ct);
            await client.GetStream().WriteAsync(new byte[100], Ct);
            LmRequestHeader.Health().WriteTo(header);
            await client.GetStream().WriteAsync(header, Ct);
            await client.GetStream().ReadExactlyAsync(new byte[LmReplyHeader.Size], Ct);
        }
        await using var connector = harness.CreateConnector(connections: 1);
        using var allocator = new NativeSlabAllocator(16L << 20);
        Assert.Null(await connector.GetAsync(key, allocator, Ct));
        Assert.True(await connector.PingAsync(Ct));
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public async Task Full_allocator_is_a_miss_and_the_stream_stays_in_step()
    {
        await using var harness = await ServerHarness.StartAsync();
        await using var connector = harness.CreateConnector(connections: 1);
        using var big = new NativeSlabAllocator(16L << 20);
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 512, 64), KvDType.BFloat16, MemoryFormat.KV2LTD);   // 256 KiB
        using (var chunk = TestChunks.Create(big, 7, metadata))
        {
            await connector.PutAsync(TestChunks.Key(7), chunk, Ct);
        }
        using var tiny = new NativeSlabAllocator(64 * 1024);
        Assert.Null(await connector.GetAsync(TestChunks.Key(7), tiny, Ct));
        using var read = await connector.GetAsync(TestChunks.Key(7), big, Ct);
        Assert.NotNull(read);
        Assert.True(TestChunks.Matches(read, 7));
    }

    [Fact]
    public async Task List_returns_stored_keys()
    {
        await using var harness = await ServerHarness.StartAsync();
        await using var connector = harness.CreateConnector();
        using var allocator = new NativeSlabAllocator(16L << 20);
        for (var i = 0; i < 3; i++)
        {
            using var chunk = TestChunks.Create(allocator, i);
            await connector.PutAsync(TestChunks.Key(i), chunk, Ct);
        }
        for (var i = 0; i < 4; i++)
        {
            await connector.PingAsync(Ct);
        }
        var listed = await connector.ListKeysAsync(Ct);
        Assert.All(listed, key => Assert.True(CacheEngineKey.TryParse(key, out _), key));
        Assert.Equal(Enumerable.Range(0, 3).Select(i => TestChunks.Key(i).ToString()).Order(), listed.Order());
    }

    [Fact]
    public async Task Connector_fails_fast_while_the_server_is_down_and_recovers_when_it_returns()
    {
        var harness = await ServerHarness.StartAsync();
        var port = harness.Endpoint.Port;
        await using var connector = harness.CreateConnector(connections: 2, timeout: TimeSpan.FromSeconds(10));
        Assert.True(await connector.PingAsync(Ct));
        await harness.DisposeAsync();

        // The pooled connections break; the first call fails, later ones fail fast during back-off.
        await Assert.ThrowsAnyAsync<Exception>(async () => await connector.PingAsync(Ct));
        await Assert.ThrowsAnyAsync<Exception>(async () => await connector.PingAsync(Ct));

        await using var restarted = new LmServer(new LmServerOptions { Host = "127.0.0.1", Port = port, CapacityBytes = 16L << 20 });
        await restarted.StartAsync(Ct);
        var healthy = false;
        for (var attempt = 0; attempt < 200 && !healthy; attempt++)
        {
            try
            {
                healthy = await connector.PingAsync(Ct);
            }
            catch (Exception ex) when (ex is LmConnectionException or IOException or TimeoutException)
            {
                await Task.Delay(100, Ct);   // waiting out the connector's back-off, not synchronising with the server
            }
        }
        Assert.True(healthy);
    }

    [Fact]
    public async Task Silent_server_times_out_instead_of_hanging()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var accepted = listener.AcceptSocketAsync(Ct);
        await using var connector = new LmConnector(new LmConnectorOptions
        {
            Host = "127.0.0.1",
            Port = port,
            Connections = 1,
            OperationTimeout = TimeSpan.FromMilliseconds(500),
        });
        using var allocator = new NativeSlabAllocator(1 << 20);
        await Assert.ThrowsAsync<TimeoutException>(async () => await connector.GetAsync(TestChunks.Key(1), allocator, Ct));
        (await accepted).Dispose();
    }

    [Fact]
    public async Task Token_is_required_when_configured()
    {
        await using var harness = await ServerHarness.StartAsync(o => o.AuthToken = "s3cret");
        await using (var good = harness.CreateConnector(query: "&token=s3cret"))
        {
            Assert.True(await good.PingAsync(Ct));
        }
        await using (var wrong = harness.CreateConnector(query: "&token=nope"))
        {
            await Assert.ThrowsAsync<LmConnectionException>(async () => await wrong.PingAsync(Ct));
        }
        await using (var none = harness.CreateConnector())
        {
            // HEALTH before AUTH is refused; the ping then asks with an EXIST (a server may refuse HEALTH alone), which
            // is refused too, so the ping fails with HEALTH's error.
            await Assert.ThrowsAnyAsync<IOException>(async () => await none.PingAsync(Ct));
        }
        Assert.Equal(3, harness.Server.GetStatistics().ConnectionErrors);
    }

    [Fact]
    public async Task Tls_works_with_a_trusted_certificate()
    {
        using var folder = new TempFolder();
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        var caFile = folder.Combine("ca.pem");
        await File.WriteAllTextAsync(caFile, certificate.ExportCertificatePem(), Ct);
        using var serverCertificate = X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), null);

        await using var harness = await ServerHarness.StartAsync(o => o.TlsCertificate = serverCertificate);
        await using var connector = harness.CreateConnector(query: "&tls=true&tls_ca=" + Uri.EscapeDataString(caFile));
        using var allocator = new NativeSlabAllocator(16L << 20);
        using (var chunk = TestChunks.Create(allocator, 5))
        {
            await connector.PutAsync(TestChunks.Key(5), chunk, Ct);
        }
        using var read = await connector.GetAsync(TestChunks.Key(5), allocator, Ct);
        Assert.NotNull(read);
        Assert.True(TestChunks.Matches(read, 5));
    }

    [Fact]
    public async Task Put_that_the_server_refuses_fails_instead_of_vanishing()
    {
        await using var harness = await ServerHarness.StartAsync(o => o.MaxPayloadBytes = 64 * 1024);
        await using var connector = harness.CreateConnector(connections: 1);
        using var allocator = new NativeSlabAllocator(16L << 20);
        var big = new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 512, 64), KvDType.BFloat16, MemoryFormat.KV2LTD);   // 256 KiB
        using (var chunk = TestChunks.Create(allocator, 1, big))
        {
            await Assert.ThrowsAnyAsync<Exception>(async () => await connector.PutAsync(TestChunks.Key(1), chunk, Ct));
        }
        // The broken connection was replaced: the next put and read work.
        using (var small = TestChunks.Create(allocator, 2))
        {
            await connector.PutAsync(TestChunks.Key(2), small, Ct);
        }
        using var read = await connector.GetAsync(TestChunks.Key(2), allocator, Ct);
        Assert.True(TestChunks.Matches(read!, 2));
    }

    [Fact]
    public void Url_parsing_rejects_what_it_cannot_use()
    {
        var options = LmConnectorOptions.Parse("lm://localhost:65432", new LMCacheEngineOptions { BlockingTimeoutSecs = 3 });
        Assert.Equal(("localhost", 65432, 4, TimeSpan.FromSeconds(3)), (options.Host, options.Port, options.Connections, options.OperationTimeout));
        Assert.Throws<Core.Diagnostics.LMCacheConfigurationException>(() => LmConnectorOptions.Parse("lm://localhost"));
        Assert.Throws<Core.Diagnostics.LMCacheConfigurationException>(() => LmConnectorOptions.Parse("lm://localhost:1?connections=0"));
        Assert.Throws<Core.Diagnostics.LMCacheConfigurationException>(() => LmConnectorOptions.Parse("lm://localhost:1?bogus=1"));
        Assert.Equal("lm://h:1?token=***&tls=true", LmConnectorOptions.Redact("lm://h:1?token=abc&tls=true"));
        Assert.False(LmConnectorOptions.Parse("lm://h:1?confirm_puts=false").ConfirmPuts);
        Assert.True(LmConnectorOptions.Parse("lm://h:1").ConfirmPuts);
    }
}
