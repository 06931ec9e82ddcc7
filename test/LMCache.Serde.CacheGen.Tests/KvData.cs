using System.Runtime.InteropServices;
using LMCache.Core.Memory;

namespace LMCache.Serde.CacheGen.Tests;

/// <summary>Builds KV-like test data: per-channel scales, a few outlier channels, correlated tokens.</summary>
internal static class KvData
{
    public static float[] Values(int rows, int tokens, int hidden, int seed)
    {
        var random = new Random(seed);
        var values = new float[rows * tokens * hidden];
        var channelScale = new float[hidden];
        for (var row = 0; row < rows; row++)
        {
            // Channel statistics are a property of the "model" (fixed per row), the noise of the chunk (seed).
            var model = new Random(row);
            for (var c = 0; c < hidden; c++)
            {
                channelScale[c] = (float)Math.Exp(model.NextDouble() * 2 - 1) * (model.Next(100) == 0 ? 20f : 1f);
            }
            var previous = new float[hidden];
            for (var t = 0; t < tokens; t++)
            {
                for (var c = 0; c < hidden; c++)
                {
                    var noise = (float)(random.NextDouble() * 2 - 1);
                    previous[c] = 0.8f * previous[c] + 0.6f * noise * channelScale[c];
                    values[((row * tokens) + t) * hidden + c] = previous[c];
                }
            }
        }
        return values;
    }

    /// <summary>Raw little-endian bytes of <paramref name="values"/> in <paramref name="dtype"/> (RNE narrowing).</summary>
    public static byte[] ToBytes(ReadOnlySpan<float> values, KvDType dtype)
    {
        var bytes = new byte[values.Length * dtype.ItemSize()];
        for (var i = 0; i < values.Length; i++)
        {
            switch (dtype)
            {
                case KvDType.BFloat16:
                    MemoryMarshal.Write(bytes.AsSpan(2 * i), KvBits.SingleToBFloat16(values[i]));
                    break;
                case KvDType.Float16:
                    MemoryMarshal.Write(bytes.AsSpan(2 * i), KvBits.SingleToHalf(values[i]));
                    break;
                default:
                    MemoryMarshal.Write(bytes.AsSpan(4 * i), values[i]);
                    break;
            }
        }
        return bytes;
    }

    public static float Read(ReadOnlySpan<byte> bytes, KvDType dtype, int i) => dtype switch
    {
        KvDType.BFloat16 => KvBits.BFloat16ToSingle(MemoryMarshal.Read<ushort>(bytes[(2 * i)..])),
        KvDType.Float16 => KvBits.HalfToSingle(MemoryMarshal.Read<ushort>(bytes[(2 * i)..])),
        _ => MemoryMarshal.Read<float>(bytes[(4 * i)..]),
    };

    public static MemoryObject Chunk(IMemoryAllocator allocator, KvDType dtype, int layers, int tokens, int hidden, int seed)
    {
        var bytes = ToBytes(Values(2 * layers, tokens, hidden, seed), dtype);
        return Chunk(allocator, dtype, layers, tokens, hidden, bytes);
    }

    public static MemoryObject Chunk(IMemoryAllocator allocator, KvDType dtype, int layers, int tokens, int hidden, ReadOnlySpan<byte> bytes)
    {
        Assert.True(allocator.TryAllocate(new MemoryObjectMetadata(KvShape.Kv2Ltd(layers, tokens, hidden), dtype, MemoryFormat.KV2LTD), out var chunk));
        bytes.CopyTo(chunk.Span);
        return chunk;
    }

    /// <summary>A stored blob as the remote tier hands it to the serde (opaque metadata).</summary>
    public static MemoryObject Stored(IMemoryAllocator allocator, ReadOnlySpan<byte> blob)
    {
        Assert.True(allocator.TryAllocate(MemoryObjectMetadata.Opaque(blob.Length), out var stored));
        blob.CopyTo(stored.Span);
        return stored;
    }
}
