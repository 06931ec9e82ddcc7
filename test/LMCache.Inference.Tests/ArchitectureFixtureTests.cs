using LMCache.Inference.Models;
using LMCache.Inference.Onnx;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>
/// One tiny random-weight folder per architecture and RoPE variant (test/fixtures/arch, made by
/// tools/make_arch_fixtures.py with transformers 5.17): the graph built from the safetensors gives transformers' last
/// logits within 1e-4, the same top-10, the same incremental greedy continuation and the same chat prompt ids.
/// </summary>
[IntegrationTest]
public sealed class ArchitectureFixtureTests
{
    public static TheoryData<string> Fixtures =>
        ["llama3-rope", "llama-linear", "llama-dynamic", "mistral-sw", "qwen2-bf16", "qwen3", "phi3-longrope"];

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Built_graph_matches_transformers(string name)
    {
        var folder = RepositoryFixtures.Folder("test", "fixtures", "arch", name);
        using var model = LanguageModel.Load(folder, new ModelLoadOptions { IntraOpThreads = 2 });
        Assert.True(model.IsBuiltGraph);
        var reference = Reference.Load(Path.Combine(folder, "reference.json"));
        foreach (var prompt in reference.Prompts)
        {
            var logits = BuiltGraphTests.LastLogits(model.Decoder, prompt.InputIds);
            ColdInferenceTests.AssertClose(prompt.LastLogits, logits, $"{name} {prompt.Name}");
            Assert.Equal(prompt.Top10, SafetensorsLoadingTests.TopIds(logits, 10));
            Assert.Equal(prompt.Greedy16, Greedy(model.Decoder, prompt.InputIds, 16));
        }
        var chat = reference.Chat;
        var ids = model.Tokenizer.Encode(model.ChatTemplate!.Render(chat.Messages.EnumerateArray(), addGenerationPrompt: true), addSpecialTokens: false);
        Assert.Equal(chat.InputIds, ids);
        Assert.Equal(chat.Top10, SafetensorsLoadingTests.TopIds(BuiltGraphTests.LastLogits(model.Decoder, ids), 10));
    }

    /// <summary>Greedy decoding straight on the decoder (one prefill pass, then one token per pass, as transformers' generate).</summary>
    private static int[] Greedy(OnnxDecoder decoder, int[] prompt, int count)
    {
        using var sequence = new KvSequence(decoder.Layout, decoder.KvElementType);
        var logits = new float[decoder.VocabSize];
        decoder.Forward(prompt, sequence, logits);
        var tokens = new int[count];
        for (var i = 0; i < count; i++)
        {
            tokens[i] = SafetensorsLoadingTests.TopIds(logits, 1)[0];
            if (i + 1 < count)
            {
                decoder.Forward([tokens[i]], sequence, logits);
            }
        }
        return tokens;
    }
}
