using LMCache.Core.Keys;
using LMCache.Core.Memory;

namespace LMCache.Connectors.Redis.Tests;

public sealed class RemoteMetadataTests
{
    // The reference's example: one Llama-3.1-8B bf16 chunk (length 33,554,432, fmt 1, dtype 3, shape [2,32,256,1024]).
    private static readonly byte[] s_llamaExample = Convert.FromHexString("00000002010000000300000002000000200000000001000000040000");

    private static readonly CacheEngineKey s_key = CacheEngineKey.Parse("vllm@meta-llama/Llama-3.1-8B-Instruct@1@0@2783dafec1b4e9f0@bfloat16");

    [Fact]
    public void Writes_the_original_28_bytes()
    {
        var metadata = RemoteMetadata.For(new MemoryObjectMetadata(new KvShape(2, 32, 256, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD), 33_554_432, null);
        Assert.Equal(s_llamaExample, metadata.ToArray());
    }

    [Fact]
    public void Reads_the_original_28_bytes_without_checksum()
    {
        Assert.True(RemoteMetadata.TryRead(s_llamaExample, out var metadata, out _));
        Assert.Equal(33_554_432, metadata.Length);
        Assert.Null(metadata.Checksum);
        Assert.True(metadata.TryValidate(33_554_432, s_key, out var objectMetadata, out var error), error);
        Assert.Equal(new MemoryObjectMetadata(new KvShape(2, 32, 256, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD), objectMetadata);
    }

    [Fact]
    public void Trailer_round_trips_and_keeps_the_first_28_bytes_original()
    {
        var written = RemoteMetadata.For(new MemoryObjectMetadata(new KvShape(2, 32, 256, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD), 33_554_432, 0x0123456789abcdefUL).ToArray();
        Assert.Equal(RemoteMetadata.WithChecksumSize, written.Length);
        Assert.Equal(s_llamaExample, written[..28]);
        Assert.True(RemoteMetadata.TryRead(written, out var read, out _));
        Assert.Equal(0x0123456789abcdefUL, read.Checksum);
    }

    [Fact]
    public void Decodes_dtype_code_1_as_float16()
    {
        var bytes = (byte[])s_llamaExample.Clone();
        bytes[8] = 1;
        Assert.True(RemoteMetadata.TryRead(bytes, out var metadata, out _));
        Assert.True(metadata.TryValidate(33_554_432, default, out var objectMetadata, out _));
        Assert.Equal(KvDType.Float16, objectMetadata.DType);
    }

    [Theory]
    [InlineData(27)]
    [InlineData(29)]
    [InlineData(43)]
    [InlineData(45)]
    public void Rejects_other_sizes(int size)
    {
        Assert.False(RemoteMetadata.TryRead(new byte[size], out _, out var error));
        Assert.Contains("bytes", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Rejects_a_foreign_trailer()
    {
        var bytes = new byte[44];
        s_llamaExample.CopyTo(bytes, 0);
        Assert.False(RemoteMetadata.TryRead(bytes, out _, out _));
    }

    [Theory]
    [InlineData(33_554_431L, "payload")]          // payload length differs from metadata length
    public void Rejects_length_mismatch(long payload, string expected)
    {
        Assert.True(RemoteMetadata.TryRead(s_llamaExample, out var metadata, out _));
        Assert.False(metadata.TryValidate(payload, s_key, out _, out var error));
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void Rejects_unknown_codes_bad_shapes_and_inconsistent_lengths()
    {
        static bool Valid(RemoteMetadata m) => m.TryValidate(m.Length, default, out _, out _);
        var good = new RemoteMetadata(2 * 2 * 16 * 64 * 2, 1, 3, new KvShape(2, 2, 16, 64), null);
        Assert.True(Valid(good));
        Assert.False(Valid(good with { DTypeCode = 9 }));
        Assert.False(Valid(good with { FormatCode = 7 }));
        Assert.False(Valid(good with { Shape = new KvShape(0, 2, 16, 64) }));
        Assert.False(Valid(good with { Shape = new KvShape(2, -2, 16, 64) }));
        Assert.False(Valid(good with { Length = good.Length + 2 }));
        Assert.False(Valid(good with { Shape = new KvShape(int.MaxValue, int.MaxValue, int.MaxValue, int.MaxValue) }));
        // Not a whole number of tokens.
        Assert.False(Valid(good with { Length = good.Length - 2 }));
    }

    [Fact]
    public void Accepts_a_partial_chunk_as_fewer_tokens()
    {
        var full = new RemoteMetadata(2 * 2 * 16 * 64 * 2, 1, 3, new KvShape(2, 2, 16, 64), null);
        var partial = full with { Length = 2 * 2 * 5 * 64 * 2 };
        Assert.True(partial.TryValidate(partial.Length, default, out var objectMetadata, out var error), error);
        Assert.Equal(new KvShape(2, 2, 5, 64), objectMetadata.Shape);
        Assert.Equal(partial.Length, objectMetadata.ByteLength);
    }

    [Fact]
    public void Rejects_a_dtype_other_than_the_keys()
    {
        var halfKey = CacheEngineKey.Parse("vllm@m@1@0@abc@half");
        Assert.True(RemoteMetadata.TryRead(s_llamaExample, out var metadata, out _));
        Assert.False(metadata.TryValidate(metadata.Length, halfKey, out _, out var error));
        Assert.Contains("dtype", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Opaque_buffers_need_an_exact_length()
    {
        var opaque = RemoteMetadata.For(MemoryObjectMetadata.Opaque(1000), 1000, null);
        Assert.True(opaque.TryValidate(1000, s_key, out var objectMetadata, out _));
        Assert.Equal(MemoryFormat.BinaryBuffer, objectMetadata.Format);
        Assert.False((opaque with { Length = 999 }).TryValidate(999, s_key, out _, out _));
    }
}
