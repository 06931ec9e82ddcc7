using LMCache.Core.Memory;

namespace LMCache.Engine;

/// <summary>
/// The KV geometry of a model as the cache sees it: chunks are <see cref="MemoryFormat.KV2LTD"/>,
/// <c>[2, NumLayers, tokens, NumKvHeads × HeadDim]</c> in <see cref="DType"/>.
/// </summary>
/// <param name="NumLayers">Transformer layers.</param>
/// <param name="NumKvHeads">Key/value heads per layer.</param>
/// <param name="HeadDim">Size of one head.</param>
/// <param name="DType">Element type of the KV cache.</param>
public sealed record KvLayout(int NumLayers, int NumKvHeads, int HeadDim, KvDType DType)
{
    /// <summary><c>NumKvHeads × HeadDim</c>: one token's keys (or values) of one layer.</summary>
    public int Hidden => NumKvHeads * HeadDim;

    /// <summary>Bytes of KV per token across all layers (keys and values).</summary>
    public long BytesPerToken => 2L * NumLayers * Hidden * DType.ItemSize();

    /// <summary>The metadata of a chunk of <paramref name="tokens"/> tokens.</summary>
    public MemoryObjectMetadata ChunkMetadata(int tokens) => new(KvShape.Kv2Ltd(NumLayers, tokens, Hidden), DType, MemoryFormat.KV2LTD);

    /// <summary>Checks the geometry is usable.</summary>
    public void Validate()
    {
        if (NumLayers < 1 || NumKvHeads < 1 || HeadDim < 1 || DType == KvDType.None)
        {
            throw new ArgumentException($"Invalid KV layout {this}: layers, heads and head size must be positive and the dtype set.");
        }
    }
}

/// <summary>
/// Moves KV between an inference engine's own cache and LMCache chunks (the original's GPU connector role). The engine
/// keeps its layout; the adapter converts to and from <see cref="MemoryFormat.KV2LTD"/>.
/// </summary>
public interface IKvCacheAdapter
{
    /// <summary>
    /// Writes tokens <c>[start, start + count)</c> of the engine's KV into <paramref name="chunk"/>, laid out
    /// <c>[2][layers][count][kv_heads × head_dim]</c> (keys first).
    /// </summary>
    void CopyToChunk(int start, int count, Span<byte> chunk);

    /// <summary>
    /// <paramref name="chunk"/> holds the KV of <paramref name="chunkTokens"/> tokens starting at
    /// <paramref name="start"/> (<c>[2][layers][chunkTokens][hidden]</c>); copies its first <paramref name="count"/>
    /// tokens into the engine at positions <c>start .. start + count - 1</c>.
    /// </summary>
    void CopyFromChunk(int start, int chunkTokens, int count, ReadOnlySpan<byte> chunk);

    /// <summary>
    /// Called by a retrieve that found chunks, once, before its first <see cref="CopyFromChunk"/>: tokens
    /// <c>0 .. <paramref name="tokens"/> - 1</c> are about to be copied in. An engine that allocates its KV per request
    /// sizes it here from what the tiers returned (so a request needs no lookup before its retrieve); one with a fixed
    /// capacity does nothing, which is the default.
    /// </summary>
    void PrepareForRetrieve(int tokens)
    {
    }
}
