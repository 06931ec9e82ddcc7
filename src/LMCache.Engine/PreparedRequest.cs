using System.Buffers;
using LMCache.Core.Keys;

namespace LMCache.Engine;

/// <summary>
/// The chunks and chunk keys of one request's tokens under one cache salt, hashed once by
/// <see cref="LMCacheEngine.Prepare"/> and shared by <see cref="LMCacheEngine.LookupAsync(PreparedRequest, CancellationToken)"/>,
/// <see cref="LMCacheEngine.RetrieveAsync(PreparedRequest, IKvCacheAdapter, int, CancellationToken)"/> and
/// <see cref="LMCacheEngine.Store(PreparedRequest, IKvCacheAdapter, int)"/>, so a request pays for SHA-256 over its
/// prompt once, however many of the three it calls.
/// </summary>
/// <remarks>
/// Holds pooled arrays: dispose it when the request is done (after its last store). Not thread-safe to dispose while
/// a call that uses it is running. Valid only with the engine that prepared it (the keys carry that engine's scope).
/// </remarks>
public sealed class PreparedRequest : IDisposable
{
    private TokenChunk[]? _chunks;
    private CacheEngineKey[]? _keys;

    private PreparedRequest(LMCacheEngine owner, TokenChunk[] chunks, CacheEngineKey[] keys, int count, int tokenCount, string? cacheSalt)
    {
        Owner = owner;
        _chunks = chunks;
        _keys = keys;
        ChunkCount = count;
        TokenCount = tokenCount;
        CacheSalt = cacheSalt;
    }

    /// <summary>Tokens of the request.</summary>
    public int TokenCount { get; }

    /// <summary>The cache salt the keys were computed under (null: none).</summary>
    public string? CacheSalt { get; }

    /// <summary>Keyed chunks of the request (whole chunks, plus the partial tail when <c>save_unfull_chunk</c> is on).</summary>
    public int ChunkCount { get; }

    /// <summary>The chunks, in prompt order.</summary>
    public ReadOnlySpan<TokenChunk> Chunks => Live(_chunks).AsSpan(0, ChunkCount);

    /// <summary>The chunk keys, one per chunk, in prompt order.</summary>
    public ReadOnlyMemory<CacheEngineKey> Keys => Live(_keys).AsMemory(0, ChunkCount);

    internal LMCacheEngine Owner { get; }

    /// <summary>Hashes <paramref name="tokens"/> into chunks and keys (pooled arrays).</summary>
    internal static PreparedRequest Create(LMCacheEngine engine, ReadOnlySpan<int> tokens, string? cacheSalt)
    {
        var capacity = Math.Max(1, engine.TokenDatabase.ChunkCount(tokens.Length));
        var chunks = ArrayPool<TokenChunk>.Shared.Rent(capacity);
        var keys = ArrayPool<CacheEngineKey>.Shared.Rent(capacity);
        var count = engine.TokenDatabase.GetChunks(tokens, chunks, cacheSalt);
        for (var i = 0; i < count; i++)
        {
            keys[i] = engine.Scope.MakeKey(chunks[i].Hash);
        }
        return new PreparedRequest(engine, chunks, keys, count, tokens.Length, cacheSalt);
    }

    /// <summary>The index of the first chunk that starts at or after <paramref name="tokens"/> (a chunk boundary).</summary>
    internal int FirstChunkAt(int tokens)
    {
        var chunks = Chunks;
        var index = 0;
        while (index < chunks.Length && chunks[index].Start < tokens)
        {
            index++;
        }
        return index;
    }

    /// <summary>Returns the pooled arrays.</summary>
    public void Dispose()
    {
        var chunks = Interlocked.Exchange(ref _chunks, null);
        var keys = Interlocked.Exchange(ref _keys, null);
        if (chunks is not null)
        {
            ArrayPool<TokenChunk>.Shared.Return(chunks);
        }
        if (keys is not null)
        {
            ArrayPool<CacheEngineKey>.Shared.Return(keys, clearArray: true);
        }
    }

    private static T[] Live<T>(T[]? array) => array ?? throw new ObjectDisposedException(nameof(PreparedRequest));
}
