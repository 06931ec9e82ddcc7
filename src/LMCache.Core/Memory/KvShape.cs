using System.Runtime.CompilerServices;

namespace LMCache.Core.Memory;

/// <summary>
/// A tensor shape of at most four dimensions, as carried by LMCache's metadata (unused trailing dimensions are 0).
/// </summary>
/// <param name="D0">First dimension.</param>
/// <param name="D1">Second dimension (0 when absent).</param>
/// <param name="D2">Third dimension (0 when absent).</param>
/// <param name="D3">Fourth dimension (0 when absent).</param>
public readonly record struct KvShape(int D0, int D1, int D2, int D3)
{
    /// <summary>Shape of a <see cref="MemoryFormat.KV2LTD"/> chunk: <c>[2, layers, tokens, hidden]</c>.</summary>
    public static KvShape Kv2Ltd(int layers, int tokens, int hidden) => new(2, layers, tokens, hidden);

    /// <summary>Shape of an opaque buffer of <paramref name="bytes"/> bytes: <c>[bytes, 0, 0, 0]</c>.</summary>
    public static KvShape Bytes(int bytes) => new(bytes, 0, 0, 0);

    /// <summary>Number of elements: the product of the non-zero leading dimensions.</summary>
    public long ElementCount
    {
        get
        {
            long n = D0;
            if (D1 != 0) { n *= D1; }
            if (D2 != 0) { n *= D2; }
            if (D3 != 0) { n *= D3; }
            return n;
        }
    }

    /// <summary>Dimension <paramref name="index"/> (0..3).</summary>
    public int this[int index] => index switch
    {
        0 => D0,
        1 => D1,
        2 => D2,
        3 => D3,
        _ => throw new ArgumentOutOfRangeException(nameof(index)),
    };

    /// <summary>True when every dimension is non-negative and the first is positive.</summary>
    public bool IsValid => D0 > 0 && D1 >= 0 && D2 >= 0 && D3 >= 0;

    /// <summary>Renders like a Python list: <c>[2, 32, 256, 1024]</c>.</summary>
    public override string ToString() => $"[{D0}, {D1}, {D2}, {D3}]";

    /// <summary>Parses <c>2x32x256x1024</c> or <c>2,32,256,1024</c>.</summary>
    public static bool TryParse(string text, out KvShape shape)
    {
        shape = default;
        var parts = text.Split(['x', ',', 'X'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length is 0 or > 4)
        {
            return false;
        }
        Span<int> dims = stackalloc int[4];
        dims.Clear();   // the module skips locals init; dimensions not given must read as 0
        for (var i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], out dims[i]) || dims[i] < 0)
            {
                return false;
            }
        }
        shape = new KvShape(dims[0], dims[1], dims[2], dims[3]);
        return shape.IsValid;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal long ByteLength(KvDType dtype) => ElementCount * dtype.ItemSize();
}
