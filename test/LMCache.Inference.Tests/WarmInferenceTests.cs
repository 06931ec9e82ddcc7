using LMCache.Core.Configuration;
using LMCache.Engine;
using LMCache.Inference.Generation;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>The KV connector: warm requests load chunks from a tier and give the cold results.</summary>
[IntegrationTest]
public sealed class WarmInferenceTests : IClassFixture<TinyLlamaModel>
{
    private const int ChunkSize = 256;
    private readonly TinyLlamaModel _fixture;

    public WarmInferenceTests(TinyLlamaModel fixture) => _fixture = fixture;

    private LMCacheEngine CreateCache(string? diskFolder = null, bool saveDecodeCache = false, bool cpu = true) =>
        LMCacheEngine.Create(new LMCacheEngineOptions
        {
            ChunkSize = ChunkSize,
            LocalCpu = cpu,
            MaxLocalCpuSizeGib = 0.25,
            LocalDisk = diskFolder,
            MaxLocalDiskSizeGib = diskFolder is null ? 0 : 0.5,
            SaveDecodeCache = saveDecodeCache,
        }, InferenceEngine.CreateKeyScope(_fixture.Model), _fixture.Model.Decoder.Layout);

    private static int WholeChunks(int tokens) => tokens / ChunkSize * ChunkSize;

    private static async Task<(GenerationResult Result, float[] Logits)> RunAsync(InferenceEngine engine, int[] ids, string? salt = null)
    {
        float[]? logits = null;
        var result = await engine.GenerateToEndAsync(new GenerationRequest
        {
            PromptTokens = ids,
            MaxTokens = 16,
            IgnoreEos = true,
            CacheSalt = salt,
            PromptLogitsObserver = l => logits = l,
        }, TestContext.Current.CancellationToken);
        return (result, logits!);
    }

    [Fact]
    public async Task Warm_from_cpu_matches_the_reference_and_reports_the_whole_chunk_prefix()
    {
        await using var cache = CreateCache();
        await using var engine = new InferenceEngine(_fixture.Model, cache);
        foreach (var prompt in TinyLlama.Reference.Prompts)
        {
            await RunAsync(engine, prompt.InputIds, salt: "cpu-" + prompt.Name);
            var (warm, logits) = await RunAsync(engine, prompt.InputIds, salt: "cpu-" + prompt.Name);
            Assert.Equal(prompt.Greedy16, warm.TokenIds);
            ColdInferenceTests.AssertClose(prompt.LastLogits, logits, prompt.Name + " warm (cpu)");
            Assert.Equal(WholeChunks(prompt.InputIds.Length), warm.Completed.Stats.CachedTokens);
            Assert.Equal(WholeChunks(prompt.InputIds.Length) / ChunkSize, warm.Completed.Stats.Tiers.Cpu);
        }
    }

    [Fact]
    public async Task Warm_from_disk_in_a_fresh_engine_matches_the_reference()
    {
        using var folder = new TempFolder();
        var prompt = TinyLlama.Reference.Prompt("long");
        await using (var cache = CreateCache(folder.Path))
        {
            await using var engine = new InferenceEngine(_fixture.Model, cache);
            var (cold, _) = await RunAsync(engine, prompt.InputIds);
            Assert.Equal(0, cold.Completed.Stats.CachedTokens);
            await engine.WhenIdleAsync(TestContext.Current.CancellationToken);
            await cache.FlushAsync(TestContext.Current.CancellationToken);
        }
        await using (var cache = CreateCache(folder.Path))
        {
            await using var engine = new InferenceEngine(_fixture.Model, cache);
            var (warm, logits) = await RunAsync(engine, prompt.InputIds);
            Assert.Equal(prompt.Greedy16, warm.TokenIds);
            ColdInferenceTests.AssertClose(prompt.LastLogits, logits, "long warm (disk)");
            Assert.Equal(WholeChunks(prompt.InputIds.Length), warm.Completed.Stats.CachedTokens);
            Assert.Equal(WholeChunks(prompt.InputIds.Length) / ChunkSize, warm.Completed.Stats.Tiers.Disk);
        }
    }

