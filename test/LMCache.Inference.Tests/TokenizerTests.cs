using System.Text.Json.Nodes;
using LMCache.Inference.Tokenization;

namespace LMCache.Inference.Tests;

public sealed class TokenizerTests
{
    private static HfTokenizer Load() => HfTokenizer.Load(Path.Combine(TinyLlama.Folder, "tokenizer.json"));

    [Fact]
    public void Encodes_every_reference_prompt_to_the_reference_ids()
    {
        var tokenizer = Load();
        foreach (var prompt in TinyLlama.Reference.Prompts)
        {
            Assert.Equal(prompt.InputIds, tokenizer.Encode(prompt.Text));
        }
    }

    [Fact]
    public void Rendered_chat_with_special_tokens_encodes_to_the_reference_ids()
    {
        var tokenizer = Load();
        var chat = TinyLlama.Reference.Chat;
        Assert.Equal(chat.InputIds, tokenizer.Encode(chat.Rendered, addSpecialTokens: false));
    }

    [Fact]
    public void Decode_round_trips_text_and_skips_specials()
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
    public void Template_processing_post_processor_adds_bos_when_asked()
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

    [Fact]
    public void Try_encode_gives_encodes_ids_within_the_limit_and_refuses_one_token_beyond()
    {
        var tokenizer = Load();
        foreach (var prompt in TinyLlama.Reference.Prompts)
        {
            var count = prompt.InputIds.Length;
            Assert.True(tokenizer.TryEncode(prompt.Text, addSpecialTokens: true, count, out var ids));
            Assert.Equal(prompt.InputIds, ids);
            Assert.False(tokenizer.TryEncode(prompt.Text, addSpecialTokens: true, count - 1, out var none));
            Assert.Empty(none);
        }
        var chat = TinyLlama.Reference.Chat;
        Assert.True(tokenizer.TryEncode(chat.Rendered, addSpecialTokens: false, chat.InputIds.Length, out var chatIds));
        Assert.Equal(chat.InputIds, chatIds);
        Assert.False(tokenizer.TryEncode(chat.Rendered, addSpecialTokens: false, chat.InputIds.Length - 1, out _));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Try_encode_of_ten_mi_b_stops_at_the_limit_with_bounded_allocation(bool oneWord)
    {
        // One 10 MiB word is a single pre-token (refused from its length alone); 10 MiB of words stops after the limit.
        var tokenizer = Load();
        var random = new Random(7);
        var text = oneWord
            ? new string('a', 10 << 20)
            : string.Create(10 << 20, random, (span, r) =>
            {
                for (var i = 0; i < span.Length; i++)
                {
                    span[i] = r.Next(6) == 0 ? ' ' : (char)('a' + r.Next(26));
                }
            });
        _ = tokenizer.TryEncode("warm up the code paths", addSpecialTokens: true, 100, out _);
        var before = GC.GetAllocatedBytesForCurrentThread();
        Assert.False(tokenizer.TryEncode(text, addSpecialTokens: true, 8191, out _));
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        // Encode would split all of it (over a million pieces, hundreds of MB); TryEncode touches ~8k tokens' worth.
        Assert.True(allocated < 16L << 20, $"TryEncode allocated {allocated / 1e6:0.0} MB for a 10 MiB text");
    }

    [Fact]
    public void Max_text_bytes_is_the_context_times_the_longest_token_without_a_normalizer()
    {
        var tokenizer = Load();
        Assert.True(tokenizer.MaxTokenBytes > 1);
        Assert.Equal(8191L * tokenizer.MaxTokenBytes, tokenizer.MaxTextBytes(8191));
        // No text of more bytes can encode to that few tokens: a text of exactly the longest token, repeated, is at the bound.
        var longest = Enumerable.Range(0, tokenizer.VocabularySize).Max(id => tokenizer.TokenBytesOf(id).Length);
        Assert.Equal(longest, tokenizer.MaxTokenBytes);
    }
}
