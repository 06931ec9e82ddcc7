using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LMCache.Serde.CacheGen;

/// <summary>The AVX2 decoder: <see cref="Avx2Lanes"/> independent streams, one per 32-bit lane of a 256-bit vector.</summary>
internal static partial class ArithmeticCoder
{
    /// <summary>Streams decoded together by <see cref="DecodeAvx2"/>.</summary>
    public const int Avx2Lanes = 8;

    /// <summary>Whether <see cref="DecodeAvx2"/> can run here.</summary>
    public static bool Avx2Supported => Avx2.IsSupported;

    /// <summary>
    /// Decodes <see cref="Avx2Lanes"/> streams of <paramref name="count"/> (1..<see cref="WideMaxCount"/>) symbols at
    /// once, the AVX2 sibling of <see cref="DecodeWide"/>: stream k is <c>data[starts[k] .. starts[k] + lengths[k])</c>
    /// with table <c>cdf[k·Lp .. (k+1)·Lp)</c>; symbol i goes to <c>symbols[k + i·stride]</c>. Same symbols as
    /// <see cref="DecodeReference"/> for any bytes and any valid tables (Lp 3..65).
    /// </summary>
    /// <remarks>
    /// What AVX2 lacks is built from what it has: unsigned 32-bit to double goes through the signed conversion with the
    /// sign bit flipped (then 2^31 added back, exactly); the leading-zero count is the exponent of a float conversion of
    /// <c>y &amp; ~(y &gt;&gt; 1)</c>, <c>y = x &gt;&gt; 1</c> (no two adjacent set bits, so rounding never carries into
    /// the exponent); the symbol's bounds <c>cdf[s]</c>, <c>cdf[s + 1]</c> come from one 4-byte gather per lane over the
    /// 16-bit tables. Compares are signed, which is exact because table entries and targets are below 2^16.
    /// </remarks>
    [SkipLocalsInit]
    public static unsafe void DecodeAvx2(ReadOnlySpan<byte> data, ReadOnlySpan<int> starts, ReadOnlySpan<int> lengths, ReadOnlySpan<ushort> cdf, int lp, Span<byte> symbols, int stride, int count)
    {
        const int lanes = Avx2Lanes;
        if (!Avx2.IsSupported)
        {
            throw new PlatformNotSupportedException("The AVX2 decoder needs AVX2.");
        }
        if (count is <= 0 or > WideMaxCount || lp is < 3 or > CacheGenBins.MaxBins + 1 || cdf.Length < lanes * lp
            || starts.Length < lanes || lengths.Length < lanes || stride < lanes
            || symbols.Length < ((count - 1) * stride) + lanes)
        {
            throw new ArgumentException("The symbol buffer, the tables or the stream list do not fit the request.", nameof(symbols));
        }

        // Slots: the stream, then zeros. Reads stay below 4 + ⌈17·(count − 1)/8⌉ + 4 bytes into a slot.
        var slot = (MaxStreamBytes(count) + 16 + 63) & ~63;
        var buffer = stackalloc byte[lanes * slot];
        new Span<byte>(buffer, lanes * slot).Clear();
        for (var k = 0; k < lanes; k++)
        {
            var length = Math.Min(lengths[k], slot);
            data.Slice(starts[k], length).CopyTo(new Span<byte>(buffer + (k * slot), length));
        }

        // search[(j − 1)·8 + k] = cdf_k[j] for j = 1 .. Lp − 2; bounds = the 16-bit tables, back to back (+ 2 spare).
        var top = lp - 2;
        var search = stackalloc int[top * lanes];
        var bounds = stackalloc ushort[(lanes * lp) + 2];
        cdf[..(lanes * lp)].CopyTo(new Span<ushort>(bounds, lanes * lp));
        bounds[lanes * lp] = 0;
        bounds[(lanes * lp) + 1] = 0;
        for (var k = 0; k < lanes; k++)
        {
            for (var j = 1; j <= top; j++)
            {
                search[((j - 1) * lanes) + k] = bounds[(k * lp) + j];
            }
        }

        var byteSwap = Vector256.Create(
            (byte)3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
        // Byte 0 of each 32-bit lane to bytes 0..3 of its 128-bit half.
        var lowBytes = Vector256.Create(
            (byte)0, 4, 8, 12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
            0, 4, 8, 12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80);
        var gatherHalves = Vector256.Create(0, 4, 1, 1, 1, 1, 1, 1);
        var ones = Vector256<uint>.AllBitsSet;
        var half = Vector256.Create(0x80000000u);
        var lowMask = Vector256.Create(0x7FFFFFFFu);
        var mask16 = Vector256.Create(0xFFFFu);
        var full = Vector256.Create(65536u);
        var thirtyTwo = Vector256.Create(32u);
        var seven = Vector256.Create(7u);
        var scaleUp = Vector256.Create(65536.0);
        var numeratorBias = Vector256.Create((2147483648.0 * 65536.0) + 65535.0);
        var spanBias = Vector256.Create(2147483649.0);
        var topLanes = Vector256.Create(top);
        var tableBase = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7) * lp;

        var pos = Vector256.Create(0u, 1, 2, 3, 4, 5, 6, 7) * (uint)(slot * 8);
        var value = Gather8(buffer, pos, byteSwap);
        pos += thirtyTwo;
        var low = Vector256<uint>.Zero;
        var high = ones;
        var last = count - 1;
        fixed (byte* output = symbols)
        {
            for (var i = 0; ; i++)
            {
                // target = ((value − low + 1)·65536 − 1) / (range + 1), in doubles (exact; see DecodeWide).
                var range = high - low;
                var d = ((value - low) ^ half).AsInt32();
                var r = (range ^ half).AsInt32();
                var numLo = (Avx.ConvertToVector256Double(d.GetLower()) * scaleUp) + numeratorBias;
                var numHi = (Avx.ConvertToVector256Double(d.GetUpper()) * scaleUp) + numeratorBias;
                var spanLo = Avx.ConvertToVector256Double(r.GetLower()) + spanBias;
                var spanHi = Avx.ConvertToVector256Double(r.GetUpper()) + spanBias;
                var target = Vector256.Create(
                    Avx.ConvertToVector128Int32WithTruncation(numLo / spanLo),
                    Avx.ConvertToVector128Int32WithTruncation(numHi / spanHi)) & mask16.AsInt32();

                // s = entries ≤ target = top − entries > target (two accumulators halve the add chain).
                var above0 = Vector256<int>.Zero;
                var above1 = Vector256<int>.Zero;
                var entry = search;
                var j = 0;
                for (; j + 2 <= top; j += 2, entry += 2 * lanes)
                {
                    above0 += Avx2.CompareGreaterThan(Avx.LoadVector256(entry), target);
                    above1 += Avx2.CompareGreaterThan(Avx.LoadVector256(entry + lanes), target);
                }
                if (j < top)
                {
                    above0 += Avx2.CompareGreaterThan(Avx.LoadVector256(entry), target);
                }
                var s = topLanes + above0 + above1;
                var packed = Avx2.PermuteVar8x32(Avx2.Shuffle(s.AsByte(), lowBytes).AsInt32(), gatherHalves);
                Unsafe.WriteUnaligned(output + ((nint)i * stride), packed.AsUInt64().ToScalar());
                if (i == last)
                {
                    break;
                }

                var pair = Avx2.GatherVector256((int*)bounds, tableBase + s, 2).AsUInt32();
                var cLow = pair & mask16;
                var cHigh = Avx2.BlendVariable((pair >> 16).AsByte(), full.AsByte(), Avx2.CompareEqual(s, topLanes).AsByte()).AsUInt32();

                // X(c) = floor((range + 1)·c / 65536) with 32-bit lanes: range = rHi·2^16 + rLo, c ≤ 2^16.
                var rHi = range >> 16;
                var rLo = range & mask16;
                var pHigh = rLo * cHigh;
                var pLow = rLo * cLow;
                var xHigh = (rHi * cHigh) + (pHigh >> 16) + (((pHigh & mask16) + cHigh) >> 16);
                var xLow = (rHi * cLow) + (pLow >> 16) + (((pLow & mask16) + cLow) >> 16);
                high = low + xHigh - Vector256<uint>.One;
                low += xLow;

                // E1/E2 shifts k, then E3 shifts k3: n = k + k3 bits in one step.
                var k1 = LeadingZeroCount8(low ^ high);
                var low1 = Avx2.ShiftLeftLogicalVariable(low, k1);
                var high1 = Avx2.ShiftLeftLogicalVariable(high, k1) | ~Avx2.ShiftLeftLogicalVariable(ones, k1);
                var k3 = Vector256.Min(LeadingZeroCount8(~(low1 << 1)), LeadingZeroCount8(high1 << 1));
                var n = k1 + k3;
                var bits = Avx2.ShiftRightLogicalVariable(
                    Avx2.ShiftLeftLogicalVariable(Gather8(buffer, pos, byteSwap), pos & seven), thirtyTwo - n);
                value = (Avx2.ShiftLeftLogicalVariable(value, k1) & half)
                    | ((Avx2.ShiftLeftLogicalVariable(value, n) | bits) & lowMask);
                low = Avx2.ShiftLeftLogicalVariable(low, n) & lowMask;
                high = Avx2.ShiftLeftLogicalVariable(high, n) | ~Avx2.ShiftLeftLogicalVariable(ones, n) | half;
                pos += n;
            }
        }
    }

    /// <summary>The big-endian 32 bits starting at byte <c>position / 8</c> of each lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<uint> Gather8(byte* buffer, Vector256<uint> position, Vector256<byte> byteSwap) =>
        Avx2.Shuffle(Avx2.GatherVector256((int*)buffer, (position >> 3).AsInt32(), 1).AsByte(), byteSwap).AsUInt32();

    /// <summary>
    /// Leading zeros of each lane (32 for 0) without AVX-512 CD: <c>y = x &gt;&gt; 1</c> with every set bit that follows a
    /// set bit cleared converts to a float exactly up to its exponent e (≥ 127 unless y = 0), so the count is
    /// <c>157 − e</c>; for x in {0, 1} (y = 0) it is <c>32 − x</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> LeadingZeroCount8(Vector256<uint> x)
    {
        var y = x >> 1;
        y = Avx2.AndNot(y >> 1, y);
        var exponent = Avx.ConvertToVector256Single(y.AsInt32()).AsUInt32() >> 23;
        return Vector256.Min(Vector256.Create(157u) - exponent, Vector256.Create(32u) - (x & Vector256<uint>.One));
    }
}
