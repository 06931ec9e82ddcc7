using System.Globalization;
using LMCache.Core.Memory;
using LMCache.Testing;
using StackExchange.Redis;

namespace LMCache.Connectors.Redis.Tests;

/// <summary>redis-cluster:// against three real cluster masters.</summary>
[IntegrationTest]
public sealed class ClusterTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    [Fact]
    public async Task Sixty_four_chunks_spread_over_every_node_round_trip_in_one_batch()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        var cluster = fixture.Cluster;
        await using var connector = await TestSupport.ConnectedAsync(cluster.Url);
        using var allocator = TestSupport.Allocator(128L << 20);
        var keys = Enumerable.Range(0, 64).Select(i => TestChunks.Key(i, "cluster")).ToArray();
        for (var i = 0; i < keys.Length; i++)
        {
            using var chunk = TestChunks.Create(allocator, 500 + i);
            await connector.PutAsync(keys[i], chunk, ct);
        }
        foreach (var node in cluster.Nodes)
        {
            var size = long.Parse((await node.CliAsync("DBSIZE")).Trim(), CultureInfo.InvariantCulture);
            Assert.True(size > 0, $"node {node.Port} holds no keys");
        }

        Assert.Equal(64, await connector.ExistsPrefixAsync(keys, ct));
        // One pipelined burst per master per lookup: 64 round trips would be 64 read events, 3 masters (each holds some
        // of the keys, checked above) in parallel are 3, up to 6 where a socket splits a burst.
        await using (var probe = await connector.OpenInfoProbeAsync(ct))
        {
            var perLookup = await probe.ReadEventsPerOperationAsync(async () =>
            {
                const int Lookups = 10;
                for (var i = 0; i < Lookups; i++)
                {
                    Assert.Equal(64, await connector.ExistsPrefixAsync(keys, ct));
                }
                return Lookups;
            }, ct);
            Assert.NotNull(perLookup);
            Assert.InRange(perLookup.Value, 3, 6);
        }
        var output = new MemoryObject?[64];
        Assert.Equal(64, await connector.GetPrefixAsync(keys, output, allocator, ct));
        for (var i = 0; i < 64; i++)
        {
            Assert.True(TestChunks.Matches(output[i]!, 500 + i));
            output[i]!.Release();
        }
        var listed = await connector.ListAsync("cluster", ct).ToListAsync(ct);
        Assert.Equal(64, listed.Count);
        Assert.Equal(64, listed.Select(e => e.Key).Distinct().Count());
        Assert.True(await connector.RemoveAsync(keys[10], ct));
        Assert.Equal(10, await connector.ExistsPrefixAsync(keys, ct));
        Assert.Equal(10, await connector.GetPrefixAsync(keys, output, allocator, ct));
        foreach (var item in output.Take(10))
        {
            item!.Release();
        }
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public async Task Half_pairs_across_slots_and_original_entries_on_a_cluster()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        var cluster = fixture.Cluster;
        await using var connector = await TestSupport.ConnectedAsync(cluster.Url);
        using var allocator = TestSupport.Allocator();
        var config = new ConfigurationOptions { AbortOnConnectFail = false };
        foreach (var node in cluster.Nodes)
        {
            config.EndPoints.Add("127.0.0.1", node.Port);
        }
        await using var raw = await ConnectionMultiplexer.ConnectAsync(config);
        var db = raw.GetDatabase();

        var evicted = TestChunks.Key(1, "cluster-half");
        using (var chunk = TestChunks.Create(allocator, 1))
        {
            await connector.PutAsync(evicted, chunk, ct);
        }
        await db.KeyDeleteAsync(RedisConnector.PayloadKey(evicted.ToString()));
        Assert.Null(await connector.GetAsync(evicted, allocator, ct));
        await TestSupport.EventuallyAsync(async () => !await db.KeyExistsAsync(RedisConnector.MetadataKey(evicted.ToString())), "metadata removed");

        var original = TestChunks.Key(2, "cluster-original");
        var bytes = new byte[TestChunks.SmallChunk().ByteLength];
        new Random(5).NextBytes(bytes);
        await StandaloneTests.WriteOriginalAsync(db, original.ToString(), bytes, 1, 3, TestChunks.SmallChunk().Shape);
        using var read = await connector.GetAsync(original, allocator, ct);
        Assert.NotNull(read);
        Assert.Equal(bytes, read.Span.ToArray());
    }
}
