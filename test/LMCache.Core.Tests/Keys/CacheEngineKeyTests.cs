using LMCache.Core.Keys;

namespace LMCache.Core.Tests.Keys;

public sealed class CacheEngineKeyTests
{
    private const string Sha = "02783dafec1b4e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef";

    [Fact]
    public void The_five_field_form_formats_and_parses_back()
    {
        var key = new CacheEngineKey("vllm", "meta-llama/Llama-3.1-8B-Instruct", 1, 0, Sha);
        var text = key.ToString();
        Assert.Equal("vllm@meta-llama/Llama-3.1-8B-Instruct@1@0@" + Sha, text);
        Assert.True(CacheEngineKey.TryParse(text, out var parsed, out var error), error);
        Assert.Equal(key, parsed);
        Assert.Null(parsed.DType);
        Assert.Null(parsed.Tags);
        Assert.Empty(parsed.EnumerateTags());
        Assert.Equal(text, parsed.ToString());
    }

    [Fact]
    public void The_six_field_form_with_a_dtype_round_trips()
    {
        const string text = "vllm@meta-llama/Llama-3.1-8B-Instruct@1@0@2783dafec1b4e9f0@bfloat16";
        var key = CacheEngineKey.Parse(text);
        Assert.Equal("vllm", key.Format);
        Assert.Equal("meta-llama/Llama-3.1-8B-Instruct", key.ModelName);
        Assert.Equal(1, key.WorldSize);
        Assert.Equal(0, key.WorkerId);
        Assert.Equal("2783dafec1b4e9f0", key.ChunkHash);
        Assert.Equal("bfloat16", key.DType);
        Assert.Null(key.Tags);
        Assert.Equal(text, key.ToString());
    }

    [Theory]
    [InlineData("vllm@m@4@3@-1a2b@half", "-1a2b", "half")]
    [InlineData("vllm@m@1@0@0@float", "0", "float")]
    [InlineData("vllm@m@1@0@f@fp8_e4m3", "f", "fp8_e4m3")]
    [InlineData("vllm@m@1@0@-7fffffffffffffff", "-7fffffffffffffff", null)]
    [InlineData("vllm@m@1@0@1234567890", "1234567890", null)]   // the early-2025 decimal form parses as hex text
    public void Short_and_negative_hashes_of_the_original_round_trip(string text, string hash, string? dtype)
    {
        var key = CacheEngineKey.Parse(text);
        Assert.Equal(hash, key.ChunkHash);
        Assert.Equal(dtype, key.DType);
        Assert.Equal(text, key.ToString());
    }

    [Fact]
    public void Tags_after_the_dtype_round_trip_in_order()
    {
        const string text = "vllm@org/model@2@1@abc@half@user%alice@lang%en@expr%a%b";
        var key = CacheEngineKey.Parse(text);
        Assert.Equal("half", key.DType);
        Assert.Equal("user%alice@lang%en@expr%a%b", key.Tags);
        Assert.Equal(
            [new("user", "alice"), new("lang", "en"), new("expr", "a%b")],
            key.EnumerateTags().ToList());
        Assert.Equal(text, key.ToString());
        Assert.Equal(key, CacheEngineKey.Parse(key.ToString()));
    }

    [Fact]
    public void Tags_directly_after_the_hash_mean_no_dtype()
    {
        var key = CacheEngineKey.Parse("vllm@m@1@0@abc@salt%t1");
        Assert.Null(key.DType);
        Assert.Equal("salt%t1", key.Tags);
        Assert.Equal("vllm@m@1@0@abc@salt%t1", key.ToString());
        Assert.Equal(new KeyValuePair<string, string>("salt", "t1"), Assert.Single(key.EnumerateTags()));
    }

