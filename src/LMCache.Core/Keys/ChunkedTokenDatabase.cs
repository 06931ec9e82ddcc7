namespace LMCache.Core.Keys;

/// <summary>One chunk of a token sequence: tokens <c>[Start, End)</c> and its prefix-chained hash.</summary>
/// <param name="Start">Index of the first token.</param>
/// <param name="End">One past the last token.</param>
/// <param name="Hash">The chunk's hash, chained over every token before <paramref name="End"/>.</param>
public readonly record struct TokenChunk(int Start, int End, ChunkHash Hash)
{
    /// <summary>Number of tokens in the chunk.</summary>
    public int Length => End - Start;
}

/// <summary>
/// Splits token sequences into <c>chunk_size</c> chunks and hashes them with a prefix chain (the original's
/// <c>ChunkedTokenDatabase</c>).
/// </summary>
/// <remarks>
/// Chunk <c>i</c> covers tokens <c>[i·C, min((i+1)·C, n))</c>. With <c>save_unfull_chunk = false</c> the sequence is
/// first truncated to a multiple of C, so a trailing partial chunk never gets a key. The optional cache salt enters
/// the first chunk's hash, so tenants with different salts never share a key.
/// </remarks>
public sealed class ChunkedTokenDatabase
{
    /// <summary>Creates a database.</summary>
    /// <param name="chunkSize">Tokens per chunk (<c>chunk_size</c>), positive.</param>
    /// <param name="saveUnfullChunk">Whether a trailing partial chunk gets a key (<c>save_unfull_chunk</c>).</param>
    /// <param name="hasher">The chunk hash.</param>
    public ChunkedTokenDatabase(int chunkSize, bool saveUnfullChunk, IChunkHasher hasher)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkSize, 1);
        ArgumentNullException.ThrowIfNull(hasher);
        ChunkSize = chunkSize;
        SaveUnfullChunk = saveUnfullChunk;
        Hasher = hasher;
    }

    /// <summary>Tokens per chunk.</summary>
    public int ChunkSize { get; }

    /// <summary>Whether a trailing partial chunk gets a key.</summary>
    public bool SaveUnfullChunk { get; }

    /// <summary>The hash function.</summary>
    public IChunkHasher Hasher { get; }

    /// <summary>Number of tokens that can have keys: all of them, or the whole-chunk prefix.</summary>
    public int KeyedTokenCount(int tokenCount) => SaveUnfullChunk ? tokenCount : tokenCount - (tokenCount % ChunkSize);

    /// <summary>Number of chunks <c>GetChunks</c> yields for <paramref name="tokenCount"/> tokens (before skipping).</summary>
    public int ChunkCount(int tokenCount) => (KeyedTokenCount(tokenCount) + ChunkSize - 1) / ChunkSize;

    /// <summary>
    /// Writes the chunks of <paramref name="tokens"/> into <paramref name="destination"/> and returns how many were written.
    /// </summary>
    /// <param name="tokens">The token ids.</param>
    /// <param name="destination">At least <see cref="ChunkCount"/> entries.</param>
    /// <param name="cacheSalt">Optional tenant salt; it enters the first chunk's hash.</param>
    /// <param name="skipLeadingTokens">
    /// Tokens the caller already has (the original's mask of leading <c>False</c>): a multiple of the chunk size;
    /// chunks before it are hashed (the chain needs them) but not written.
    /// </param>
    public int GetChunks(ReadOnlySpan<int> tokens, Span<TokenChunk> destination, string? cacheSalt = null, int skipLeadingTokens = 0)
    {
        if (skipLeadingTokens < 0 || skipLeadingTokens % ChunkSize != 0)
        {
            throw new ArgumentException(
                $"The number of leading tokens to skip ({skipLeadingTokens}) must be a non-negative multiple of chunk_size {ChunkSize}.",
                nameof(skipLeadingTokens));
        }
        var keyed = KeyedTokenCount(tokens.Length);
        var previous = Hasher.InitialHash;
        var count = 0;
        for (var start = 0; start < keyed; start += ChunkSize)
        {
            var end = Math.Min(start + ChunkSize, keyed);
            previous = Hasher.Hash(previous, tokens[start..end], start == 0 ? cacheSalt : null);
            if (start >= skipLeadingTokens)
            {
                destination[count++] = new TokenChunk(start, end, previous);
            }
        }
        return count;
    }

    /// <summary>Convenience overload that allocates the result array.</summary>
    public TokenChunk[] GetChunks(ReadOnlySpan<int> tokens, string? cacheSalt = null)
    {
        var result = new TokenChunk[ChunkCount(tokens.Length)];
        var count = GetChunks(tokens, result, cacheSalt);
        return count == result.Length ? result : result[..count];
    }
}
