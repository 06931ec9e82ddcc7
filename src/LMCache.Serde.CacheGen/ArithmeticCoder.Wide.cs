using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LMCache.Serde.CacheGen;

/// <summary>The AVX-512 decoder: <see cref="WideLanes"/> independent streams, one per 32-bit vector lane.</summary>
internal static partial class ArithmeticCoder
{
    /// <summary>Streams decoded together by <see cref="DecodeWide"/>.</summary>
    public const int WideLanes = 16;

    /// <summary>Most tokens per stream <see cref="DecodeWide"/> takes (its scratch lives on the stack).</summary>
    public const int WideMaxCount = 256;

    /// <summary>Whether <see cref="DecodeWide"/> can run here (AVX-512 F/CD/BW and AVX2 gathers).</summary>
    public static bool WideSupported => Avx512F.IsSupported && Avx512CD.IsSupported && Avx512BW.IsSupported && Avx2.IsSupported;

    /// <summary>
    /// Decodes <see cref="WideLanes"/> streams of <paramref name="count"/> (1..<see cref="WideMaxCount"/>) symbols at
    /// once, lane k holding stream k's whole state (<c>low</c>, <c>high</c>, <c>value</c>, bit position) in one 32-bit
    /// vector lane. Stream k is <c>data[starts[k] .. starts[k] + lengths[k])</c> with table
    /// <c>cdf[k·Lp .. (k+1)·Lp)</c>; symbol i goes to <c>symbols[k + i·stride]</c>. Same symbols as
    /// <see cref="DecodeReference"/> for any bytes and any valid tables (Lp 3..65).
    /// </summary>
    /// <remarks>
    /// Per symbol and lane: the target <c>((value − low + 1)·65536 − 1) / span</c> is one double division (numerator
    /// &lt; 2^48 and span ≤ 2^32 are exact in a double, and a quotient below 2^18 that is not an integer lies at least
    /// 2^−32 below the next one, more than half an ulp, so truncating the rounded quotient gives the exact floor); the
    /// symbol is the count of table entries ≤ target over a lane-transposed table, which also yields its bounds; the
    /// interval update uses 16×16-bit partial products; renormalization shifts by the E1/E2 count plus the E3 count in
    /// one step and reads that many bits (≤ 17, since a span above 2^30 keeps at least 2^14 after a symbol) from a
    /// 4-byte gather. Each stream is first copied into its own zero-padded slot, so bits past its end read as zero and
    /// no read leaves the slot.
    /// </remarks>
    [SkipLocalsInit]
    public static unsafe void DecodeWide(ReadOnlySpan<byte> data, ReadOnlySpan<int> starts, ReadOnlySpan<int> lengths, ReadOnlySpan<ushort> cdf, int lp, Span<byte> symbols, int stride, int count)
    {
        if (!WideSupported)
        {
            throw new PlatformNotSupportedException("The wide decoder needs AVX-512 F, CD and BW.");
        }
        if (count is <= 0 or > WideMaxCount || lp is < 3 or > CacheGenBins.MaxBins + 1 || cdf.Length < WideLanes * lp
            || starts.Length < WideLanes || lengths.Length < WideLanes || stride < WideLanes
            || symbols.Length < ((count - 1) * stride) + WideLanes)
        {
            throw new ArgumentException("The symbol buffer, the tables or the stream list do not fit the request.", nameof(symbols));
        }

        // Slots: the stream, then zeros. Reads stay below 4 + ⌈17·(count − 1)/8⌉ + 4 bytes into a slot.
        var slot = (MaxStreamBytes(count) + 16 + 63) & ~63;
        var buffer = stackalloc byte[WideLanes * slot];
        new Span<byte>(buffer, WideLanes * slot).Clear();
        for (var k = 0; k < WideLanes; k++)
        {
            var length = Math.Min(lengths[k], slot);
            data.Slice(starts[k], length).CopyTo(new Span<byte>(buffer + (k * slot), length));
        }

        // table[(j − 1)·16 + k] = cdf_k[j] for j = 1 .. Lp − 2.
        var top = lp - 2;
        var table = stackalloc uint[top * WideLanes];
        for (var k = 0; k < WideLanes; k++)
        {
            var row = cdf.Slice(k * lp, lp);
            for (var j = 1; j <= top; j++)
            {
                table[((j - 1) * WideLanes) + k] = row[j];
            }
        }

        var byteSwap = Vector512.Create(
            (byte)3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
        var ones = Vector512<uint>.AllBitsSet;
        var half = Vector512.Create(0x80000000u);
        var lowMask = Vector512.Create(0x7FFFFFFFu);
        var mask16 = Vector512.Create(0xFFFFu);
        var full = Vector512.Create(65536u);
        var thirtyTwo = Vector512.Create(32u);
        var seven = Vector512.Create(7u);
        var scaleUp = Vector512.Create(65536.0);
        var roundUp = Vector512.Create(65535.0);
        var oneD = Vector512.Create(1.0);

        var pos = Vector512.Create(0u, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) * (uint)(slot * 8);
        var value = Gather(buffer, pos, byteSwap);
        pos += thirtyTwo;
        var low = Vector512<uint>.Zero;
        var high = ones;
        var last = count - 1;
        fixed (byte* output = symbols)
        {
            for (var i = 0; ; i++)
            {
                var range = high - low;
                var d = value - low;
                var numLo = (Avx512F.ConvertToVector512Double(d.GetLower()) * scaleUp) + roundUp;
                var numHi = (Avx512F.ConvertToVector512Double(d.GetUpper()) * scaleUp) + roundUp;
                var spanLo = Avx512F.ConvertToVector512Double(range.GetLower()) + oneD;
                var spanHi = Avx512F.ConvertToVector512Double(range.GetUpper()) + oneD;
                var target = Vector512.Create(
                    Avx512F.ConvertToVector256UInt32WithTruncation(numLo / spanLo),
                    Avx512F.ConvertToVector256UInt32WithTruncation(numHi / spanHi)) & mask16;

                var s = Vector512<uint>.Zero;
                var cLow = Vector512<uint>.Zero;
                var cHigh = full;
                var entry = table;
                for (var j = 0; j < top; j++, entry += WideLanes)
                {
                    var c = Vector512.Load(entry);
                    var m = Vector512.LessThanOrEqual(c, target);
                    s -= m;
                    cLow = Vector512.Max(cLow, c & m);
                    cHigh = Vector512.Min(cHigh, c | m);
                }
                Avx512F.ConvertToVector128Byte(s).Store(output + ((nint)i * stride));
                if (i == last)
                {
                    break;
                }

                // X(c) = floor((range + 1)·c / 65536) with 32-bit lanes: range = rHi·2^16 + rLo, c ≤ 2^16.
                var rHi = range >> 16;
                var rLo = range & mask16;
                var pHigh = rLo * cHigh;
                var pLow = rLo * cLow;
                var xHigh = (rHi * cHigh) + (pHigh >> 16) + (((pHigh & mask16) + cHigh) >> 16);
                var xLow = (rHi * cLow) + (pLow >> 16) + (((pLow & mask16) + cLow) >> 16);
                high = low + xHigh - Vector512<uint>.One;
                low += xLow;

                // E1/E2 shifts k, then E3 shifts k3: n = k + k3 bits in one step.
                var k1 = Avx512CD.LeadingZeroCount(low ^ high);
                var low1 = Avx512F.ShiftLeftLogicalVariable(low, k1);
                var high1 = Avx512F.ShiftLeftLogicalVariable(high, k1) | ~Avx512F.ShiftLeftLogicalVariable(ones, k1);
                var k3 = Vector512.Min(Avx512CD.LeadingZeroCount(~(low1 << 1)), Avx512CD.LeadingZeroCount(high1 << 1));
                var n = k1 + k3;
                var bits = Avx512F.ShiftRightLogicalVariable(
                    Avx512F.ShiftLeftLogicalVariable(Gather(buffer, pos, byteSwap), pos & seven), thirtyTwo - n);
                value = (Avx512F.ShiftLeftLogicalVariable(value, k1) & half)
                    | ((Avx512F.ShiftLeftLogicalVariable(value, n) | bits) & lowMask);
                low = Avx512F.ShiftLeftLogicalVariable(low, n) & lowMask;
                high = Avx512F.ShiftLeftLogicalVariable(high, n) | ~Avx512F.ShiftLeftLogicalVariable(ones, n) | half;
                pos += n;
            }
        }
    }

    /// <summary>The big-endian 32 bits starting at byte <c>position / 8</c> of each lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector512<uint> Gather(byte* buffer, Vector512<uint> position, Vector512<byte> byteSwap)
    {
        var index = (position >> 3).AsInt32();
        var lower = Avx2.GatherVector256((int*)buffer, index.GetLower(), 1);
        var upper = Avx2.GatherVector256((int*)buffer, index.GetUpper(), 1);
        return Avx512BW.Shuffle(Vector512.Create(lower, upper).AsByte(), byteSwap).AsUInt32();
    }
}
