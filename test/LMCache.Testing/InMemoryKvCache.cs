using LMCache.Core.Memory;
using LMCache.Engine;

namespace LMCache.Testing;

/// <summary>
/// An inference engine's KV cache held in managed memory the way ONNX Runtime's present/past tensors hold it: for every
/// layer one key and one value tensor laid out head-major, <c>[kv_heads, tokens, head_dim]</c>. It converts to and from
/// LMCache's <see cref="MemoryFormat.KV2LTD"/> chunks (<c>[2][layers][tokens][kv_heads × head_dim]</c>), so a round trip
/// through the cache exercises a real layout transposition, not a plain copy.
/// </summary>
public sealed class InMemoryKvCache : IKvCacheAdapter
{
    private readonly byte[][] _tensors;   // index kv * layers + layer; each [heads][capacity][headDim] elements
    private readonly bool[] _written;
    private readonly int _itemSize;

    /// <summary>Creates an empty (zeroed) cache of <paramref name="capacityTokens"/> positions.</summary>
    public InMemoryKvCache(KvLayout layout, int capacityTokens)
    {
        ArgumentNullException.ThrowIfNull(layout);
        Layout = layout;
        CapacityTokens = capacityTokens;
        _itemSize = layout.DType.ItemSize();
        _tensors = new byte[2 * layout.NumLayers][];
        for (var i = 0; i < _tensors.Length; i++)
        {
            _tensors[i] = new byte[layout.NumKvHeads * capacityTokens * layout.HeadDim * _itemSize];
        }
        _written = new bool[capacityTokens];
    }

    /// <summary>The model geometry.</summary>
    public KvLayout Layout { get; }

    /// <summary>Positions the cache can hold.</summary>
    public int CapacityTokens { get; }

    /// <summary>Number of <see cref="CopyFromChunk"/> calls (chunks loaded into this cache).</summary>
    public int ChunksLoaded { get; private set; }

    /// <summary>
    /// A cache whose KV for position <c>p</c> is a pseudo-random function of <c>tokens[0..p]</c> (as a model's KV
    /// depends on the whole prefix): prompts that share a prefix have identical KV there and differ after it.
    /// </summary>
    public static InMemoryKvCache ForPrompt(KvLayout layout, ReadOnlySpan<int> tokens)
    {
        var cache = new InMemoryKvCache(layout, tokens.Length);
        ulong prefix = 0xcbf29ce484222325;
        var item = new byte[layout.HeadDim * cache._itemSize];
        for (var position = 0; position < tokens.Length; position++)
        {
            prefix = (prefix ^ (uint)tokens[position]) * 0x100000001b3;
            for (var tensor = 0; tensor < cache._tensors.Length; tensor++)
            {
                for (var head = 0; head < layout.NumKvHeads; head++)
                {
                    var random = new Random(HashCode.Combine(prefix, tensor, head));
                    random.NextBytes(item);
                    item.CopyTo(cache._tensors[tensor].AsSpan(cache.Offset(head, position), item.Length));
                }
            }
            cache._written[position] = true;
        }
        return cache;
    }

    /// <summary>True when positions <c>[0, count)</c> were written, in every layer, head and element, with the same bytes as <paramref name="other"/>.</summary>
    public bool SamePrefix(InMemoryKvCache other, int count)
    {
        ArgumentNullException.ThrowIfNull(other);
        var rowBytes = Layout.HeadDim * _itemSize;
        for (var tensor = 0; tensor < _tensors.Length; tensor++)
        {
            for (var head = 0; head < Layout.NumKvHeads; head++)
            {
                for (var position = 0; position < count; position++)
                {
                    if (!_tensors[tensor].AsSpan(Offset(head, position), rowBytes).SequenceEqual(other._tensors[tensor].AsSpan(other.Offset(head, position), rowBytes)))
                    {
                        return false;
                    }
                }
            }
        }
        return true;
    }

    /// <summary>The bytes of one layer's keys (<paramref name="kv"/> 0) or values (1), <c>[kv_heads, capacity, head_dim]</c>.</summary>
    public Span<byte> Tensor(int layer, int kv) => _tensors[(kv * Layout.NumLayers) + layer];

    /// <summary>Number of positions written by loads (or at construction), counting from 0 until the first gap.</summary>
    public int WrittenPrefix
    {
        get
        {
            var count = 0;
            while (count < _written.Length && _written[count])
            {
                count++;
            }
            return count;
        }
    }

    /// <summary>Whether any position at or after <paramref name="start"/> was written.</summary>
    public bool AnyWrittenFrom(int start) => _written.AsSpan(start).Contains(true);

    /// <inheritdoc />
    public void CopyToChunk(int start, int count, Span<byte> chunk)
    {
        var hidden = Layout.Hidden;
        var rowBytes = Layout.HeadDim * _itemSize;
        var expected = 2L * Layout.NumLayers * count * hidden * _itemSize;
        if (chunk.Length != expected || start < 0 || start + count > CapacityTokens)
        {
            throw new ArgumentException($"chunk of {chunk.Length} bytes for tokens [{start}, {start + count}) does not match {Layout}");
        }
        for (var tensor = 0; tensor < _tensors.Length; tensor++)
        {
            for (var t = 0; t < count; t++)
            {
                for (var head = 0; head < Layout.NumKvHeads; head++)
                {
                    var destination = ((((long)tensor * count) + t) * hidden + (head * Layout.HeadDim)) * _itemSize;
                    _tensors[tensor].AsSpan(Offset(head, start + t), rowBytes).CopyTo(chunk.Slice((int)destination, rowBytes));
                }
            }
        }
    }

    /// <inheritdoc />
    public void CopyFromChunk(int start, int chunkTokens, int count, ReadOnlySpan<byte> chunk)
    {
        var hidden = Layout.Hidden;
        var rowBytes = Layout.HeadDim * _itemSize;
        var expected = 2L * Layout.NumLayers * chunkTokens * hidden * _itemSize;
        if (chunk.Length != expected || count > chunkTokens || start < 0 || start + count > CapacityTokens)
        {
            throw new ArgumentException($"chunk of {chunk.Length} bytes ({chunkTokens} tokens, copy {count} at {start}) does not match {Layout}");
        }
        for (var tensor = 0; tensor < _tensors.Length; tensor++)
        {
            for (var t = 0; t < count; t++)
            {
                for (var head = 0; head < Layout.NumKvHeads; head++)
                {
                    var source = ((((long)tensor * chunkTokens) + t) * hidden + (head * Layout.HeadDim)) * _itemSize;
                    chunk.Slice((int)source, rowBytes).CopyTo(_tensors[tensor].AsSpan(Offset(head, start + t), rowBytes));
                }
                _written[start + t] = true;
            }
        }
        ChunksLoaded++;
    }

    private int Offset(int head, int position) => ((head * CapacityTokens) + position) * Layout.HeadDim * _itemSize;
}
