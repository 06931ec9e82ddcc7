using LMCache.Core.Memory;

namespace LMCache.Protocol.Tests;

/// <summary>
/// Every lm:// message against the bytes Python's <c>struct.pack</c> produces (Golden/lm_messages.txt, written by
/// test/python/make_golden.py), and round trips through the one type that owns both directions.
/// </summary>
public sealed class LmMessageTests
{
    private const string LlamaKey = "vllm@meta-llama/Llama-3.1-8B-Instruct@1@0@2783dafec1b4e9f0@bfloat16";
    private static readonly string s_smallKey = "vllm@test/model@1@0@" + string.Concat(Enumerable.Repeat("ab", 32));
    private static readonly KvShape s_llamaShape = new(2, 32, 256, 1024);

    private static readonly Dictionary<string, byte[]> s_golden = File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "Golden", "lm_messages.txt"))
        .Where(line => line.Length > 0)
        .Select(line => line.Split(' '))
        .ToDictionary(parts => parts[0] + " " + parts[1], parts => Convert.FromHexString(parts[2]));

    public static TheoryData<string, LmRequestHeader> Requests => new()
    {
        { "request put_llama", LmRequestHeader.Put(LlamaKey, 33554432, new MemoryObjectMetadata(s_llamaShape, KvDType.BFloat16, MemoryFormat.KV2LTD)) },
        { "request get_llama", LmRequestHeader.Get(LlamaKey) },
        { "request exist_llama", LmRequestHeader.Exist(LlamaKey) },
        { "request list", LmRequestHeader.List() },
        { "request health", LmRequestHeader.Health() },
        { "request put_small", LmRequestHeader.Put(s_smallKey, 2048, new MemoryObjectMetadata(new KvShape(2, 2, 4, 64), KvDType.BFloat16, MemoryFormat.KV2LTD)) },
        { "request get_small", LmRequestHeader.Get(s_smallKey) },
    };

    public static TheoryData<string, LmReplyHeader> Replies => new()
    {
        { "reply hit_llama", LmReplyHeader.Hit(33554432, 1, 3, s_llamaShape) },
        { "reply miss", LmReplyHeader.Fail },
        { "reply ok", LmReplyHeader.Ok },
    };

    [Theory]
    [MemberData(nameof(Requests))]
    public void Request_encodes_to_the_golden_bytes_and_back(string name, LmRequestHeader header)
    {
        var bytes = new byte[LmRequestHeader.Size];
        header.WriteTo(bytes);
        Assert.Equal(Convert.ToHexString(s_golden[name]), Convert.ToHexString(bytes));

        Assert.True(LmRequestHeader.TryRead(s_golden[name], out var decoded, out var error), error);
        Assert.Equal(header, decoded);
    }

    [Theory]
    [MemberData(nameof(Replies))]
    public void Reply_encodes_to_the_golden_bytes_and_back(string name, LmReplyHeader header)
    {
        var bytes = new byte[LmReplyHeader.Size];
        header.WriteTo(bytes);
        Assert.Equal(Convert.ToHexString(s_golden[name]), Convert.ToHexString(bytes));
        Assert.Equal(header, LmReplyHeader.Read(s_golden[name]));
    }

    [Fact]
    public void Reference_document_examples_match()
    {
        // lmcache-reference.md §7.3: the GET hit and miss headers, byte for byte.
        Assert.Equal("C80000000000000201000000030000000200000020000000000100000004000000000000", Convert.ToHexString(s_golden["reply hit_llama"]));
        Assert.Equal("900100000000000001000000020000000000000000000000000000000000000000000000", Convert.ToHexString(s_golden["reply miss"]));
        // §7.2: the PUT header starts with cmd=1 len=33554432 fmt=1 dtype=3 location=0 shape=2,32,256,1024 then the key.
        Assert.StartsWith("01000000000000020100000003000000000000000200000020000000000100000004000076", Convert.ToHexString(s_golden["request put_llama"]), StringComparison.Ordinal);
        Assert.Equal((byte)' ', s_golden["request put_llama"][LmRequestHeader.Size - 1]);
    }

    [Fact]
    public void Reply_location_is_last_not_fifth()
    {
        var bytes = new byte[LmReplyHeader.Size];
        new LmReplyHeader(LmReplyCode.Success, 10, 1, 3, new KvShape(5, 0, 0, 0), 2).WriteTo(bytes);
        Assert.Equal(5, BitConverter.ToInt32(bytes, 16));
        Assert.Equal(2, BitConverter.ToInt32(bytes, 32));
    }

    [Fact]
    public void Key_is_stripped_of_padding_and_whitespace()
    {
        var bytes = new byte[LmRequestHeader.Size];
        LmRequestHeader.Get("  " + s_smallKey + "\t").WriteTo(bytes);
        Assert.True(LmRequestHeader.TryRead(bytes, out var decoded, out _));
        Assert.Equal(s_smallKey, decoded.Key);
    }

    [Fact]
    public void Key_of_exactly150_bytes_fits_and151_does_not()
    {
        var exact = new string('k', LmRequestHeader.MaxKeyBytes);
        var bytes = new byte[LmRequestHeader.Size];
        LmRequestHeader.Get(exact).WriteTo(bytes);
        Assert.True(LmRequestHeader.TryRead(bytes, out var decoded, out _));
        Assert.Equal(exact, decoded.Key);
        Assert.False(LmRequestHeader.KeyFits(exact + "k"));
        Assert.Throws<ArgumentException>(() => LmRequestHeader.Get(exact + "k").WriteTo(bytes));
        // Multi-byte UTF-8 counts bytes, not characters: 75 × 'é' is 150 bytes, 76 is 152.
        Assert.True(LmRequestHeader.KeyFits(new string('é', 75)));
        Assert.False(LmRequestHeader.KeyFits(new string('é', 76)));
    }

    [Fact]
    public void Invalid_utf8_key_is_rejected()
    {
        var bytes = new byte[LmRequestHeader.Size];
        LmRequestHeader.Get(s_smallKey).WriteTo(bytes);
        bytes[LmRequestHeader.KeyOffset + 3] = 0xFF;
        Assert.False(LmRequestHeader.TryRead(bytes, out _, out var error));
        Assert.Contains("UTF-8", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Short_input_is_rejected()
    {
        Assert.False(LmRequestHeader.TryRead(new byte[LmRequestHeader.Size - 1], out _, out var error));
        Assert.NotNull(error);
        Assert.Throws<ArgumentException>(() => LmReplyHeader.Read(new byte[LmReplyHeader.Size - 1]));
    }

    [Theory]
    [InlineData(9, 0, "unknown command")]
    [InlineData(1, -1, "outside")]
    [InlineData(1, 2000, "outside")]
    [InlineData(2, 5, "only PUT")]
    public void Validate_rejects_bad_fields(int command, int length, string expected)
    {
        var header = new LmRequestHeader((LmCommand)command, length, 1, 3, 0, new KvShape(1, 0, 0, 0), s_smallKey);
        Assert.Contains(expected, header.Validate(maxPayloadBytes: 1024), StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_checks_put_format_dtype_and_shape()
    {
        var good = LmRequestHeader.Put(s_smallKey, 16, new MemoryObjectMetadata(new KvShape(2, 1, 1, 4), KvDType.BFloat16, MemoryFormat.KV2LTD));
        Assert.Null(good.Validate(1024));
        Assert.Contains("fmt", (good with { Format = 99 }).Validate(1024), StringComparison.Ordinal);
        Assert.Contains("dtype", (good with { DTypeCode = 42 }).Validate(1024), StringComparison.Ordinal);
        Assert.Contains("negative", (good with { Shape = new KvShape(2, -1, 1, 4) }).Validate(1024), StringComparison.Ordinal);
    }

    [Fact]
    public void Reply_validation_rejects_unknown_codes_and_bad_lengths()
    {
        Assert.Null(LmReplyHeader.Ok.Validate(0));
        Assert.NotNull((LmReplyHeader.Ok with { Code = (LmReplyCode)500 }).Validate(0));
        Assert.NotNull((LmReplyHeader.Fail with { Length = 4 }).Validate(100));
        Assert.NotNull(LmReplyHeader.Hit(101, 1, 3, new KvShape(1, 0, 0, 0)).Validate(100));
    }

    [Fact]
    public void Dtype_code_one_decodes_as_float16()
    {
        Assert.True(LmWire.TryGetMetadata(1, 1, new KvShape(2, 1, 1, 8), out var metadata));
        Assert.Equal(KvDType.Float16, metadata.DType);
        Assert.Equal(32, metadata.ByteLength);
        Assert.False(LmWire.TryGetMetadata(1, 9, new KvShape(2, 1, 1, 8), out _));
        Assert.False(LmWire.TryGetMetadata(1, 3, new KvShape(0, 0, 0, 0), out _));
    }

    [Fact]
    public void Key_list_round_trips()
    {
        string[] keys = [s_smallKey, LlamaKey];
        var payload = LmWire.EncodeKeyList(keys);
        Assert.Equal((byte)'\n', payload[^1]);
        Assert.Equal(keys, LmWire.DecodeKeyList(payload));
        Assert.Empty(LmWire.DecodeKeyList(LmWire.EncodeKeyList([])));
    }
}