    [Fact]
    public void Model_names_with_slashes_and_dots_survive()
    {
        var key = new CacheEngineKey("onnx", "/models/Qwen2.5-0.5B/onnx/model.onnx", 8, 7, "ff", "half", "a%b");
        Assert.Equal(key, CacheEngineKey.Parse(key.ToString()));
    }

    [Fact]
    public void Keys_differing_in_any_field_are_different()
    {
        var key = new CacheEngineKey("vllm", "m", 2, 1, "ab", "half", "t%1");
        Assert.Equal(key, new CacheEngineKey("vllm", "m", 2, 1, "ab", "half", "t%1"));
        Assert.Equal(key.GetHashCode(), new CacheEngineKey("vllm", "m", 2, 1, "ab", "half", "t%1").GetHashCode());
        Assert.NotEqual(key, key with { Format = "onnx" });
        Assert.NotEqual(key, key with { ModelName = "n" });
        Assert.NotEqual(key, key with { WorldSize = 1 });
        Assert.NotEqual(key, key with { WorkerId = 0 });
        Assert.NotEqual(key, key with { ChunkHash = "ac" });
        Assert.NotEqual(key, key with { DType = null });
        Assert.NotEqual(key, key with { Tags = "t%2" });
    }

    [Theory]
    [InlineData("vllm@m@1@0@2783dafec1b4e9f0@bfloat16@0", 0, null)]
    [InlineData("vllm@m@2@1@-1a2b@half@31@t%1@u%x", 31, "t%1@u%x")]
    public void Layer_keys_of_the_original_parse_and_round_trip(string text, int layer, string? tags)
    {
        var key = CacheEngineKey.Parse(text);
        Assert.Equal(layer, key.LayerId);
        Assert.Equal(tags, key.Tags);
        Assert.Equal(text, key.ToString());
        Assert.NotEqual(key, key with { LayerId = layer + 1 });
        Assert.NotEqual(key, key with { LayerId = null });   // a layer key never names the whole chunk
    }

    [Fact]
    public void A_layer_id_needs_a_dtype_before_it_and_must_fit_an_int()
    {
        Assert.False(CacheEngineKey.TryParse("vllm@m@1@0@ab@half@99999999999", out _, out var error));
        Assert.Contains("layer id '99999999999'", error, StringComparison.Ordinal);
        // Without a dtype the sixth field is the dtype, even when it is digits: the original writes no such key.
        var key = CacheEngineKey.Parse("vllm@m@1@0@ab@7");
        Assert.Equal("7", key.DType);
        Assert.Null(key.LayerId);
    }