    [Fact]
    public async Task Prompts_sharing_a_prefix_share_its_chunks_and_salts_isolate()
    {
        await using var cache = CreateCache();
        await using var engine = new InferenceEngine(_fixture.Model, cache);
        var a = TinyLlama.Reference.Prompt("shared_prefix_a");
        var b = TinyLlama.Reference.Prompt("shared_prefix_b");
        var common = a.InputIds.Zip(b.InputIds).TakeWhile(p => p.First == p.Second).Count();
        Assert.True(common >= ChunkSize, "the fixture's shared prefix spans at least one chunk");

        await RunAsync(engine, a.InputIds);
        var (warmB, logitsB) = await RunAsync(engine, b.InputIds);
        Assert.Equal(WholeChunks(common), warmB.Completed.Stats.CachedTokens);
        Assert.Equal(b.Greedy16, warmB.TokenIds);
        ColdInferenceTests.AssertClose(b.LastLogits, logitsB, "shared_prefix_b");

        var (salted, saltedLogits) = await RunAsync(engine, a.InputIds, salt: "tenant-2");
        Assert.Equal(0, salted.Completed.Stats.CachedTokens);
        Assert.Equal(a.Greedy16, salted.TokenIds);
        ColdInferenceTests.AssertClose(a.LastLogits, saltedLogits, "salted");
        var (saltedAgain, _) = await RunAsync(engine, a.InputIds, salt: "tenant-2");
        Assert.Equal(WholeChunks(a.InputIds.Length), saltedAgain.Completed.Stats.CachedTokens);
    }

    [Fact]
    public async Task Stores_racing_retrieves_of_the_same_prompt_never_change_the_output()
    {
        // Two engines (two decode loops) share one cache: their stores and retrieves of the same chunks interleave.
        await using var cache = CreateCache();
        await using var first = new InferenceEngine(_fixture.Model, cache);
        await using var second = new InferenceEngine(_fixture.Model, cache);
        var prompt = TinyLlama.Reference.Prompt("long");
        var runs = Enumerable.Range(0, 6).Select(i => RunAsync(i % 2 == 0 ? first : second, prompt.InputIds)).ToArray();
        foreach (var (result, logits) in await Task.WhenAll(runs))
        {
            Assert.Equal(prompt.Greedy16, result.TokenIds);
            ColdInferenceTests.AssertClose(prompt.LastLogits, logits, "racing");
        }
    }

    [Fact]
    public async Task Full_hit_still_computes_the_last_token_and_save_decode_cache_stores_decoded_chunks()
    {
        await using var cache = CreateCache(saveDecodeCache: true);
        await using var engine = new InferenceEngine(_fixture.Model, cache);
        var long1 = TinyLlama.Reference.Prompt("long");
        // A prompt of exactly two chunks: the second run hits every token but must recompute the last one.
        var twoChunks = long1.InputIds[..(2 * ChunkSize)];
        var (cold, coldLogits) = await RunAsync(engine, twoChunks);
        var (warm, warmLogits) = await RunAsync(engine, twoChunks);
        Assert.Equal(cold.TokenIds, warm.TokenIds);
        Assert.Equal(2 * ChunkSize - 1, warm.Completed.Stats.CachedTokens);
        ColdInferenceTests.AssertClose(coldLogits, warmLogits, "full hit");

        // 250 prompt tokens + 16 generated cross the first chunk boundary: with save_decode_cache the chunk is stored.
        var prompt = long1.InputIds[..250];
        var (first, _) = await RunAsync(engine, prompt, salt: "decode");
        Assert.Equal(0, first.Completed.Stats.CachedTokens);
        var continued = prompt.Concat(first.TokenIds).ToArray();
        await engine.WhenIdleAsync(TestContext.Current.CancellationToken);
        var hit = await cache.LookupAsync(continued, "decode", TestContext.Current.CancellationToken);
        Assert.Equal(ChunkSize, hit);
    }
}
