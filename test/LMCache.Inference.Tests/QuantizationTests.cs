using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>
/// Weight-only int8 / int4 (<c>MatMulNBits</c>, blocks of 32) against the fp32 built graph of the same weights: loose
/// bounds on the logit error and on greedy agreement, so a broken kernel or packing fails while the measured accuracy
/// (docs/serving.md) can move a little.
/// </summary>
[IntegrationTest]
public sealed class QuantizationTests
{
    private static string DemoCoder => RepositoryFixtures.Folder("test", "fixtures", "lmcache-demo-coder");

    [Theory]
    [InlineData(WeightQuantization.Int8, 0.5, 8, 3)]
    [InlineData(WeightQuantization.Int4, 4.0, 0, 2)]
    public async Task Quantized_demo_coder_stays_close_to_fp32(WeightQuantization quantization, double maxLogitError, int minGreedyAgreement, int minTop1)
    {
        using var fp32 = LanguageModel.Load(DemoCoder, new ModelLoadOptions { IntraOpThreads = 2, GraphSource = ModelGraphSource.Built });
        using var quantized = LanguageModel.Load(DemoCoder, new ModelLoadOptions { IntraOpThreads = 2, Quantization = quantization });
        Assert.True(quantized.IsBuiltGraph);
        var reference = Reference.Load(Path.Combine(DemoCoder, "reference.json"));
        await using var fp32Engine = new InferenceEngine(fp32, cache: null);
        await using var quantizedEngine = new InferenceEngine(quantized, cache: null);
        var worst = 0.0;
        var top1 = 0;
        var agreedTokens = 0;
        // The 4,504-token "long" prompt is left out to keep the test under a minute on two cores; the benchmark covers it.
        var prompts = reference.Prompts.Where(p => p.Name != "long").ToList();
        foreach (var prompt in prompts)
        {
            var (expectedTokens, expected) = await Greedy(fp32Engine, prompt.InputIds);
            var (actualTokens, actual) = await Greedy(quantizedEngine, prompt.InputIds);
            var error = expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max();
            worst = Math.Max(worst, error);
            top1 += SafetensorsLoadingTests.TopIds(expected, 1)[0] == SafetensorsLoadingTests.TopIds(actual, 1)[0] ? 1 : 0;
            var agree = expectedTokens.Zip(actualTokens).TakeWhile(p => p.First == p.Second).Count();
            agreedTokens += agree;
            TestContext.Current.TestOutputHelper?.WriteLine($"{quantization} {prompt.Name}: max |Δlogit| {error:F4}, greedy agreement {agree}/16");
            Assert.True(agree >= minGreedyAgreement, $"{quantization} {prompt.Name}: greedy continuation agrees with fp32 for {agree} tokens, fewer than {minGreedyAgreement}");
        }
        TestContext.Current.TestOutputHelper?.WriteLine($"{quantization}: worst max |Δlogit| {worst:F4}, top-1 {top1}/{prompts.Count}, greedy {agreedTokens}/{16 * prompts.Count}");
        Assert.True(worst <= maxLogitError, $"{quantization}: max |Δlogit| = {worst:F4} exceeds {maxLogitError}");
        Assert.True(worst > 0, $"{quantization}: logits identical to fp32, so the quantized kernel did not run");
        Assert.True(top1 >= minTop1, $"{quantization}: the first token agrees with fp32 on {top1} prompts, fewer than {minTop1}");
        Assert.True(agreedTokens >= 4 * prompts.Count, $"{quantization}: greedy prefixes agree for {agreedTokens} tokens in all, fewer than 4 per prompt");
    }

    /// <summary>The greedy 16 tokens and the prompt's last logits, from one run.</summary>
    private static async Task<(int[] Tokens, float[] Logits)> Greedy(InferenceEngine engine, int[] ids)
    {
        float[]? logits = null;
        var result = await engine.GenerateToEndAsync(new GenerationRequest { PromptTokens = ids, MaxTokens = 16, IgnoreEos = true, PromptLogitsObserver = l => logits = l },
            TestContext.Current.CancellationToken);
        return (result.TokenIds, logits!);
    }
}
