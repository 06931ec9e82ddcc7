using LMCache.Core.Configuration;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Engine.Adapters;
using LMCache.Serde.CacheGen;
using LMCache.Server;
using LMCache.Testing.Redis;

namespace LMCache.Hosting.Tests;

/// <summary>
/// A library user who builds an engine whose configuration names a remote URL or a serde gets the built-in connector
/// and serde, without registering a factory: real Redis and lm:// servers over loopback.
/// </summary>
public sealed class LMCacheEngineBuilderTests
{
    private static readonly KvLayout s_layout = new(NumLayers: 2, NumKvHeads: 2, HeadDim: 32, DType: KvDType.BFloat16);
    private static readonly KeyScope s_scope = new("vllm", "test/hosting-model", DType: s_layout.DType.ToKeyToken());

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public void Every_built_in_connector_scheme_and_serde_is_registered()
    {
        var services = new LMCacheEngineBuilder(new LMCacheEngineOptions(), s_scope, s_layout).BuildServices();
        Assert.Equal(
            ["blackhole", "lm", "redis", "redis-cluster", "redis-sentinel", "rediss", "unix", "valkey", "valkeys"],
            services.Connectors!.Schemes.Order(StringComparer.Ordinal));
        Assert.Equal(["cachegen", "kivi", "naive"], services.Serdes!.Names.Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task A_redis_url_alone_stores_into_redis_and_a_fresh_engine_reads_the_same_bytes_back()
    {
        if (RedisProcess.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
        await using var redis = await RedisProcess.StartServerAsync(cancellationToken: Ct);
        var options = new LMCacheEngineOptions { ChunkSize = 16, MaxLocalCpuSizeGib = 0.0625, RemoteUrl = $"redis://127.0.0.1:{redis.Port}" };
        await StoreThenReadFromAFreshEngineAsync(options, exactBytes: true);
        // Each chunk is a payload key and a metadata key, as the original lays them out.
        Assert.Equal("8", (await redis.CliAsync("DBSIZE")).Trim());
    }

    [Fact]
    public async Task An_lm_url_and_the_cachegen_serde_by_name_alone_round_trip_through_an_lm_server()
    {
        await using var server = new LmServer(new LmServerOptions { Host = "127.0.0.1", Port = 0, CapacityBytes = 64L << 20 });
        var endpoint = await server.StartAsync(Ct);
        var options = new LMCacheEngineOptions
        {
            ChunkSize = 16,
            MaxLocalCpuSizeGib = 0.0625,
            RemoteUrl = $"lm://127.0.0.1:{endpoint.Port}",
            RemoteSerde = CacheGenSerde.SerdeName,
        };
        await StoreThenReadFromAFreshEngineAsync(options, exactBytes: false);   // cachegen is lossy: the test checks the hit
        Assert.Equal(4, server.GetStatistics().Keys);
    }

    /// <summary>Stores 64 tokens (4 chunks) through one engine, then looks up and retrieves them through a fresh engine (empty CPU tier).</summary>
    private static async Task StoreThenReadFromAFreshEngineAsync(LMCacheEngineOptions options, bool exactBytes)
    {
        var tokens = Enumerable.Range(0, 64).Select(i => (i * 7919) % 32000).ToArray();
        var prefill = new HostKvCache(s_layout, tokens.Length);
        prefill.FillDeterministic(0, tokens.Length, seed: 5);
        await using (var writer = new LMCacheEngineBuilder(options, s_scope, s_layout).Build())
        {
            Assert.Equal(4, writer.Store(tokens, prefill).StoredChunks);
            await writer.FlushAsync(Ct);
        }

        await using var reader = new LMCacheEngineBuilder(options, s_scope, s_layout).Build();
        Assert.Equal(64, await reader.LookupAsync(tokens, cancellationToken: Ct));
        var target = new HostKvCache(s_layout, tokens.Length);
        var result = await reader.RetrieveAsync(tokens, target, cancellationToken: Ct);
        Assert.Equal(64, result.LoadedTokens);
        Assert.Equal(4, result.Tiers.Remote);
        if (exactBytes)
        {
            Assert.True(target.SameTokens(prefill, 0, tokens.Length), "the remote returned different bytes");
        }
    }
}
