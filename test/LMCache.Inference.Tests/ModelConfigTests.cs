using System.Text.Json.Nodes;
using LMCache.Inference.Models;
using LMCache.Inference.Tokenization;

namespace LMCache.Inference.Tests;

public sealed class ModelConfigTests
{
    [Fact]
    public void Reads_the_transformers5_rope_parameters_layout()
    {
        var config = ModelConfig.Parse(File.ReadAllText(Path.Combine(TinyLlama.Folder, "config.json")));
        Assert.Equal(500000.0, config.RopeTheta);
        Assert.Equal("default", config.RopeType);
        Assert.Equal([4], config.EosTokenIds);
        Assert.Equal(2, config.NumKeyValueHeads);
        Assert.Equal(32, config.HeadDim);
    }

    [Fact]
    public void Reads_the_older_top_level_rope_theta_layout_and_eos_lists()
    {
        var node = JsonNode.Parse(File.ReadAllText(Path.Combine(TinyLlama.Folder, "config.json")))!.AsObject();
        node.Remove("rope_parameters");
        node["rope_theta"] = 10000.0;
        node["rope_scaling"] = new JsonObject { ["rope_type"] = "llama3", ["factor"] = 8.0 };
        node["eos_token_id"] = new JsonArray(4, 1);
        node.Remove("head_dim");
        var config = ModelConfig.Parse(node.ToJsonString(), generationEosIds: [1, 3]);
        Assert.Equal(10000.0, config.RopeTheta);
        Assert.Equal("llama3", config.RopeType);
        Assert.Equal([4, 1, 3], config.EosTokenIds);
        Assert.Equal(128 / 4, config.HeadDim);
    }

    [Fact]
    public void Missing_required_field_is_a_clear_error()
    {
        var error = Assert.Throws<InvalidDataException>(() => ModelConfig.Parse("""{"num_attention_heads": 4}"""));
        Assert.Contains("hidden_size", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Llama3_style_split_pre_tokenizer_with_ignore_merges_encodes_plain_text_like_the_reference()
    {
        // Llama 3 / Qwen2 files: Sequence[Split(regex, Isolated), ByteLevel(use_regex = false)], ignore_merges, NFC.
        var node = JsonNode.Parse(File.ReadAllText(Path.Combine(TinyLlama.Folder, "tokenizer.json")))!;
        node["normalizer"] = JsonNode.Parse("""{"type": "NFC"}""");
        node["pre_tokenizer"] = JsonNode.Parse("""
            {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
              {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}
            """);
        node["model"]!["ignore_merges"] = true;
        node["post_processor"] = JsonNode.Parse("""{"type": "Sequence", "processors": [{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}, {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [0], "tokens": ["<|begin_of_text|>"]}}}]}""");
        var tokenizer = HfTokenizer.Parse(node.ToJsonString());
        var prompt = TinyLlama.Reference.Prompt("short");
        Assert.Equal([0, .. prompt.InputIds], tokenizer.Encode(prompt.Text));
        Assert.Equal(prompt.Text, tokenizer.Decode(tokenizer.Encode(prompt.Text)));
    }

    [Fact]
    public void Unsupported_tokenizer_models_are_refused_clearly()
    {
        var error = Assert.Throws<NotSupportedException>(() => HfTokenizer.Parse("""{"model": {"type": "Unigram", "vocab": []}}"""));
        Assert.Contains("Unigram", error.Message, StringComparison.Ordinal);
    }
}
