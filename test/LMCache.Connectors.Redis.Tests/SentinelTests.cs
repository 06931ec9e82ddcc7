using System.Net;
using LMCache.Core.Memory;
using LMCache.Testing;

namespace LMCache.Connectors.Redis.Tests;

/// <summary>redis-sentinel:// against the seed's topology (master, replica, three sentinels, quorum 2).</summary>
[IntegrationTest]
public sealed class SentinelTests(SentinelFixture fixture) : IClassFixture<SentinelFixture>
{
    [Fact]
    public async Task Round_trip_through_the_master_found_by_the_sentinels_with_a_password()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        var topology = fixture.Topology;
        await using var connector = await TestSupport.ConnectedAsync(topology.Url());
        using var allocator = TestSupport.Allocator();
        var master = await topology.GetCurrentMasterAsync();
        Assert.Equal(master.Port, PortOf(connector.CurrentMaster));

        var keys = Enumerable.Range(0, 16).Select(i => TestChunks.Key(i, "sentinel")).ToArray();
        for (var i = 0; i < keys.Length; i++)
        {
            using var chunk = TestChunks.Create(allocator, 300 + i);
            await connector.PutAsync(keys[i], chunk, ct);
        }
        Assert.Equal(16, await connector.ExistsPrefixAsync(keys, ct));
        var output = new MemoryObject?[16];
        Assert.Equal(16, await connector.GetPrefixAsync(keys, output, allocator, ct));
        for (var i = 0; i < 16; i++)
        {
            Assert.True(TestChunks.Matches(output[i]!, 300 + i));
            output[i]!.Release();
        }
        Assert.Equal(16, (await connector.ListAsync("sentinel", ct).ToListAsync(ct)).Count);
    }

    [Fact]
    public async Task Service_name_defaults_to_mymaster_as_in_the_seed()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        var url = fixture.Topology.Url(withServiceName: false);
        Assert.Equal("mymaster", RedisUrl.Parse(url, environmentServiceName: "").ServiceName);
        await using var connector = await TestSupport.ConnectedAsync(url);
        Assert.True(await connector.PingAsync(ct));
    }

    [Fact]
    public async Task An_unknown_service_name_misses_and_says_why()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        var url = string.Concat(fixture.Topology.Url(withServiceName: false), "?service_name=nosuch");
        await using var connector = TestSupport.Connect(url);
        var error = await Assert.ThrowsAnyAsync<Exception>(async () => await connector.ExistsPrefixAsync(new[] { TestChunks.Key(1) }, ct));
        Assert.Contains("nosuch", error.Message, StringComparison.Ordinal);
    }

    internal static int? PortOf(EndPoint? endPoint) => endPoint switch
    {
        IPEndPoint ip => ip.Port,
        DnsEndPoint dns => dns.Port,
        _ => null,
    };
}
