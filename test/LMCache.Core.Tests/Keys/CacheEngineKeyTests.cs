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
    public void Key_scope_makes_keys_with_the_hash_spelled_as_the_original_and_optional_dtype()
    {
        var hash = new ChunkHash(Enumerable.Range(0, 32).Select(i => (byte)(i * 9)).ToArray());   // starts 00 09 12 ...
        var plain = new KeyScope("vllm", "org/model", 4, 2).MakeKey(hash);
        Assert.Equal("vllm@org/model@4@2@" + hash.ToString().TrimStart('0'), plain.ToString());
        Assert.Equal(61, plain.ChunkHash.Length);   // "0009…": three leading zeros dropped, as format(int, 'x') does
        var typed = new KeyScope("vllm", "org/model", 4, 2, "bfloat16").MakeKey(hash);
        Assert.Equal("vllm@org/model@4@2@" + hash.ToKeyText() + "@bfloat16", typed.ToString());
        Assert.Equal(typed, CacheEngineKey.Parse(typed.ToString()));
    }

    [Theory]
    // Expected values are Python's format(int.from_bytes(bytes.fromhex(h), "big"), "x").
    [InlineData("2783dafec1b4e9f00a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef", "2783dafec1b4e9f00a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef")]
    [InlineData("02783dafec1b4e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef", "2783dafec1b4e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef")]
    [InlineData("0000000000000000000000000000000000000000000000000000000000000abc", "abc")]
    [InlineData("0000000000000000000000000000000000000000000000000000000000000000", "0")]
    [InlineData("f000000000000000000000000000000000000000000000000000000000000000", "f000000000000000000000000000000000000000000000000000000000000000")]
    public void Chunk_hash_key_text_is_the_originals_format_x(string hex, string expected)
    {
        Assert.True(ChunkHash.TryParse(hex, out var hash));
        Assert.Equal(hex, hash.ToString());
        Assert.Equal(expected, hash.ToKeyText());
    }

    [Theory]
    [InlineData("abc", "abc")]
    [InlineData("0abc", "abc")]
    [InlineData("0000abc", "abc")]
    [InlineData("0", "0")]
    [InlineData("000", "0")]
    [InlineData("-0", "0")]
    [InlineData("-000", "0")]
    [InlineData("-1a2b", "-1a2b")]
    [InlineData("-001a2b", "-1a2b")]
    [InlineData("10", "10")]
    public void Canonical_hash_text_is_pythons_format_of_int_base_16(string text, string expected)
    {
        Assert.Equal(expected, CacheEngineKey.CanonicalHashText(text));
        if (text == expected)
        {
            Assert.Same(text, CacheEngineKey.CanonicalHashText(text));   // no copy when already canonical
        }
    }

    [Theory]
    [InlineData("vllm@m@1@0@00ab@half", "vllm@m@1@0@ab@half")]
    [InlineData("vllm@m@1@0@" + "000000000000000000000000000000000000000000000000000000000000abcd", "vllm@m@1@0@abcd")]
    [InlineData("vllm@m@2@1@-0001a2b@half@t%1", "vllm@m@2@1@-1a2b@half@t%1")]
    [InlineData("vllm@m@1@0@-0@float", "vllm@m@1@0@0@float")]
    [InlineData("vllm@m@1@0@0042@bfloat16@3@u%x", "vllm@m@1@0@42@bfloat16@3@u%x")]
    [InlineData("Qwen/Qwen3-8B@1@0@0abc@bfloat16", "Qwen/Qwen3-8B@1@0@abc@bfloat16")]
    public void Every_spelling_of_a_hash_has_one_canonical_key(string spelled, string canonical)
    {
        var key = CacheEngineKey.Parse(spelled);
        Assert.Equal(spelled, key.ToString());   // the text as written survives parsing
        Assert.NotEqual(CacheEngineKey.Parse(canonical), key);
        Assert.Equal(CacheEngineKey.Parse(canonical), key.ToCanonical());
        Assert.Equal(canonical, key.ToCanonical().ToString());
        Assert.Equal(CacheEngineKey.Parse(canonical), CacheEngineKey.Parse(canonical).ToCanonical());
    }

    [Theory]
    [InlineData("Qwen/Qwen3-8B@1@0@2783dafec1b4e9f0@bfloat16", "Qwen/Qwen3-8B", 1, 0, "2783dafec1b4e9f0", "bfloat16", null, null)]
    [InlineData("m@2@1@-1a2b@half", "m", 2, 1, "-1a2b", "half", null, null)]
    [InlineData("m@1@0@abc@fp8_e4m3fn@5", "m", 1, 0, "abc", "fp8_e4m3fn", 5, null)]
    [InlineData("m@1@0@abc@bfloat16@user%alice@lang%en", "m", 1, 0, "abc", "bfloat16", null, "user%alice@lang%en")]
    [InlineData("m@1@0@abc@bfloat16@31@user%alice", "m", 1, 0, "abc", "bfloat16", 31, "user%alice")]
    [InlineData("org/m@8@7@0@int8", "org/m", 8, 7, "0", "int8", null, null)]
    public void The_newest_upstream_form_without_fmt_parses_and_round_trips(
        string text, string model, int worldSize, int workerId, string hash, string dtype, int? layer, string? tags)
    {
        Assert.True(CacheEngineKey.TryParse(text, out var key, out var error), error);
        Assert.Equal(string.Empty, key.Format);
        Assert.Equal(model, key.ModelName);
        Assert.Equal(worldSize, key.WorldSize);
        Assert.Equal(workerId, key.WorkerId);
        Assert.Equal(hash, key.ChunkHash);
        Assert.Equal(dtype, key.DType);
        Assert.Equal(layer, key.LayerId);
        Assert.Equal(tags, key.Tags);
        Assert.Equal(text, key.ToString());
        // The same fields with a format are the mid/late-2025 key, a different identity (as in the original).
        Assert.NotEqual(key, CacheEngineKey.Parse("vllm@" + text));
    }

    [Theory]
    [InlineData("m@0@0@ab@half", "world_size '0'")]
    [InlineData("m@1@x@ab@half", "worker_id 'x'")]
    [InlineData("@1@0@ab@half", "model name must not be empty")]
    [InlineData("m@1@0@ab@half@notatag", "'notatag' is not a name%value tag")]
    [InlineData("m@1@0@ab@half@99999999999", "layer id '99999999999'")]
    [InlineData("vllm@1@1@0@AB", "chunk hash 'AB'")]   // not a dtype token: an older key with a bad hash
    public void Malformed_keys_of_the_newest_form_are_rejected_with_the_problem(string text, string expected)
    {
        Assert.False(CacheEngineKey.TryParse(text, out _, out var error));
        Assert.Contains(expected, error, StringComparison.Ordinal);
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
