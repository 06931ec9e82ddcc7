namespace LMCache.Core.Keys;

/// <summary>Computes prefix-chained chunk hashes. Implementations are deterministic across processes and machines.</summary>
public interface IChunkHasher
{
    /// <summary>The configuration name of the algorithm (<c>pre_caching_hash_algorithm</c>).</summary>
    string Name { get; }

    /// <summary>The hash that precedes the first chunk (the original's <c>NONE_HASH</c>).</summary>
    ChunkHash InitialHash { get; }

    /// <summary>
    /// Hashes one chunk: <c>H((previous, tokens))</c>, or <c>H((previous, tokens, (extra,)))</c> when
    /// <paramref name="extraKey"/> is given (the cache salt enters the first chunk this way).
    /// </summary>
    ChunkHash Hash(in ChunkHash previous, ReadOnlySpan<int> tokens, string? extraKey = null);
}
