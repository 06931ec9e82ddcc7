using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LMCache.Serde.CacheGen;

/// <summary>
/// The portable decoder: <see cref="Vector128Lanes"/> streams, one per 32-bit lane of .NET's cross-platform
/// <see cref="Vector128{T}"/> (SSE4 on x86-64, NEON on Arm64), with no instruction-set-specific intrinsics.
/// </summary>
internal static partial class ArithmeticCoder
{
    /// <summary>Streams decoded together by <see cref="DecodeVector128"/>.</summary>
    public const int Vector128Lanes = 4;

    /// <summary>Whether <see cref="DecodeVector128"/> runs on vector hardware here (it is correct everywhere).</summary>
    public static bool Vector128Supported => Vector128.IsHardwareAccelerated;

    private const ulong DoubleMagicBits = 0x4330000000000000UL; // 2^52 as a double's bits
    private const double DoubleMagic = 4503599627370496.0;      // 2^52

    /// <summary>
    /// Decodes <see cref="Vector128Lanes"/> streams of <paramref name="count"/> (1..<see cref="WideMaxCount"/>) symbols
    /// at once with portable 128-bit vectors; same contract and same symbols as <see cref="DecodeAvx2"/>.
    /// </summary>
    /// <remarks>
    /// The portable API has no gathers and no per-lane shift counts, so: the target division runs in two 2-lane double
    /// vectors (unsigned 32-bit to double and back through the 2^52 bit pattern, exact); shifts by a lane's count n ≤ 17
    /// are multiplications by 2^n, built as a float's exponent; leading zeros come from a float conversion as in the AVX2
    /// decoder; each lane's symbol bounds and next bits are read with scalar loads.
    /// </remarks>
    [SkipLocalsInit]
    public static unsafe void DecodeVector128(ReadOnlySpan<byte> data, ReadOnlySpan<int> starts, ReadOnlySpan<int> lengths, ReadOnlySpan<ushort> cdf, int lp, Span<byte> symbols, int stride, int count)
    {
        const int lanes = Vector128Lanes;
        if (count is <= 0 or > WideMaxCount || lp is < 3 or > CacheGenBins.MaxBins + 1 || cdf.Length < lanes * lp
            || starts.Length < lanes || lengths.Length < lanes || stride < lanes
            || symbols.Length < ((count - 1) * stride) + lanes)
        {
            throw new ArgumentException("The symbol buffer, the tables or the stream list do not fit the request.", nameof(symbols));
        }

        var slot = (MaxStreamBytes(count) + 16 + 63) & ~63;
        var buffer = stackalloc byte[lanes * slot];
        new Span<byte>(buffer, lanes * slot).Clear();
        for (var k = 0; k < lanes; k++)
        {
            var length = Math.Min(lengths[k], slot);
            data.Slice(starts[k], length).CopyTo(new Span<byte>(buffer + (k * slot), length));
        }

        // search[(j − 1)·4 + k] = cdf_k[j] for j = 1 .. Lp − 2; bounds[k·Lp + j] = cdf_k[j], with 65536 at j = Lp − 1
        // (the upper bound of the top symbol).
        var top = lp - 2;
        var search = stackalloc int[top * lanes];
        var bounds = stackalloc uint[lanes * lp];
        for (var k = 0; k < lanes; k++)
        {
            for (var j = 0; j < lp - 1; j++)
            {
                bounds[(k * lp) + j] = cdf[(k * lp) + j];
            }
            bounds[(k * lp) + lp - 1] = 65536;
            for (var j = 1; j <= top; j++)
            {
                search[((j - 1) * lanes) + k] = cdf[(k * lp) + j];
            }
        }

        var half = Vector128.Create(0x80000000u);
        var lowMask = Vector128.Create(0x7FFFFFFFu);
        var mask16 = Vector128.Create(0xFFFFu);
        var magicBits = Vector128.Create(DoubleMagicBits);
        var magic = Vector128.Create(DoubleMagic);
        var scaleUp = Vector128.Create(65536.0);
        var roundUp = Vector128.Create(65535.0);
        var oneD = Vector128.Create(1.0);
        var topLanes = Vector128.Create(top);

        // Bit positions (absolute in the buffer), one per lane, kept in scalars: the bit reads are scalar.
        var p0 = 32L;
        var p1 = 32L + (slot * 8L);
        var p2 = 32L + (2L * slot * 8);
        var p3 = 32L + (3L * slot * 8);
        var value = Vector128.Create(
            BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(buffer, 4)),
            BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(buffer + slot, 4)),
            BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(buffer + (2 * slot), 4)),
            BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(buffer + (3 * slot), 4)));
        var low = Vector128<uint>.Zero;
        var high = Vector128<uint>.AllBitsSet;
        var last = count - 1;
        fixed (byte* output = symbols)
        {
            for (var i = 0; ; i++)
            {
                var range = high - low;
                var (dLo, dHi) = Vector128.Widen(value - low);
                var (rLo64, rHi64) = Vector128.Widen(range);
                var qLo = Vector128.Floor(((ToDouble(dLo, magicBits, magic) * scaleUp) + roundUp) / (ToDouble(rLo64, magicBits, magic) + oneD));
                var qHi = Vector128.Floor(((ToDouble(dHi, magicBits, magic) * scaleUp) + roundUp) / (ToDouble(rHi64, magicBits, magic) + oneD));
                var target = Vector128.Narrow((qLo + magic).AsUInt64(), (qHi + magic).AsUInt64()).AsInt32() & mask16.AsInt32();

                var above0 = Vector128<int>.Zero;
                var above1 = Vector128<int>.Zero;
                var entry = search;
                var j = 0;
                for (; j + 2 <= top; j += 2, entry += 2 * lanes)
                {
                    above0 += Vector128.GreaterThan(Vector128.Load(entry), target);
                    above1 += Vector128.GreaterThan(Vector128.Load(entry + lanes), target);
                }
                if (j < top)
                {
                    above0 += Vector128.GreaterThan(Vector128.Load(entry), target);
                }
                var s = topLanes + above0 + above1;
                var s0 = s.GetElement(0);
                var s1 = s.GetElement(1);
                var s2 = s.GetElement(2);
                var s3 = s.GetElement(3);
                var row = output + ((nint)i * stride);
                row[0] = (byte)s0;
                row[1] = (byte)s1;
                row[2] = (byte)s2;
                row[3] = (byte)s3;
                if (i == last)
                {
                    break;
                }

                var cLow = Vector128.Create(bounds[s0], bounds[lp + s1], bounds[(2 * lp) + s2], bounds[(3 * lp) + s3]);
                var cHigh = Vector128.Create(bounds[s0 + 1], bounds[lp + s1 + 1], bounds[(2 * lp) + s2 + 1], bounds[(3 * lp) + s3 + 1]);
                var rHi = range >> 16;
                var rLo = range & mask16;
                var pHigh = rLo * cHigh;
                var pLow = rLo * cLow;
                var xHigh = (rHi * cHigh) + (pHigh >> 16) + (((pHigh & mask16) + cHigh) >> 16);
                var xLow = (rHi * cLow) + (pLow >> 16) + (((pLow & mask16) + cLow) >> 16);
                high = low + xHigh - Vector128<uint>.One;
                low += xLow;

                var k1 = LeadingZeroCount4(low ^ high);
                var shift1 = PowerOfTwo4(k1);
                var low1 = low * shift1;
                var high1 = (high * shift1) | (shift1 - Vector128<uint>.One);
                var k3 = Vector128.Min(LeadingZeroCount4(~(low1 << 1)), LeadingZeroCount4(high1 << 1));
                var n = k1 + k3;
                var shift = PowerOfTwo4(n);
                var n0 = (int)n.GetElement(0);
                var n1 = (int)n.GetElement(1);
                var n2 = (int)n.GetElement(2);
                var n3 = (int)n.GetElement(3);
                var bits = Vector128.Create(ReadBits(buffer, p0, n0), ReadBits(buffer, p1, n1), ReadBits(buffer, p2, n2), ReadBits(buffer, p3, n3));
                p0 += n0;
                p1 += n1;
                p2 += n2;
                p3 += n3;
                value = ((value * shift1) & half) | (((value * shift) | bits) & lowMask);
                low = (low * shift) & lowMask;
                high = (high * shift) | (shift - Vector128<uint>.One) | half;
            }
        }
    }

    /// <summary>The <paramref name="count"/> (0..17) bits at bit <paramref name="position"/> of the buffer, MSB-first.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe uint ReadBits(byte* buffer, long position, int count)
    {
        var word = BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(buffer + (position >> 3), 4)) << (int)(position & 7);
        return (uint)((ulong)word >> (32 - count));
    }

    /// <summary>Unsigned integers below 2^52 as doubles, exactly: the bits of 2^52 + x, minus 2^52.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<double> ToDouble(Vector128<ulong> x, Vector128<ulong> magicBits, Vector128<double> magic) =>
        (x | magicBits).AsDouble() - magic;

    /// <summary>2^n per lane for n in 0..30: a float with exponent n, converted to an integer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<uint> PowerOfTwo4(Vector128<uint> n) =>
        Vector128.ConvertToInt32(((n + Vector128.Create(127u)) << 23).AsSingle()).AsUInt32();

    /// <summary>Leading zeros of each lane (32 for 0); see <see cref="LeadingZeroCount8"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<uint> LeadingZeroCount4(Vector128<uint> x)
    {
        var y = x >> 1;
        y &= ~(y >> 1);
        var exponent = Vector128.ConvertToSingle(y.AsInt32()).AsUInt32() >> 23;
        return Vector128.Min(Vector128.Create(157u) - exponent, Vector128.Create(32u) - (x & Vector128<uint>.One));
    }
}
