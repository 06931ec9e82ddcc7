using LMCache.Inference.Generation;
using LMCache.Inference.Onnx;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>The decoder graph built in C# from tiny-llama's safetensors reproduces transformers and the optimum export.</summary>
[IntegrationTest]
public sealed class BuiltGraphTests : IClassFixture<BuiltTinyLlamaModel>, IClassFixture<TinyLlamaModel>
{
    private readonly BuiltTinyLlamaModel _built;
    private readonly TinyLlamaModel _export;

    public BuiltGraphTests(BuiltTinyLlamaModel built, TinyLlamaModel export)
    {
        _built = built;
        _export = export;
    }

    [Fact]
    public void The_folder_without_an_export_is_loaded_through_the_built_graph()
    {
        var model = _built.Model;
        Assert.True(model.IsBuiltGraph);
        Assert.Null(model.OnnxPath);
        Assert.Equal(new Engine.KvLayout(4, 2, 32, Core.Memory.KvDType.Float32), model.Decoder.Layout);
        Assert.Equal(2048, model.Decoder.VocabSize);
        Assert.NotEqual(_export.Model.Fingerprint, model.Fingerprint);
    }

    [Fact]
    public void Last_logits_match_the_reference_and_the_export_for_every_prompt()
    {
        foreach (var prompt in TinyLlama.Reference.Prompts)
        {
            var built = LastLogits(_built.Model.Decoder, prompt.InputIds);
            var exported = LastLogits(_export.Model.Decoder, prompt.InputIds);
            ColdInferenceTests.AssertClose(prompt.LastLogits, built, prompt.Name + " (built vs transformers)");
            ColdInferenceTests.AssertClose(exported, built, prompt.Name + " (built vs optimum export)");
        }
    }

    [Fact]
    public async Task Greedy_continuations_and_chat_match_the_reference()
    {
        var model = _built.Model;
        await using var engine = new InferenceEngine(model, cache: null, new InferenceEngineOptions { PrefillStepTokens = 300 });
        foreach (var prompt in TinyLlama.Reference.Prompts)
        {
            var result = await engine.GenerateToEndAsync(new GenerationRequest { PromptTokens = prompt.InputIds, MaxTokens = 16, IgnoreEos = true },
                TestContext.Current.CancellationToken);
            Assert.Equal(prompt.Greedy16, result.TokenIds);
        }
        var chat = TinyLlama.Reference.Chat;
        var rendered = model.ChatTemplate!.Render(chat.Messages.EnumerateArray(), addGenerationPrompt: true);
        var ids = model.Tokenizer.Encode(rendered, addSpecialTokens: false);
        Assert.Equal(chat.InputIds, ids);
        var logits = LastLogits(model.Decoder, ids);
        Assert.Equal(chat.Top10, logits.Select((value, id) => (value, id)).OrderByDescending(p => p.value).Take(10).Select(p => p.id).ToArray());
    }

    internal static float[] LastLogits(OnnxDecoder decoder, int[] ids)
    {
        using var sequence = new KvSequence(decoder.Layout, decoder.KvElementType);
        var logits = new float[decoder.VocabSize];
        decoder.Forward(ids, sequence, logits);
        return logits;
    }
}
