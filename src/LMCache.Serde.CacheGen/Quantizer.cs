using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using LMCache.Core.Memory;

namespace LMCache.Serde.CacheGen;

/// <summary>
/// Per-token symmetric quantization exactly as LMCache's cachegen computes it: with <c>M = B/2 − 1</c> and
/// <c>m = max|x|</c> taken in the KV dtype, <c>q = round_half_even(fl32(fl32(x · fl32(M / m)) + M))</c> (two separately
/// rounded float32 operations, never fused); an all-zero row gives symbol 0 everywhere. Dequantization is
/// <c>y = fl32(fl32(fl32(q − M) / M) · m)</c> narrowed to the KV dtype with round-to-nearest-even.
/// </summary>
/// <remarks>
/// Each operation has a plain scalar <c>…Reference</c> form and a vectorized form; tests check they agree bit for bit.
/// Scales travel as the raw bits of the KV dtype (16 bits for bf16/fp16, 32 for fp32) so they are stored unchanged.
/// Non-finite inputs are rejected (the reference's symbols are undefined for them): the row's quantize call returns false.
/// </remarks>
internal static class Quantizer
{
    /// <summary><c>M = floor(B/2) − 1</c> as float32.</summary>
    public static float Levels(int bins) => (bins / 2) - 1;

    /// <summary>Float32 value of KV-dtype scale bits.</summary>
    public static float ScaleToSingle(KvDType dtype, uint bits) => dtype switch
    {
        KvDType.BFloat16 => KvBits.BFloat16ToSingle((ushort)bits),
        KvDType.Float16 => KvBits.HalfToSingle((ushort)bits),
        _ => BitConverter.UInt32BitsToSingle(bits),
    };

    /// <summary>True when the KV-dtype scale bits are a finite, non-negative value.</summary>
    public static bool IsValidScale(KvDType dtype, uint bits) => dtype switch
    {
        KvDType.BFloat16 => bits < 0x7F80u,
        KvDType.Float16 => bits < 0x7C00u,
        _ => bits < 0x7F800000u,
    };

    // ----------------------------------------------------------------------------------------------------------------
    // Reference (scalar) path

    /// <summary>Quantizes one row of <c>C</c> elements (raw little-endian bytes of <paramref name="dtype"/>).</summary>
    public static bool QuantizeRowReference(KvDType dtype, ReadOnlySpan<byte> row, int bins, Span<byte> symbols, out uint scaleBits)
    {
        var count = symbols.Length;
        uint maxAbs = 0;
        for (var i = 0; i < count; i++)
        {
            maxAbs = Math.Max(maxAbs, AbsBits(dtype, row, i));
        }
        scaleBits = maxAbs;
        if (!IsValidScale(dtype, maxAbs))
        {
            return false;
        }
        if (maxAbs == 0)
        {
            symbols.Clear();
            return true;
        }
        var levels = Levels(bins);
        var m = ScaleToSingle(dtype, maxAbs);
        var f = levels / m;
        for (var i = 0; i < count; i++)
        {
            var x = Element(dtype, row, i);
            var scaled = x * f;
            var shifted = scaled + levels;
            symbols[i] = (byte)Math.Clamp((int)MathF.Round(shifted), 0, 2 * (int)levels);
        }
        return true;
    }

    /// <summary>Dequantizes one row into raw little-endian bytes of <paramref name="dtype"/>.</summary>
    public static void DequantizeRowReference(KvDType dtype, ReadOnlySpan<byte> symbols, int bins, uint scaleBits, Span<byte> row)
    {
        var levels = Levels(bins);
        var m = ScaleToSingle(dtype, scaleBits);
        for (var i = 0; i < symbols.Length; i++)
        {
            var centered = symbols[i] - levels;
            var unit = centered / levels;
            var y = unit * m;
            switch (dtype)
            {
                case KvDType.BFloat16:
                    MemoryMarshal.Write(row[(2 * i)..], KvBits.SingleToBFloat16(y));
                    break;
                case KvDType.Float16:
                    MemoryMarshal.Write(row[(2 * i)..], KvBits.SingleToHalf(y));
                    break;
                default:
                    MemoryMarshal.Write(row[(4 * i)..], y);
                    break;
            }
        }
    }

    private static uint AbsBits(KvDType dtype, ReadOnlySpan<byte> row, int i) => dtype switch
    {
        KvDType.BFloat16 or KvDType.Float16 => MemoryMarshal.Read<ushort>(row[(2 * i)..]) & 0x7FFFu,
        _ => MemoryMarshal.Read<uint>(row[(4 * i)..]) & 0x7FFFFFFFu,
    };

    private static float Element(KvDType dtype, ReadOnlySpan<byte> row, int i) => dtype switch
    {
        KvDType.BFloat16 => KvBits.BFloat16ToSingle(MemoryMarshal.Read<ushort>(row[(2 * i)..])),
        KvDType.Float16 => KvBits.HalfToSingle(MemoryMarshal.Read<ushort>(row[(2 * i)..])),
        _ => MemoryMarshal.Read<float>(row[(4 * i)..]),
    };

