using System.Runtime.InteropServices;

namespace LMCache.Engine.Adapters;

/// <summary>
/// A KV cache in host memory with the layout inference runtimes use per layer — keys and values each
/// <c>[kv_heads, capacity_tokens, head_dim]</c> (ONNX Runtime's <c>present.N.key/value</c> without the batch axis) —
/// and the conversion to and from LMCache's token-major <c>KV_2LTD</c> chunks.
/// </summary>
/// <remarks>
/// Used by the demo, the benchmarks and tests, and as the reference for engine adapters: converting is a strided copy
/// of <c>head_dim</c>-element rows per (K/V, layer, head, token).
/// </remarks>
public sealed class HostKvCache : IKvCacheAdapter
{
    private readonly byte[][] _planes;   // [layer * 2 + kv] → kv_heads × capacity × head_dim elements
    private readonly int _itemSize;
    private readonly int _rowBytes;

    /// <summary>Creates an empty cache for <paramref name="capacityTokens"/> tokens.</summary>
    public HostKvCache(KvLayout layout, int capacityTokens)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacityTokens, 1);
        Layout = layout;
        CapacityTokens = capacityTokens;
        _itemSize = Core.Memory.KvDTypes.ItemSize(layout.DType);
        _rowBytes = layout.HeadDim * _itemSize;
        _planes = new byte[layout.NumLayers * 2][];
        for (var i = 0; i < _planes.Length; i++)
        {
            _planes[i] = new byte[(long)layout.NumKvHeads * capacityTokens * _rowBytes];
        }
    }

    /// <summary>The KV geometry.</summary>
    public KvLayout Layout { get; }

    /// <summary>Tokens the cache can hold.</summary>
    public int CapacityTokens { get; }

    /// <summary>The bytes of one layer's keys (<paramref name="kv"/> 0) or values (1), <c>[kv_heads, capacity, head_dim]</c>.</summary>
    public Span<byte> Plane(int layer, int kv) => _planes[(layer * 2) + kv];

    /// <summary>Fills tokens <c>[start, start+count)</c> with values derived from (<paramref name="seed"/>, layer, kv, head, token): a stand-in for a model's prefill.</summary>
    public void FillDeterministic(int start, int count, int seed)
    {
        for (var plane = 0; plane < _planes.Length; plane++)
        {
            for (var head = 0; head < Layout.NumKvHeads; head++)
            {
                for (var token = start; token < start + count; token++)
                {
                    var row = Row(plane, head, token);
                    var state = (uint)HashCode.Combine(seed, plane, head, token) | 1u;
                    foreach (ref var value in MemoryMarshal.Cast<byte, uint>(row[..(row.Length & ~3)]))
                    {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        value = state;
                    }
                }
            }
        }
    }

    /// <summary>True when tokens <c>[start, start+count)</c> hold the same bytes in both caches.</summary>
    public bool SameTokens(HostKvCache other, int start, int count)
    {
        ArgumentNullException.ThrowIfNull(other);
        for (var plane = 0; plane < _planes.Length; plane++)
        {
            for (var head = 0; head < Layout.NumKvHeads; head++)
            {
                for (var token = start; token < start + count; token++)
                {
                    if (!Row(plane, head, token).SequenceEqual(other.Row(plane, head, token)))
                    {
                        return false;
                    }
                }
            }
        }
        return true;
    }

    /// <inheritdoc />
    public void CopyToChunk(int start, int count, Span<byte> chunk)
    {
        CheckRange(start, count);
        var tokenBytes = Layout.NumKvHeads * _rowBytes;
        for (var kv = 0; kv < 2; kv++)
        {
            for (var layer = 0; layer < Layout.NumLayers; layer++)
            {
                var plane = (layer * 2) + kv;
                var block = chunk.Slice(((kv * Layout.NumLayers) + layer) * count * tokenBytes, count * tokenBytes);
                for (var t = 0; t < count; t++)
                {
                    for (var head = 0; head < Layout.NumKvHeads; head++)
                    {
                        Row(plane, head, start + t).CopyTo(block.Slice((t * tokenBytes) + (head * _rowBytes), _rowBytes));
                    }
                }
            }
        }
    }

    /// <inheritdoc />
    public void CopyFromChunk(int start, int chunkTokens, int count, ReadOnlySpan<byte> chunk)
    {
        CheckRange(start, count);
        var tokenBytes = Layout.NumKvHeads * _rowBytes;
        for (var kv = 0; kv < 2; kv++)
        {
            for (var layer = 0; layer < Layout.NumLayers; layer++)
            {
                var plane = (layer * 2) + kv;
                var block = chunk.Slice(((kv * Layout.NumLayers) + layer) * chunkTokens * tokenBytes, chunkTokens * tokenBytes);
                for (var t = 0; t < count; t++)
                {
                    for (var head = 0; head < Layout.NumKvHeads; head++)
                    {
                        block.Slice((t * tokenBytes) + (head * _rowBytes), _rowBytes).CopyTo(Row(plane, head, start + t));
                    }
                }
            }
        }
    }

    private Span<byte> Row(int plane, int head, int token) =>
        _planes[plane].AsSpan((int)((((long)head * CapacityTokens) + token) * _rowBytes), _rowBytes);

    private void CheckRange(int start, int count)
    {
        if (start < 0 || count < 0 || start + count > CapacityTokens)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"Tokens [{start}, {start + count}) exceed the cache's {CapacityTokens} tokens.");
        }
    }
}
