using LMCache.Connectors.Lm;
using LMCache.Connectors.Redis;
using LMCache.Server;
using LMCache.Storage.Remote;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Inference.Tests;

/// <summary>
/// Warm inference from the real remote tiers: a real <c>redis-server</c> process and the in-process <c>lm://</c>
/// server. Engine A serves the reference prompt cold and flushes its stores to the remote; a fresh engine B (its own
/// empty CPU tier, no disk) over the same remote must give the reference logits within 1e-4, the identical greedy
/// continuation, <c>cached_tokens</c> equal to the whole-chunk prefix, and every one of those chunks from the remote.
/// </summary>
[IntegrationTest]
public sealed class RealRemoteTierTests : IClassFixture<TinyLlamaModel>
{
    private const int ChunkSize = 256;

    // Generous for a loaded 2-core machine: a remote read that times out would be a miss and fail the test.
    private const int BlockingTimeoutSecs = 30;

    private readonly TinyLlamaModel _fixture;

    public RealRemoteTierTests(TinyLlamaModel fixture) => _fixture = fixture;

    [Fact]
    public async Task Warm_from_redis_matches_the_reference()
    {
        var prompt = TinyLlama.Reference.Prompt("long");
        if (RedisProcess.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
        await using var redis = await RedisProcess.StartServerAsync(cancellationToken: TestContext.Current.CancellationToken);
        var url = $"redis://127.0.0.1:{redis.Port}";

        await StoreColdAsync(prompt, url, new RedisConnectorFactory());
        var keys = long.Parse((await redis.CliAsync("DBSIZE")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(keys >= WholeChunks(prompt) / ChunkSize, $"redis holds {keys} keys after the flush, fewer than the prompt's {WholeChunks(prompt) / ChunkSize} whole chunks");

        await AssertWarmFromRemoteAsync(prompt, url, new RedisConnectorFactory(), "warm (redis)");
    }

    [Fact]
    public async Task Warm_from_lm_server_matches_the_reference()
    {
        var prompt = TinyLlama.Reference.Prompt("long");
        await using var server = new LmServer(new LmServerOptions { Host = "127.0.0.1", Port = 0, CapacityBytes = 64L << 20 });
        var endpoint = await server.StartAsync(TestContext.Current.CancellationToken);
        var url = $"lm://127.0.0.1:{endpoint.Port}";
        var chunks = WholeChunks(prompt) / ChunkSize;

        await StoreColdAsync(prompt, url, new LmConnectorFactory());
        Assert.Equal(chunks, server.GetStatistics().Keys);

        var hitsBefore = server.GetStatistics().Hits;
        await AssertWarmFromRemoteAsync(prompt, url, new LmConnectorFactory(), "warm (lm://)");
        Assert.True(server.GetStatistics().Hits - hitsBefore >= chunks, $"the lm:// server served {server.GetStatistics().Hits - hitsBefore} hits, fewer than {chunks} chunks");
    }

    private static int WholeChunks(ReferencePrompt prompt) => prompt.InputIds.Length / ChunkSize * ChunkSize;

    /// <summary>Engine A: a cold request whose chunks are stored and flushed to the remote.</summary>
    private async Task StoreColdAsync(ReferencePrompt prompt, string url, IRemoteConnectorFactory factory)
    {
        await using var cache = RemoteTierTests.CreateCache(_fixture, url, factory, BlockingTimeoutSecs);
        var (cold, logits) = await RemoteTierTests.RunAsync(_fixture, cache, prompt.InputIds);
        Assert.Equal(0, cold.Completed.Stats.CachedTokens);
        Assert.Equal(prompt.Greedy16, cold.TokenIds);
        ColdInferenceTests.AssertClose(prompt.LastLogits, logits, "cold");
        await cache.FlushAsync(TestContext.Current.CancellationToken);
    }

    /// <summary>Engine B: a fresh cache engine (empty CPU tier, no disk) over the same remote serves the prompt warm.</summary>
    private async Task AssertWarmFromRemoteAsync(ReferencePrompt prompt, string url, IRemoteConnectorFactory factory, string what)
    {
        await using var cache = RemoteTierTests.CreateCache(_fixture, url, factory, BlockingTimeoutSecs);
        var (warm, logits) = await RemoteTierTests.RunAsync(_fixture, cache, prompt.InputIds);
        Assert.Equal(prompt.Greedy16, warm.TokenIds);
        ColdInferenceTests.AssertClose(prompt.LastLogits, logits, what);
        Assert.Equal(WholeChunks(prompt), warm.Completed.Stats.CachedTokens);
        Assert.Equal(WholeChunks(prompt) / ChunkSize, warm.Completed.Stats.Tiers.Remote);
        Assert.Equal(0, warm.Completed.Stats.Tiers.Cpu);
        Assert.Equal(0, warm.Completed.Stats.Tiers.Disk);
    }
}