    // ----------------------------------------------------------------------------------------------------------------
    // Fast (vectorized) path

    /// <summary>Vectorized <see cref="QuantizeRowReference"/>; identical output.</summary>
    public static bool QuantizeRow(KvDType dtype, ReadOnlySpan<byte> row, int bins, Span<byte> symbols, out uint scaleBits)
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            return QuantizeRowReference(dtype, row, bins, symbols, out scaleBits);
        }
        var count = symbols.Length;
        var maxAbs = dtype == KvDType.Float32
            ? MaxAbs32(MemoryMarshal.Cast<byte, uint>(row)[..count])
            : MaxAbs16(MemoryMarshal.Cast<byte, ushort>(row)[..count]);
        scaleBits = maxAbs;
        if (!IsValidScale(dtype, maxAbs))
        {
            return false;
        }
        if (maxAbs == 0)
        {
            symbols.Clear();
            return true;
        }
        var levels = Levels(bins);
        var f = levels / ScaleToSingle(dtype, maxAbs);
        var fv = Vector256.Create(f);
        var lv = Vector256.Create(levels);
        var i = 0;
        ref var dst = ref MemoryMarshal.GetReference(symbols);
        switch (dtype)
        {
            case KvDType.Float32:
                {
                    ref var src = ref MemoryMarshal.GetReference(MemoryMarshal.Cast<byte, float>(row));
                    for (; i + 32 <= count; i += 32)
                    {
                        Store32(
                            Quantize8(Vector256.LoadUnsafe(ref src, (nuint)i), fv, lv),
                            Quantize8(Vector256.LoadUnsafe(ref src, (nuint)(i + 8)), fv, lv),
                            Quantize8(Vector256.LoadUnsafe(ref src, (nuint)(i + 16)), fv, lv),
                            Quantize8(Vector256.LoadUnsafe(ref src, (nuint)(i + 24)), fv, lv),
                            ref Unsafe.Add(ref dst, i));
                    }
                    break;
                }
            default:
                {
                    ref var src = ref MemoryMarshal.GetReference(MemoryMarshal.Cast<byte, ushort>(row));
                    var half = dtype == KvDType.Float16;
                    for (; i + 32 <= count; i += 32)
                    {
                        var (a, b) = Widen16(Vector256.LoadUnsafe(ref src, (nuint)i), half);
                        var (c, d) = Widen16(Vector256.LoadUnsafe(ref src, (nuint)(i + 16)), half);
                        Store32(Quantize8(a, fv, lv), Quantize8(b, fv, lv), Quantize8(c, fv, lv), Quantize8(d, fv, lv), ref Unsafe.Add(ref dst, i));
                    }
                    break;
                }
        }
        var top = 2 * (int)levels;
        for (; i < count; i++)
        {
            var x = Element(dtype, row, i);
            var scaled = x * f;
            var shifted = scaled + levels;
            symbols[i] = (byte)Math.Clamp((int)MathF.Round(shifted), 0, top);
        }
        return true;
    }

    /// <summary>Vectorized <see cref="DequantizeRowReference"/>; identical output.</summary>
    public static void DequantizeRow(KvDType dtype, ReadOnlySpan<byte> symbols, int bins, uint scaleBits, Span<byte> row)
    {
        if (!Vector256.IsHardwareAccelerated || dtype == KvDType.Float16)
        {
            // fp16 narrowing has no vector form here; the framework's (Half) conversion is exact RNE but scalar.
            DequantizeRowReference(dtype, symbols, bins, scaleBits, row);
            return;
        }
        var count = symbols.Length;
        var levels = Levels(bins);
        var m = ScaleToSingle(dtype, scaleBits);
        var lv = Vector256.Create(levels);
        var mv = Vector256.Create(m);
        ref var src = ref MemoryMarshal.GetReference(symbols);
        var i = 0;
        if (dtype == KvDType.Float32)
        {
            ref var dst = ref MemoryMarshal.GetReference(MemoryMarshal.Cast<byte, float>(row));
            for (; i + 32 <= count; i += 32)
            {
                var (a, b, c, d) = Load32(ref Unsafe.Add(ref src, i));
                Dequantize8(a, lv, mv).StoreUnsafe(ref dst, (nuint)i);
                Dequantize8(b, lv, mv).StoreUnsafe(ref dst, (nuint)(i + 8));
                Dequantize8(c, lv, mv).StoreUnsafe(ref dst, (nuint)(i + 16));
                Dequantize8(d, lv, mv).StoreUnsafe(ref dst, (nuint)(i + 24));
            }
        }
        else
        {
            ref var dst = ref MemoryMarshal.GetReference(MemoryMarshal.Cast<byte, ushort>(row));
            for (; i + 32 <= count; i += 32)
            {
                var (a, b, c, d) = Load32(ref Unsafe.Add(ref src, i));
                Vector256.Narrow(ToBFloat16(Dequantize8(a, lv, mv)), ToBFloat16(Dequantize8(b, lv, mv))).StoreUnsafe(ref dst, (nuint)i);
                Vector256.Narrow(ToBFloat16(Dequantize8(c, lv, mv)), ToBFloat16(Dequantize8(d, lv, mv))).StoreUnsafe(ref dst, (nuint)(i + 16));
            }
        }
        if (i < count)
        {
            var width = dtype.ItemSize();
            DequantizeRowReference(dtype, symbols[i..], bins, scaleBits, row[(i * width)..]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Quantize8(Vector256<float> x, Vector256<float> f, Vector256<float> levels)
    {
        var scaled = Vector256.Multiply(x, f);
        var shifted = Vector256.Add(scaled, levels);
        return Vector256.ConvertToInt32(Vector256.Round(shifted));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Dequantize8(Vector256<int> q, Vector256<float> levels, Vector256<float> m)
    {
        var centered = Vector256.Subtract(Vector256.ConvertToSingle(q), levels);
        var unit = Vector256.Divide(centered, levels);
        return Vector256.Multiply(unit, m);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> ToBFloat16(Vector256<float> y)
    {
        var bits = y.AsUInt32();
        var rounding = Vector256.Add(Vector256.Create(0x7FFFu), Vector256.BitwiseAnd(Vector256.ShiftRightLogical(bits, 16), Vector256<uint>.One));
        return Vector256.ShiftRightLogical(Vector256.Add(bits, rounding), 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store32(Vector256<int> a, Vector256<int> b, Vector256<int> c, Vector256<int> d, ref byte destination)
    {
        var ab = Vector256.Narrow(a, b);
        var cd = Vector256.Narrow(c, d);
        Vector256.Narrow(ab, cd).AsByte().StoreUnsafe(ref destination);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<int>, Vector256<int>, Vector256<int>, Vector256<int>) Load32(ref byte source)
    {
        var bytes = Vector256.LoadUnsafe(ref source);
        var (lo, hi) = Vector256.Widen(bytes);
        var (a, b) = Vector256.Widen(lo);
        var (c, d) = Vector256.Widen(hi);
        return (a.AsInt32(), b.AsInt32(), c.AsInt32(), d.AsInt32());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<float>, Vector256<float>) Widen16(Vector256<ushort> v, bool half)
    {
        var (lo, hi) = Vector256.Widen(v);
        return half ? (HalfToSingle(lo), HalfToSingle(hi)) : (Vector256.ShiftLeft(lo, 16).AsSingle(), Vector256.ShiftLeft(hi, 16).AsSingle());
    }

    /// <summary>Exact float16 → float32 for finite values: magnitude bits moved into float position, times 2^112.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> HalfToSingle(Vector256<uint> h)
    {
        var magnitude = Vector256.ShiftLeft(Vector256.BitwiseAnd(h, Vector256.Create(0x7FFFu)), 13).AsSingle();
        var scaled = Vector256.Multiply(magnitude, Vector256.Create(5.192296858534828e33f)); // 2^112
        var sign = Vector256.ShiftLeft(Vector256.BitwiseAnd(h, Vector256.Create(0x8000u)), 16);
        return Vector256.BitwiseOr(scaled.AsUInt32(), sign).AsSingle();
    }

    private static uint MaxAbs16(ReadOnlySpan<ushort> values)
    {
        var mask = Vector256.Create((ushort)0x7FFF);
        var acc = Vector256<ushort>.Zero;
        var i = 0;
        ref var src = ref MemoryMarshal.GetReference(values);
        for (; i + 16 <= values.Length; i += 16)
        {
            acc = Vector256.Max(acc, Vector256.BitwiseAnd(Vector256.LoadUnsafe(ref src, (nuint)i), mask));
        }
        uint max = 0;
        for (var lane = 0; lane < Vector256<ushort>.Count; lane++)
        {
            max = Math.Max(max, acc.GetElement(lane));
        }
        for (; i < values.Length; i++)
        {
            max = Math.Max(max, values[i] & 0x7FFFu);
        }
        return max;
    }

    private static uint MaxAbs32(ReadOnlySpan<uint> values)
    {
        var mask = Vector256.Create(0x7FFFFFFFu);
        var acc = Vector256<uint>.Zero;
        var i = 0;
        ref var src = ref MemoryMarshal.GetReference(values);
        for (; i + 8 <= values.Length; i += 8)
        {
            acc = Vector256.Max(acc, Vector256.BitwiseAnd(Vector256.LoadUnsafe(ref src, (nuint)i), mask));
        }
        uint max = 0;
        for (var lane = 0; lane < Vector256<uint>.Count; lane++)
        {
            max = Math.Max(max, acc.GetElement(lane));
        }
        for (; i < values.Length; i++)
        {
            max = Math.Max(max, values[i] & 0x7FFFFFFFu);
        }
        return max;
    }
}
