using LMCache.Connectors.Redis;
using LMCache.Core.Configuration;
using LMCache.Engine;
using LMCache.Hosting;
using LMCache.Inference.Generation;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Inference.Tests;

/// <summary>
/// tiny-llama built from its safetensors, warm from the CPU tier, the disk tier and a real redis-server: identical to
/// cold (the reference logits within 1e-4, the same greedy continuation) with every whole chunk from that tier.
/// </summary>
[IntegrationTest]
public sealed class BuiltWarmInferenceTests : IClassFixture<BuiltTinyLlamaModel>
{
    private const int ChunkSize = 256;
    private readonly BuiltTinyLlamaModel _fixture;

    public BuiltWarmInferenceTests(BuiltTinyLlamaModel fixture) => _fixture = fixture;

    private LMCacheEngine CreateCache(string? diskFolder = null, string? remoteUrl = null) =>
        new LMCacheEngineBuilder(new LMCacheEngineOptions
        {
            ChunkSize = ChunkSize,
            LocalCpu = true,
            MaxLocalCpuSizeGib = 0.25,
            LocalDisk = diskFolder,
            MaxLocalDiskSizeGib = diskFolder is null ? 0 : 0.5,
            RemoteUrl = remoteUrl,
            BlockingTimeoutSecs = 30,
        }, InferenceEngine.CreateKeyScope(_fixture.Model), _fixture.Model.Decoder.Layout)
            .AddRemoteConnector(new RedisConnectorFactory())
            .Build();

    private async Task<(GenerationResult Result, float[] Logits)> RunAsync(LMCacheEngine cache, int[] ids)
    {
        await using var engine = new InferenceEngine(_fixture.Model, cache);
        float[]? logits = null;
        var result = await engine.GenerateToEndAsync(new GenerationRequest { PromptTokens = ids, MaxTokens = 16, IgnoreEos = true, PromptLogitsObserver = l => logits = l },
            TestContext.Current.CancellationToken);
        await engine.WhenIdleAsync(TestContext.Current.CancellationToken);
        return (result, logits!);
    }

    private static int WholeChunks(ReferencePrompt prompt) => prompt.InputIds.Length / ChunkSize * ChunkSize;

    private static void AssertMatches(ReferencePrompt prompt, (GenerationResult Result, float[] Logits) run, string what)
    {
        Assert.Equal(prompt.Greedy16, run.Result.TokenIds);
        ColdInferenceTests.AssertClose(prompt.LastLogits, run.Logits, what);
    }

    [Fact]
    public async Task Warm_from_cpu_is_identical_to_cold()
    {
        Assert.True(_fixture.Model.IsBuiltGraph);
        var prompt = TinyLlama.Reference.Prompt("long");
        await using var cache = CreateCache();
        var cold = await RunAsync(cache, prompt.InputIds);
        Assert.Equal(0, cold.Result.Completed.Stats.CachedTokens);
        AssertMatches(prompt, cold, "cold (built)");
        var warm = await RunAsync(cache, prompt.InputIds);
        AssertMatches(prompt, warm, "warm from cpu (built)");
        Assert.Equal(WholeChunks(prompt), warm.Result.Completed.Stats.CachedTokens);
        Assert.Equal(WholeChunks(prompt) / ChunkSize, warm.Result.Completed.Stats.Tiers.Cpu);
    }

    [Fact]
    public async Task Warm_from_disk_in_a_fresh_cache_is_identical_to_cold()
    {
        using var folder = new TempFolder();
        var prompt = TinyLlama.Reference.Prompt("long");
        await using (var cache = CreateCache(folder.Path))
        {
            AssertMatches(prompt, await RunAsync(cache, prompt.InputIds), "cold (built)");
            await cache.FlushAsync(TestContext.Current.CancellationToken);
        }
        await using (var cache = CreateCache(folder.Path))
        {
            var warm = await RunAsync(cache, prompt.InputIds);
            AssertMatches(prompt, warm, "warm from disk (built)");
            Assert.Equal(WholeChunks(prompt), warm.Result.Completed.Stats.CachedTokens);
            Assert.Equal(WholeChunks(prompt) / ChunkSize, warm.Result.Completed.Stats.Tiers.Disk);
        }
    }

    [Fact]
    public async Task Warm_from_redis_in_a_fresh_cache_is_identical_to_cold()
    {
        if (RedisProcess.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
        await using var redis = await RedisProcess.StartServerAsync(cancellationToken: TestContext.Current.CancellationToken);
        var url = $"redis://127.0.0.1:{redis.Port}";
        var prompt = TinyLlama.Reference.Prompt("long");
        await using (var cache = CreateCache(remoteUrl: url))
        {
            AssertMatches(prompt, await RunAsync(cache, prompt.InputIds), "cold (built)");
            await cache.FlushAsync(TestContext.Current.CancellationToken);
        }
        await using (var cache = CreateCache(remoteUrl: url))
        {
            var warm = await RunAsync(cache, prompt.InputIds);
            AssertMatches(prompt, warm, "warm from redis (built)");
            Assert.Equal(WholeChunks(prompt), warm.Result.Completed.Stats.CachedTokens);
            Assert.Equal(WholeChunks(prompt) / ChunkSize, warm.Result.Completed.Stats.Tiers.Remote);
        }
    }
}
