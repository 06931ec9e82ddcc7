using LMCache.Core.Keys;
using LMCache.Core.Memory;

namespace LMCache.Testing;

/// <summary>Builds chunks with known, key-specific content so a test can tell right bytes from wrong ones.</summary>
public static class TestChunks
{
    /// <summary>A small KV_2LTD shape: 2 layers, <paramref name="tokens"/> tokens, hidden 64, bf16 (tokens × 512 bytes).</summary>
    public static MemoryObjectMetadata SmallChunk(int tokens = 16) => new(KvShape.Kv2Ltd(2, tokens, 64), KvDType.BFloat16, MemoryFormat.KV2LTD);

    /// <summary>A key for model <paramref name="model"/> whose hash is derived from <paramref name="index"/>.</summary>
    public static CacheEngineKey Key(int index, string model = "test/model")
    {
        Span<byte> bytes = stackalloc byte[ChunkHash.Size];
        BitConverter.TryWriteBytes(bytes, index);
        BitConverter.TryWriteBytes(bytes[8..], index * 7919L);
        return new KeyScope("vllm", model).MakeKey(new ChunkHash(bytes));
    }

    /// <summary>Fills <paramref name="memoryObject"/> with a pattern derived from <paramref name="seed"/>.</summary>
    public static void Fill(MemoryObject memoryObject, int seed)
    {
        var random = new Random(seed);
        random.NextBytes(memoryObject.Span);
    }

    /// <summary>True when <paramref name="memoryObject"/> holds exactly the pattern of <paramref name="seed"/>.</summary>
    public static bool Matches(MemoryObject memoryObject, int seed)
    {
        var expected = new byte[memoryObject.Length];
        new Random(seed).NextBytes(expected);
        return memoryObject.Span.SequenceEqual(expected);
    }

    /// <summary>Allocates and fills a chunk, or throws when the allocator is full.</summary>
    public static MemoryObject Create(IMemoryAllocator allocator, int seed, MemoryObjectMetadata? metadata = null)
    {
        if (!allocator.TryAllocate(metadata ?? SmallChunk(), out var memoryObject))
        {
            throw new InvalidOperationException("test allocator is full");
        }
        Fill(memoryObject, seed);
        return memoryObject;
    }
}
