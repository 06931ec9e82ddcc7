using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using LMCache.Inference.Onnx;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>The engine without a cache reproduces transformers' logits and greedy continuations.</summary>
[IntegrationTest]
public sealed class ColdInferenceTests : IClassFixture<TinyLlamaModel>
{
    private readonly TinyLlamaModel _fixture;

    public ColdInferenceTests(TinyLlamaModel fixture) => _fixture = fixture;

    [Fact]
    public void Config_and_layout_are_read_from_the_folder()
    {
        var model = _fixture.Model;
        Assert.Equal(4, model.Config.NumLayers);
        Assert.Equal(500000.0, model.Config.RopeTheta);
        Assert.Equal(new Engine.KvLayout(4, 2, 32, Core.Memory.KvDType.Float32), model.Decoder.Layout);
        Assert.Contains(4, model.EosTokenIds);
        Assert.Equal(2048, model.Decoder.VocabSize);
    }

    [Fact]
    public void Last_logits_match_the_reference_for_every_prompt()
    {
        var decoder = _fixture.Model.Decoder;
        foreach (var prompt in TinyLlama.Reference.Prompts)
        {
            using var sequence = new KvSequence(decoder.Layout, decoder.KvElementType);
            var logits = new float[decoder.VocabSize];
            decoder.Forward(prompt.InputIds, sequence, logits);
            AssertClose(prompt.LastLogits, logits, prompt.Name);
            Assert.Equal(prompt.InputIds.Length, sequence.Length);
        }
    }

    [Fact]
    public async Task Greedy_continuation_matches_the_reference_for_every_prompt()
    {
        await using var engine = new InferenceEngine(_fixture.Model, cache: null, new InferenceEngineOptions { PrefillStepTokens = 300 });
        foreach (var prompt in TinyLlama.Reference.Prompts)
        {
            float[]? logits = null;
            var result = await engine.GenerateToEndAsync(new GenerationRequest
            {
                PromptTokens = prompt.InputIds,
                MaxTokens = 16,
                IgnoreEos = true,
                PromptLogitsObserver = l => logits = l,
            }, TestContext.Current.CancellationToken);
            Assert.Equal(prompt.Greedy16, result.TokenIds);
            AssertClose(prompt.LastLogits, logits!, prompt.Name + " (chunked prefill)");
            Assert.Equal("length", result.Completed.FinishReason);
            Assert.Equal(0, result.Completed.Stats.CachedTokens);
        }
    }

    [Fact]
    public async Task Seeded_sampling_is_reproducible_and_top_p_of_almost_zero_is_greedy()
    {
        await using var engine = new InferenceEngine(_fixture.Model, cache: null);
        var prompt = TinyLlama.Reference.Prompt("short");
        async Task<int[]> RunAsync(SamplingParameters sampling) => (await engine.GenerateToEndAsync(
            new GenerationRequest { PromptTokens = prompt.InputIds, MaxTokens = 12, IgnoreEos = true, Sampling = sampling },
            TestContext.Current.CancellationToken)).TokenIds;

        var a = await RunAsync(new SamplingParameters(1.0, 0.9, 42));
        var b = await RunAsync(new SamplingParameters(1.0, 0.9, 42));
        var c = await RunAsync(new SamplingParameters(1.0, 0.9, 43));
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.Equal(prompt.Greedy16[..12], await RunAsync(new SamplingParameters(1.0, 1e-9, 7)));
    }

    [Fact]
    public async Task Stop_sequence_ends_generation_and_is_not_returned()
    {
        await using var engine = new InferenceEngine(_fixture.Model, cache: null);
        var prompt = TinyLlama.Reference.Prompt("short");
        var full = await engine.GenerateToEndAsync(new GenerationRequest { PromptTokens = prompt.InputIds, MaxTokens = 16, IgnoreEos = true }, TestContext.Current.CancellationToken);
        // A stop string taken from the middle of the greedy text.
        var stopAt = full.Text.Length / 2;
        var stopString = full.Text.Substring(stopAt, 3);
        var expected = full.Text[..full.Text.IndexOf(stopString, StringComparison.Ordinal)];
        var stopped = await engine.GenerateToEndAsync(new GenerationRequest { PromptTokens = prompt.InputIds, MaxTokens = 16, IgnoreEos = true, Stop = [stopString] }, TestContext.Current.CancellationToken);
        Assert.Equal(expected, stopped.Text);
        Assert.Equal("stop", stopped.Completed.FinishReason);
        Assert.Equal(expected, string.Concat(stopped.Tokens.Select(t => t.TextDelta)) + stopped.Completed.TrailingText);
    }

    [Fact]
    public void Prompt_longer_than_the_context_is_rejected()
    {
        var engine = new InferenceEngine(_fixture.Model, cache: null);
        var tooLong = new int[_fixture.Model.ContextLength];
        Assert.Throws<InvalidGenerationRequestException>(() => engine.Validate(new GenerationRequest { PromptTokens = tooLong }));
        Assert.Throws<InvalidGenerationRequestException>(() => engine.Validate(new GenerationRequest { PromptTokens = [5000] }));
        Assert.Throws<InvalidGenerationRequestException>(() => engine.Validate(new GenerationRequest { PromptTokens = [] }));
    }

    internal static void AssertClose(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        var worst = 0.0;
        for (var i = 0; i < expected.Length; i++)
        {
            worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        }
        Assert.True(worst <= 1e-4, $"{what}: max |Δlogit| = {worst:E3} exceeds 1e-4");
    }
}

/// <summary>The tiny-llama model, loaded once per test class.</summary>
public sealed class TinyLlamaModel : IDisposable
{
    private readonly Lazy<LanguageModel> _model = new(() => LanguageModel.Load(TinyLlama.Folder, intraOpThreads: 2));

    public LanguageModel Model => _model.Value;

    public void Dispose()
    {
        if (_model.IsValueCreated)
        {
            _model.Value.Dispose();
        }
    }
}
