using System.Net.Sockets;
using LMCache.Core.Memory;
using LMCache.Protocol;
using LMCache.Testing;

namespace LMCache.Server.Tests;

/// <summary>Capacity, eviction, limits and observability of the server.</summary>
[Trait("Category", "Integration")]
[IntegrationTest]
public sealed class ServerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Writing_four_times_the_capacity_evicts_least_recently_used()
    {
        await using var harness = await ServerHarness.StartAsync(o => o.CapacityBytes = 4L << 20);
        await using var connector = harness.CreateConnector(connections: 1);
        using var allocator = new NativeSlabAllocator(8L << 20);
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 1024, 128), KvDType.BFloat16, MemoryFormat.KV2LTD);   // 1 MiB
        for (var i = 0; i < 16; i++)
        {
            using var chunk = TestChunks.Create(allocator, i, metadata);
            await connector.PutAsync(TestChunks.Key(i), chunk, Ct);
            if (i == 1)
            {
                // Touch key 0 so that key 1 is older.
                using var touched = await connector.GetAsync(TestChunks.Key(0), allocator, Ct);
                Assert.NotNull(touched);
            }
        }
        Assert.True(await connector.PingAsync(Ct));
        var stats = harness.Server.GetStatistics();
        Assert.True(stats.Bytes <= stats.CapacityBytes, $"{stats.Bytes} > {stats.CapacityBytes}");
        Assert.True(stats.PoolUsedBytes <= stats.CapacityBytes);
        Assert.Equal(16 - stats.Keys, stats.Evictions);
        Assert.True(stats.Evictions >= 12);
        using var newest = await connector.GetAsync(TestChunks.Key(15), allocator, Ct);
        Assert.NotNull(newest);
        Assert.True(TestChunks.Matches(newest, 15));
        Assert.Null(await connector.GetAsync(TestChunks.Key(1), allocator, Ct));
    }

    [Fact]
    public async Task Overwrite_replaces_the_entry_and_frees_the_old_block()
    {
        await using var harness = await ServerHarness.StartAsync();
        await using var connector = harness.CreateConnector(connections: 1);
        using var allocator = new NativeSlabAllocator(8L << 20);
        for (var seed = 0; seed < 3; seed++)
        {
            using var chunk = TestChunks.Create(allocator, seed);
            await connector.PutAsync(TestChunks.Key(0), chunk, Ct);
        }
        using var read = await connector.GetAsync(TestChunks.Key(0), allocator, Ct);
        Assert.True(TestChunks.Matches(read!, 2));
        Assert.Equal(1, harness.Server.GetStatistics().Keys);
        Assert.Equal(1, harness.Server.Store.OutstandingObjects);
    }

    [Fact]
    public async Task Payload_larger_than_the_limit_closes_the_connection_before_allocating()
    {
        await using var harness = await ServerHarness.StartAsync(o => o.MaxPayloadBytes = 1 << 20);
        using var client = new TcpClient();
        await client.ConnectAsync(harness.Endpoint, Ct);
        var header = new byte[LmRequestHeader.Size];
        new LmRequestHeader(LmCommand.Put, (1 << 20) + 1, 1, 3, 0, new KvShape((1 << 20) + 1, 0, 0, 0), TestChunks.Key(1).ToString()).WriteTo(header);
        await client.GetStream().WriteAsync(header, Ct);
        Assert.Equal(0, await client.GetStream().ReadAsync(new byte[1], Ct));
        Assert.Equal(0, harness.Server.Store.OutstandingObjects);
        Assert.Equal(1, harness.Server.GetStatistics().ConnectionErrors);
    }

    [Fact]
    public async Task Metrics_endpoint_serves_prometheus_text()
    {
        await using var harness = await ServerHarness.StartAsync(o => o.MetricsPort = 0);
        await using var connector = harness.CreateConnector(connections: 1);
        using var allocator = new NativeSlabAllocator(8L << 20);
        using (var chunk = TestChunks.Create(allocator, 1))
        {
            await connector.PutAsync(TestChunks.Key(1), chunk, Ct);
        }
        using (var read = await connector.GetAsync(TestChunks.Key(1), allocator, Ct))
        {
            Assert.NotNull(read);
        }
        Assert.Null(await connector.GetAsync(TestChunks.Key(2), allocator, Ct));
        using var http = new HttpClient();
        var text = await http.GetStringAsync($"http://{harness.Server.MetricsEndpoint}/metrics", Ct);
        Assert.Contains("lmcache_server_keys 1\n", text, StringComparison.Ordinal);
        Assert.Contains("lmcache_server_hits_total 1\n", text, StringComparison.Ordinal);
        Assert.Contains("lmcache_server_misses_total 1\n", text, StringComparison.Ordinal);
        Assert.Contains("lmcache_server_active_connections 1\n", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE lmcache_server_evictions_total counter", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Connection_limit_refuses_extra_connections()
    {
        await using var harness = await ServerHarness.StartAsync(o => o.MaxConnections = 1);
        await using var first = harness.CreateConnector(connections: 1);
        Assert.True(await first.PingAsync(Ct));
        using var second = new TcpClient();
        await second.ConnectAsync(harness.Endpoint, Ct);
        Assert.Equal(0, await second.GetStream().ReadAsync(new byte[1], Ct));
        Assert.True(await first.PingAsync(Ct));
        Assert.Equal(1, harness.Logs.Count(4013));
    }

    [Fact]
    public async Task Invalid_options_fail_with_every_problem_named()
    {
        var ex = Assert.Throws<Core.Diagnostics.LMCacheConfigurationException>(() =>
            new LmServer(new LmServerOptions { CapacityBytes = 10, Port = 70000, AuthToken = "" }));
        Assert.Equal(3, ex.Problems.Count);
        await Task.CompletedTask;
    }
}

/// <summary>The optional disk spill (the foundation's disk tier) behind the server's memory.</summary>
[Trait("Category", "Integration")]
[IntegrationTest]
public sealed class SpillTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Evicted_entries_are_served_from_disk_and_survive_a_restart()
    {
        using var folder = new TempFolder();
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 1024, 128), KvDType.BFloat16, MemoryFormat.KV2LTD);   // 1 MiB
        void Configure(LmServerOptions o)
        {
            o.CapacityBytes = 4L << 20;
            o.SpillFolder = folder.Path;
            o.SpillCapacityBytes = 64L << 20;
        }
        using var allocator = new NativeSlabAllocator(8L << 20);
        await using (var harness = await ServerHarness.StartAsync(Configure))
        {
            await using var connector = harness.CreateConnector(connections: 1);
            for (var i = 0; i < 12; i++)
            {
                using var chunk = TestChunks.Create(allocator, i, metadata);
                await connector.PutAsync(TestChunks.Key(i), chunk, Ct);
            }
            Assert.True(await connector.PingAsync(Ct));
            await harness.Server.Store.Spill!.FlushAsync(Ct);
            var stats = harness.Server.GetStatistics();
            Assert.True(stats.Evictions >= 8);
            Assert.Equal(stats.Evictions, stats.Spilled);

            // Key 0 left memory long ago: EXIST sees it on disk, GET reads it back with its metadata.
            Assert.Equal(stats.Spilled, harness.Server.Store.Spill.Count);
            Assert.Equal(0, stats.PutsRejected);
            Assert.Equal(12, await connector.ExistsPrefixAsync(Enumerable.Range(0, 12).Select(i => TestChunks.Key(i)).ToArray(), Ct));
            using (var read = await connector.GetAsync(TestChunks.Key(0), allocator, Ct))
            {
                Assert.NotNull(read);
                Assert.Equal(metadata, read.Metadata);
                Assert.True(TestChunks.Matches(read, 0));
            }
            Assert.Equal(1, harness.Server.GetStatistics().SpillHits);
            var listed = await connector.ListKeysAsync(Ct);
            Assert.Equal(12, listed.Count);
        }

        // A new server over the same folder finds what was spilled.
        await using (var restarted = await ServerHarness.StartAsync(Configure))
        {
            await using var connector = restarted.CreateConnector(connections: 1);
            using var read = await connector.GetAsync(TestChunks.Key(1), allocator, Ct);
            Assert.NotNull(read);
            Assert.True(TestChunks.Matches(read, 1));
        }
    }

    [Fact]
    public async Task Overwrite_removes_the_stale_spilled_copy()
    {
        using var folder = new TempFolder();
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 1024, 128), KvDType.BFloat16, MemoryFormat.KV2LTD);   // 1 MiB
        await using var harness = await ServerHarness.StartAsync(o =>
        {
            o.CapacityBytes = 4L << 20;
            o.SpillFolder = folder.Path;
            o.SpillCapacityBytes = 64L << 20;
        });
        await using var connector = harness.CreateConnector(connections: 1);
        using var allocator = new NativeSlabAllocator(8L << 20);
        for (var i = 0; i < 8; i++)
        {
            using var chunk = TestChunks.Create(allocator, i, metadata);
            await connector.PutAsync(TestChunks.Key(i), chunk, Ct);
        }
        Assert.True(await connector.PingAsync(Ct));
        await harness.Server.Store.Spill!.FlushAsync(Ct);
        Assert.True(harness.Server.Store.Spill.Contains(TestChunks.Key(0)));
        using (var chunk = TestChunks.Create(allocator, 100, metadata))
        {
            await connector.PutAsync(TestChunks.Key(0), chunk, Ct);
        }
        Assert.True(await connector.PingAsync(Ct));
        Assert.False(harness.Server.Store.Spill.Contains(TestChunks.Key(0)));
        using var read = await connector.GetAsync(TestChunks.Key(0), allocator, Ct);
        Assert.True(TestChunks.Matches(read!, 100));
    }
}

