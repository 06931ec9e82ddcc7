using System.Globalization;
using LMCache.Connectors.Lm;
using LMCache.Core.Configuration;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Engine.Adapters;
using LMCache.Hosting;
using LMCache.Storage.Remote;
using LMCache.Testing;

namespace LMCache.Server.Tests;

/// <summary>
/// Mixed fleets (issue #13): our connector and engine against a stand-in for the original's <c>lmcache_server</c>
/// (<c>test/python/original_server.py</c>: it parses the key of every request like the original and closes the
/// connection on one it cannot parse, an empty one included), and the independent Python client against our server
/// with every hash spelling and the newest upstream key format.
/// </summary>
[Trait("Category", "Integration")]
public sealed class MixedFleetTests
{
    private static readonly KvLayout s_layout = new(NumLayers: 2, NumKvHeads: 2, HeadDim: 32, DType: KvDType.BFloat16);

    [Fact]
    public async Task The_stand_in_refuses_an_empty_key_like_the_original_and_answers_the_health_we_send()
    {
        SkipWithoutPython();
        var ct = TestContext.Current.CancellationToken;
        await using var standIn = await OriginalServerStandIn.StartAsync(cancellationToken: ct);
        var output = await PythonScripts.RunAsync("lm_client.py", ["127.0.0.1", Port(standIn), "keyless"], cancellationToken: ct);
        Assert.Contains("OK keyless", output, StringComparison.Ordinal);
        // The Python client checks the same key text as ours: HEALTH carries exactly this.
        Assert.Equal(LMCache.Protocol.LmWire.KeylessRequestKey, LMCache.Protocol.LmRequestHeader.Health().Key);
        var stats = await standIn.StopAsync(ct);
        Assert.Equal(2, stats.GetProperty("closed").GetArrayLength());   // the empty-key HEALTH and LIST
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Our_connector_pings_puts_confirmed_and_reads_against_the_original_server(bool serverRefusesHealth)
    {
        SkipWithoutPython();
        var ct = TestContext.Current.CancellationToken;
        await using var standIn = await OriginalServerStandIn.StartAsync(refuseHealth: serverRefusesHealth, cancellationToken: ct);
        await using var connector = CreateConnector(standIn);
        using var allocator = new NativeSlabAllocator(16L << 20);
        var scope = new KeyScope("vllm", "fleet/model", DType: "bfloat16");

        Assert.True(await connector.PingAsync(ct));
        var keys = new List<CacheEngineKey>();
        for (var i = 0; i < 4; i++)
        {
            var key = scope.MakeKey(HashWithLeadingZero(i));
            keys.Add(key);
            using var chunk = TestChunks.Create(allocator, i, new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 8, 64), KvDType.BFloat16, MemoryFormat.KV2LTD));
            await connector.PutAsync(key, chunk, ct);   // confirmed: throws if the server closed the connection over it
        }
        Assert.True(await connector.PingAsync(ct));
        Assert.Equal(4, await connector.ExistsPrefixAsync(keys.ToArray(), ct));
        for (var i = 0; i < 4; i++)
        {
            using var expected = TestChunks.Create(allocator, i, new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 8, 64), KvDType.BFloat16, MemoryFormat.KV2LTD));
            using var read = await connector.GetAsync(keys[i], allocator, ct);
            Assert.NotNull(read);
            Assert.True(read.Span.SequenceEqual(expected.Span));
        }

        var stats = await standIn.StopAsync(ct);
        Assert.Equal(4, stats.GetProperty("put").GetInt32());
        Assert.Equal(4, stats.GetProperty("hit").GetInt32());
        // Every key we sent is one the original parses, hash spelled as it spells it (no leading zero).
        foreach (var text in stats.GetProperty("keys").EnumerateArray().Select(k => k.GetString()!))
        {
            Assert.DoesNotContain("@0", text.Split('@')[4], StringComparison.Ordinal);
        }
        var closed = stats.GetProperty("closed").EnumerateArray().Select(c => c.GetString()!).ToList();
        if (serverRefusesHealth)
        {
            // Only the HEALTH probes were refused; data requests never were.
            Assert.NotEmpty(closed);
            Assert.All(closed, reason => Assert.Contains("HEALTH refused", reason, StringComparison.Ordinal));
        }
        else
        {
            Assert.Empty(closed);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Our_engine_against_the_original_server_stores_confirmed_retrieves_and_keeps_the_breaker_closed(bool serverRefusesHealth)
    {
        SkipWithoutPython();
        var ct = TestContext.Current.CancellationToken;
        await using var standIn = await OriginalServerStandIn.StartAsync(refuseHealth: serverRefusesHealth, cancellationToken: ct);
        var options = new LMCacheEngineOptions
        {
            ChunkSize = 16,
            MaxLocalCpuSizeGib = 0.0625,
            RemoteUrl = standIn.Url,
            RemoteSerde = "naive",
        };
        var scope = new KeyScope("vllm", "fleet/engine", DType: s_layout.DType.ToKeyToken());
        var tokens = Enumerable.Range(0, 128).Select(i => (i * 7919) % 32000).ToArray();
        var prefill = new HostKvCache(s_layout, tokens.Length);
        prefill.FillDeterministic(0, tokens.Length, seed: 5);

        await using (var writer = new LMCacheEngineBuilder(options, scope, s_layout).Build())
        {
            Assert.Equal(8, writer.Store(tokens, prefill).StoredChunks);
            await writer.FlushAsync(ct);
            var remote = (RemoteBackend)writer.Storage.Find(RemoteBackend.BackendName)!;
            Assert.Equal(8, remote.Statistics.Puts);
            Assert.Equal(0, remote.Statistics.Errors);
            Assert.False(remote.IsBypassed);
        }

        // A fresh engine (empty CPU tier) reads every chunk back from the original's server.
        await using (var reader = new LMCacheEngineBuilder(options, scope, s_layout).Build())
        {
            Assert.Equal(tokens.Length, await reader.LookupAsync(tokens, cancellationToken: ct));
            var target = new HostKvCache(s_layout, tokens.Length);
            var result = await reader.RetrieveAsync(tokens, target, cancellationToken: ct);
            Assert.Equal(tokens.Length, result.HitTokens);
            Assert.True(target.SameTokens(prefill, 0, tokens.Length));
            var remote = (RemoteBackend)reader.Storage.Find(RemoteBackend.BackendName)!;
            Assert.Equal(0, remote.Statistics.Errors);
            Assert.False(remote.IsBypassed);
            Assert.True(await remote.Connector.PingAsync(ct));
        }

        var stats = await standIn.StopAsync(ct);
        Assert.Equal(8, stats.GetProperty("put").GetInt32());
        Assert.Equal(8, stats.GetProperty("hit").GetInt32());
        Assert.All(stats.GetProperty("closed").EnumerateArray().Select(c => c.GetString()!),
            reason => Assert.Contains("HEALTH refused", reason, StringComparison.Ordinal));
    }

    [Fact]
    public async Task Every_spelling_of_a_hash_names_one_entry_on_our_server()
    {
        SkipWithoutPython();
        await using var harness = await ServerHarness.StartAsync();
        var output = await PythonScripts.RunAsync("lm_client.py", ["127.0.0.1", Port(harness), "spellings"], cancellationToken: TestContext.Current.CancellationToken);
        Assert.Contains("OK spellings 6", output, StringComparison.Ordinal);
        Assert.Equal(0, harness.Server.GetStatistics().ConnectionErrors);
        Assert.Equal(6, harness.Server.GetStatistics().Keys);
    }

    [Fact]
    public async Task Our_server_serves_the_newest_upstream_key_format()
    {
        SkipWithoutPython();
        await using var harness = await ServerHarness.StartAsync();
        var output = await PythonScripts.RunAsync("lm_client.py", ["127.0.0.1", Port(harness), "newest"], cancellationToken: TestContext.Current.CancellationToken);
        Assert.Contains("OK newest 4", output, StringComparison.Ordinal);
        Assert.Equal(0, harness.Server.GetStatistics().ConnectionErrors);
    }

    [Fact]
    public async Task A_spill_written_under_the_old_64_digit_spelling_is_found_by_the_canonical_key_after_a_restart()
    {
        using var folder = new TempFolder();
        var ct = TestContext.Current.CancellationToken;
        var hash = HashWithLeadingZero(7);
        var padded = new KeyScope("vllm", "fleet/spill", DType: "bfloat16").MakeKey(hash) with { ChunkHash = hash.ToString() };
        Assert.StartsWith("0", padded.ChunkHash, StringComparison.Ordinal);
        using var allocator = new NativeSlabAllocator(8L << 20);
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 8, 64), KvDType.BFloat16, MemoryFormat.KV2LTD);
        // An older server spilled this entry under the 64-digit spelling (as our engines wrote keys before).
        await using (var disk = new LMCache.Storage.LocalDisk.LocalDiskBackend(folder.Path, 1L << 20, allocator))
        {
            using var chunk = TestChunks.Create(allocator, 7, metadata);
            disk.SubmitPut(padded, chunk);
            await disk.FlushAsync(ct);
        }
        await using var harness = await ServerHarness.StartAsync(o =>
        {
            o.SpillFolder = folder.Path;
            o.SpillCapacityBytes = 1L << 20;
        });
        await using var connector = harness.CreateConnector();
        var canonical = padded with { ChunkHash = hash.ToKeyText() };
        using var expected = TestChunks.Create(allocator, 7, metadata);
        using var read = await connector.GetAsync(canonical, allocator, ct);
        Assert.NotNull(read);
        Assert.True(read.Span.SequenceEqual(expected.Span));
    }

    private static LmConnector CreateConnector(OriginalServerStandIn standIn) =>
        new(new LmConnectorOptions { Host = "127.0.0.1", Port = standIn.Port, Connections = 2, OperationTimeout = TimeSpan.FromSeconds(10) });

    /// <summary>A SHA-256 chunk hash whose first hex digit is 0: the one-in-16 case the two spellings disagree on.</summary>
    private static ChunkHash HashWithLeadingZero(int seed)
    {
        for (var i = 0; ; i++)
        {
            var bytes = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.ASCII.GetBytes($"fleet-{seed}-{i}"));
            if (bytes[0] < 0x10)
            {
                return new ChunkHash(bytes);
            }
        }
    }

    private static string Port(OriginalServerStandIn standIn) => standIn.Port.ToString(CultureInfo.InvariantCulture);

    private static string Port(ServerHarness harness) => harness.Endpoint.Port.ToString(CultureInfo.InvariantCulture);

    private static void SkipWithoutPython()
    {
        if (PythonScripts.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
    }
}
