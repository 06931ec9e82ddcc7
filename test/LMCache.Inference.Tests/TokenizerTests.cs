using System.Text.Json.Nodes;
using LMCache.Inference.Tokenization;

namespace LMCache.Inference.Tests;

public sealed class TokenizerTests
{
    private static HfTokenizer Load() => HfTokenizer.Load(Path.Combine(TinyLlama.Folder, "tokenizer.json"));

    [Fact]
    public void EncodesEveryReferencePromptToTheReferenceIds()
    {
        var tokenizer = Load();
        foreach (var prompt in TinyLlama.Reference.Prompts)
        {
            Assert.Equal(prompt.InputIds, tokenizer.Encode(prompt.Text));
        }
    }

    [Fact]
    public void RenderedChatWithSpecialTokensEncodesToTheReferenceIds()
    {
        var tokenizer = Load();
        var chat = TinyLlama.Reference.Chat;
        Assert.Equal(chat.InputIds, tokenizer.Encode(chat.Rendered, addSpecialTokens: false));
    }

    [Fact]
    public void DecodeRoundTripsTextAndSkipsSpecials()
    {
        var tokenizer = Load();
        foreach (var prompt in TinyLlama.Reference.Prompts)
        {
            Assert.Equal(prompt.Text, tokenizer.Decode(tokenizer.Encode(prompt.Text)));
        }
        var ids = tokenizer.Encode("<|begin_of_text|>hi<|eot_id|>", addSpecialTokens: false);
        Assert.Equal(0, ids[0]);
        Assert.Equal(4, ids[^1]);
        Assert.Equal("hi", tokenizer.Decode(ids));
        Assert.Equal("<|begin_of_text|>hi<|eot_id|>", tokenizer.Decode(ids, skipSpecialTokens: false));
    }

    [Fact]
    public void TemplateProcessingPostProcessorAddsBosWhenAsked()
    {
        var json = File.ReadAllText(Path.Combine(TinyLlama.Folder, "tokenizer.json"));
        var node = JsonNode.Parse(json)!;
        var single = node["post_processor"]!["single"]!.AsArray();
        single.Insert(0, JsonNode.Parse("""{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}"""));
        single.Add(JsonNode.Parse("""{"SpecialToken": {"id": "<|eot_id|>", "type_id": 0}}"""));
        var tokenizer = HfTokenizer.Parse(node.ToJsonString());
        var plain = tokenizer.Encode("hello", addSpecialTokens: false);
        var added = tokenizer.Encode("hello");
        Assert.Equal([0, .. plain, 4], added);
    }
}