/// <summary>Never wrong bytes under capacity pressure: concurrent writers and readers while the server evicts.</summary>
[Trait("Category", "Integration")]
[IntegrationTest]
public sealed class PressureTests
{
    [Fact]
    public async Task Every_read_is_the_stored_bytes_or_a_miss_while_evicting()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var harness = await ServerHarness.StartAsync(o => o.CapacityBytes = 4L << 20);
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 256, 128), KvDType.BFloat16, MemoryFormat.KV2LTD);   // 256 KiB
        using var allocator = new NativeSlabAllocator(64L << 20);
        const int Keys = 96;
        long hits = 0, misses = 0, wrong = 0;

        async Task WriterAsync(int writer)
        {
            await using var connector = harness.CreateConnector(connections: 1);
            for (var i = writer; i < Keys; i += 2)
            {
                using (var chunk = TestChunks.Create(allocator, i, metadata))
                {
                    await connector.PutAsync(TestChunks.Key(i), chunk, ct);
                }
                await connector.PingAsync(ct);
            }
        }

        async Task ReaderAsync(int reader)
        {
            await using var connector = harness.CreateConnector(connections: 2);
            var random = new Random(reader);
            for (var n = 0; n < 150; n++)
            {
                var i = random.Next(Keys);
                using var read = await connector.GetAsync(TestChunks.Key(i), allocator, ct);
                if (read is null)
                {
                    Interlocked.Increment(ref misses);
                }
                else if (read.Metadata == metadata && TestChunks.Matches(read, i))
                {
                    Interlocked.Increment(ref hits);
                }
                else
                {
                    Interlocked.Increment(ref wrong);
                }
            }
        }

        await Task.WhenAll(WriterAsync(0), WriterAsync(1), ReaderAsync(1), ReaderAsync(2), ReaderAsync(3));
        var stats = harness.Server.GetStatistics();
        Assert.Equal(0, wrong);
        Assert.Equal(450, hits + misses);
        Assert.True(hits > 0);
        Assert.True(stats.Evictions > 0);
        Assert.True(stats.PoolUsedBytes <= stats.CapacityBytes);
        Assert.Equal(0, stats.ConnectionErrors);
        Assert.Equal(0, allocator.OutstandingObjects);
    }
}
