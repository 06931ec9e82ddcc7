using LMCache.Core.Configuration;
using LMCache.Engine;
using LMCache.Inference.Demo;
using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using LMCache.Inference.Onnx;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

[IntegrationTest]
public sealed class DemoModelTests
{
    private static readonly DemoModelSpec s_small = new() { Hidden = 64, Layers = 2, Heads = 4, KvHeads = 2, Intermediate = 128, MaxPositions = 2048, Seed = 7 };

    [Fact]
    public void Generation_is_deterministic_and_cached_by_digest()
    {
        using var root = new TempFolder();
        var first = DemoModel.EnsureCreated(s_small, root.Path);
        Assert.Equal(first, DemoModel.EnsureCreated(s_small, root.Path));
        using var other = new TempFolder();
        var second = DemoModel.EnsureCreated(s_small, other.Path);
        Assert.Equal(File.ReadAllBytes(Path.Combine(first, "onnx", "model.onnx_data")), File.ReadAllBytes(Path.Combine(second, "onnx", "model.onnx_data")));
        Assert.NotEqual(s_small.Digest, (s_small with { Seed = 8 }).Digest);
    }

    [Fact]
    public async Task Demo_model_loads_runs_and_gives_the_same_logits_warm_and_cold()
    {
        using var root = new TempFolder();
        using var model = LanguageModel.Load(DemoModel.EnsureCreated(s_small, root.Path), "demo", intraOpThreads: 2);
        Assert.Equal(new KvLayout(2, 2, 16, Core.Memory.KvDType.Float32), model.Decoder.Layout);
        var prompt = model.Tokenizer.Encode(string.Concat(Enumerable.Repeat("The quick brown fox jumps over the lazy dog. ", 14)));
        Assert.Equal(256, prompt[0]);   // the post-processor adds <|begin_of_text|>
        Assert.True(prompt.Length > 600);

        // One run over the whole prompt versus chunked prefill: same last logits.
        var whole = new float[model.Decoder.VocabSize];
        using (var sequence = new KvSequence(model.Decoder.Layout, model.Decoder.KvElementType))
        {
            model.Decoder.Forward(prompt, sequence, whole);
        }

        await using var cache = LMCacheEngine.Create(new LMCacheEngineOptions { ChunkSize = 256, MaxLocalCpuSizeGib = 0.1 }, InferenceEngine.CreateKeyScope(model), model.Decoder.Layout);
        await using var engine = new InferenceEngine(model, cache, new InferenceEngineOptions { PrefillStepTokens = 200 });
        float[]? cold = null, warm = null;
        var coldResult = await engine.GenerateToEndAsync(new GenerationRequest { PromptTokens = prompt, MaxTokens = 8, IgnoreEos = true, PromptLogitsObserver = l => cold = l }, TestContext.Current.CancellationToken);
        var warmResult = await engine.GenerateToEndAsync(new GenerationRequest { PromptTokens = prompt, MaxTokens = 8, IgnoreEos = true, PromptLogitsObserver = l => warm = l }, TestContext.Current.CancellationToken);
        ColdInferenceTests.AssertClose(whole, cold!, "chunked prefill");
        ColdInferenceTests.AssertClose(cold!, warm!, "warm");
        Assert.Equal(coldResult.TokenIds, warmResult.TokenIds);
        Assert.Equal(prompt.Length / 256 * 256, warmResult.Completed.Stats.CachedTokens);

        var chat = model.ChatTemplate!.Render([new Templates.ChatMessage("user", "hi")]);
        Assert.Equal("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", chat);
    }
}