    [Theory]
    [InlineData("vllm@m@1@0", "at least 5")]
    [InlineData("", "at least 5")]
    [InlineData("@m@1@0@ab", "must not be empty")]
    [InlineData("vllm@@1@0@ab", "must not be empty")]
    [InlineData("vllm@m@0@0@ab", "world_size '0'")]
    [InlineData("vllm@m@x@0@ab", "world_size 'x'")]
    [InlineData("vllm@m@-1@0@ab", "world_size '-1'")]
    [InlineData("vllm@m@+1@0@ab", "world_size '+1'")]
    [InlineData("vllm@m@1@-1@ab", "worker_id '-1'")]
    [InlineData("vllm@m@1@ @ab", "worker_id ' '")]
    [InlineData("vllm@m@1@0@AB", "chunk hash 'AB'")]
    [InlineData("vllm@m@1@0@0x1a", "chunk hash '0x1a'")]
    [InlineData("vllm@m@1@0@", "chunk hash ''")]
    [InlineData("vllm@m@1@0@-", "chunk hash '-'")]
    [InlineData("vllm@m@1@0@a b", "chunk hash 'a b'")]
    [InlineData("vllm@m@1@0@ab@", "empty dtype")]
    [InlineData("vllm@m@1@0@ab@half@notatag", "'notatag' is not a name%value tag")]
    [InlineData("vllm@m@1@0@ab@half@%v", "'%v' is not a name%value tag")]
    [InlineData("vllm@m@1@0@ab@half@t%1@", "'' is not a name%value tag")]
    public void Malformed_keys_are_rejected_with_a_message_naming_the_problem(string text, string expected)
    {
        Assert.False(CacheEngineKey.TryParse(text, out _, out var error));
        Assert.Contains(expected, error, StringComparison.Ordinal);
        Assert.False(CacheEngineKey.TryParse(text, out _));
        var exception = Assert.Throws<FormatException>(() => CacheEngineKey.Parse(text));
        Assert.Contains($"'{text}'", exception.Message, StringComparison.Ordinal);
        Assert.Contains(expected, exception.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Key_scope_makes_keys_with_the_64_digit_hash_and_optional_dtype()
    {
        var hash = new ChunkHash(Enumerable.Range(0, 32).Select(i => (byte)(i * 9)).ToArray());
        var plain = new KeyScope("vllm", "org/model", 4, 2).MakeKey(hash);
        Assert.Equal("vllm@org/model@4@2@" + hash, plain.ToString());
        Assert.Equal(64, plain.ChunkHash.Length);
        var typed = new KeyScope("vllm", "org/model", 4, 2, "bfloat16").MakeKey(hash);
        Assert.Equal("vllm@org/model@4@2@" + hash + "@bfloat16", typed.ToString());
        Assert.Equal(typed, CacheEngineKey.Parse(typed.ToString()));
    }

    [Fact]
    public void Keys_of_different_ranks_differ_and_each_rank_is_validated()
    {
        var hash = new ChunkHash(new byte[32]);
        var keys = Enumerable.Range(0, 4).Select(rank => new KeyScope("vllm", "m", 4, rank).MakeKey(hash)).ToList();
        Assert.Equal(4, keys.Distinct().Count());
        foreach (var rank in Enumerable.Range(0, 4))
        {
            new KeyScope("vllm", "m", 4, rank).Validate();
        }
        Assert.Throws<ArgumentException>(() => new KeyScope("vllm", "m", 4, 4).Validate());
        Assert.Throws<ArgumentException>(() => new KeyScope("vllm", "m", 0, 0).Validate());
        Assert.Throws<ArgumentException>(() => new KeyScope("vllm", "m", 1, -1).Validate());
        Assert.Contains("'a@b'", Assert.Throws<ArgumentException>(() => new KeyScope("vllm", "a@b").Validate()).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new KeyScope("v@llm", "m").Validate());
        Assert.Throws<ArgumentException>(() => new KeyScope("", "m").Validate());
        Assert.Throws<ArgumentException>(() => new KeyScope("vllm", "").Validate());
    }

    [Fact]
    public void Chunk_hash_text_round_trips_and_rejects_bad_text()
    {
        var bytes = Enumerable.Range(0, 32).Select(i => (byte)(255 - i)).ToArray();
        var hash = new ChunkHash(bytes);
        var text = hash.ToString();
        Assert.Equal(Convert.ToHexStringLower(bytes), text);
        Assert.True(ChunkHash.TryParse(text, out var parsed));
        Assert.Equal(hash, parsed);
        Assert.True(hash == parsed);
        Assert.True(ChunkHash.TryParse(text.ToUpperInvariant(), out var upper));
        Assert.Equal(hash, upper);
        var written = new byte[32];
        hash.WriteTo(written);
        Assert.Equal(bytes, written);
        Assert.False(ChunkHash.TryParse(text.AsSpan(0, 63), out _));
        Assert.False(ChunkHash.TryParse(text + "0", out _));
        Assert.False(ChunkHash.TryParse(string.Concat("zz", text.AsSpan(2)), out _));
        Assert.Throws<ArgumentException>(() => new ChunkHash(new byte[31]));
        bytes[31] ^= 1;
        Assert.NotEqual(hash, new ChunkHash(bytes));
        Assert.True(hash != new ChunkHash(bytes));
    }
}
