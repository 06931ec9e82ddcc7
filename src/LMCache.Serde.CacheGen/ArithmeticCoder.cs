using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace LMCache.Serde.CacheGen;

/// <summary>
/// The torchac / Mark Nelson binary arithmetic coder as LMCache's cachegen kernels run it: 32-bit <c>low</c>/<c>high</c>,
/// 16-bit cumulative frequencies (<see cref="Cdf"/>), a pending-bit counter, bits written MSB-first, the last byte
/// zero-padded. One call codes one independent stream of symbols read (or written) with a stride, so a stream over
/// one channel can be coded straight out of a <c>[tokens, channels]</c> symbol matrix.
/// </summary>
/// <remarks>
/// The <c>…Reference</c> methods follow the state machine one bit at a time (cases E1/E2/E3 of the guide); the fast
/// methods batch runs of E1/E2 and E3 with leading-zero counts and search symbols with vector compares. Both produce
/// identical bytes and symbols. The decoder never reads outside <c>stream</c>: bits past its end read as zero, so a
/// damaged stream decodes to wrong symbols (caught by the container checksum), never to an out-of-range access.
/// </remarks>
internal static partial class ArithmeticCoder
{
    private const uint Half = 0x80000000u;
    private const uint Quarter = 0x40000000u;
    private const uint ThreeQuarters = 0xC0000000u;

    /// <summary>
    /// An upper bound on a stream's size: after renormalization the span is at least 2^30, a symbol keeps at least
    /// 1/65536 of it, so a symbol costs at most 17 bits; termination adds 2 bits plus pending ones.
    /// </summary>
    public static int MaxStreamBytes(int count) => ((17 * count) + 7) / 8 + 8;

    // ----------------------------------------------------------------------------------------------------------------
    // Encoder

    /// <summary>Encodes <paramref name="count"/> symbols <c>symbols[i·stride]</c> with table <paramref name="cdf"/> (Lp entries).</summary>
    /// <returns>The stream length in bytes.</returns>
    public static int Encode(ReadOnlySpan<byte> symbols, int stride, int count, ReadOnlySpan<ushort> cdf, Span<byte> output)
    {
        var top = cdf.Length - 2;
        uint low = 0;
        var high = uint.MaxValue;
        long pending = 0;
        var writer = new BitWriter(output);
        ref var cdfRef = ref MemoryMarshal.GetReference(cdf);
        for (var i = 0; i < count; i++)
        {
            var s = symbols[i * stride];
            var span = (ulong)(high - low) + 1;
            ulong cLow = Unsafe.Add(ref cdfRef, s);
            var cHigh = s == top ? 65536ul : Unsafe.Add(ref cdfRef, s + 1);
            high = (uint)(low + ((span * cHigh) >> 16) - 1);
            low = (uint)(low + ((span * cLow) >> 16));

            // E1/E2: the k leading bits low and high share are final. With p pending bits the output is the first
            // of them, p opposite bits, then the other k − 1: as one number of k + p bits that is
            // bits + (2^p − 1)·2^(k−1). Written without branches while it fits one put.
            // (Whether k is 0 is well predicted both for low-entropy data, where it mostly is, and for high-entropy data.)
            var k = BitOperations.LeadingZeroCount(low ^ high);
            if (k != 0)
            {
                if (pending + k <= 32)
                {
                    writer.Put((low >> (32 - k)) + (uint)(((1ul << (int)pending) - 1) << (k - 1)), k + (int)pending);
                }
                else
                {
                    var bits = low >> (32 - k);
                    var first = bits >> (k - 1);
                    writer.Put(first, 1);
                    writer.PutRepeated(first ^ 1, pending);
                    if (k > 1)
                    {
                        writer.Put(bits & ((1u << (k - 1)) - 1), k - 1);
                    }
                }
                pending = 0;
                low <<= k;
                high = (high << k) | ((1u << k) - 1);
            }

            // E3 (k3 may be 0: then the shifts change nothing, and the top bits are already low 0, high 1).
            var k3 = Math.Min(BitOperations.LeadingZeroCount(~(low << 1)), BitOperations.LeadingZeroCount(high << 1));
            pending += k3;
            low = (low << k3) & 0x7FFFFFFFu;
            high = (high << k3) | Half | ((1u << k3) - 1);
        }
        pending++;
        var last = low < Quarter ? 0u : 1u;
        writer.Put(last, 1);
        writer.PutRepeated(last ^ 1, pending);
        return writer.Finish();
    }

    /// <summary>The bit-at-a-time encoder (the guide's table, literally). Same output as <see cref="Encode"/>.</summary>
    public static int EncodeReference(ReadOnlySpan<byte> symbols, int stride, int count, ReadOnlySpan<ushort> cdf, Span<byte> output)
    {
        var top = cdf.Length - 2;
        uint low = 0;
        var high = uint.MaxValue;
        long pending = 0;
        long bitCount = 0;
        output.Clear();

        void Emit(uint bit, Span<byte> o)
        {
            if (bit != 0)
            {
                o[(int)(bitCount >> 3)] |= (byte)(0x80 >> (int)(bitCount & 7));
            }
            bitCount++;
        }

        for (var i = 0; i < count; i++)
        {
            var s = symbols[i * stride];
            var span = (ulong)(high - low) + 1;
            ulong cLow = cdf[s];
            var cHigh = s == top ? 65536ul : cdf[s + 1];
            high = (uint)(low + ((span * cHigh) >> 16) - 1);
            low = (uint)(low + ((span * cLow) >> 16));
            while (true)
            {
                if (high < Half)
                {
                    Emit(0, output);
                    for (; pending > 0; pending--)
                    {
                        Emit(1, output);
                    }
                    low <<= 1;
                    high = (high << 1) | 1;
                }
                else if (low >= Half)
                {
                    Emit(1, output);
                    for (; pending > 0; pending--)
                    {
                        Emit(0, output);
                    }
                    low <<= 1;
                    high = (high << 1) | 1;
                }
                else if (low >= Quarter && high < ThreeQuarters)
                {
                    pending++;
                    low = (low << 1) & 0x7FFFFFFFu;
                    high = (high << 1) | 0x80000001u;
                }
                else
                {
                    break;
                }
            }
        }
        pending++;
        var last = low < Quarter ? 0u : 1u;
        Emit(last, output);
        for (; pending > 0; pending--)
        {
            Emit(last ^ 1, output);
        }
        return (int)((bitCount + 7) >> 3);
    }

    // ----------------------------------------------------------------------------------------------------------------
    // Decoder

    /// <summary>Decodes <paramref name="count"/> symbols of <paramref name="stream"/> into <c>symbols[i·stride]</c>.</summary>
    public static void Decode(ReadOnlySpan<byte> stream, ReadOnlySpan<ushort> cdf, Span<byte> symbols, int stride, int count)
    {
        var lp = cdf.Length;
        if (lp > 33 || !Vector256.IsHardwareAccelerated)
        {
            DecodeScalarSearch(stream, cdf, symbols, stride, count);
            return;
        }
        // Entries cdf[1 .. Lp-2] in 32 lanes; lanes beyond them are masked off.
        Span<ushort> padded = stackalloc ushort[32];
        padded.Fill(ushort.MaxValue);
        cdf[1..(lp - 1)].CopyTo(padded);
        var valid = lp - 2;
        var v0 = Vector256.Create<ushort>(padded[..16]);
        var v1 = Vector256.Create<ushort>(padded[16..]);
        var mask0 = valid >= 16 ? 0xFFFFu : (1u << valid) - 1;
        var mask1 = valid >= 32 ? 0xFFFFu : valid <= 16 ? 0u : (1u << (valid - 16)) - 1;
        var top = lp - 2;
        ref var cdfRef = ref MemoryMarshal.GetReference(cdf);

        var reader = new BitReader(stream);
        var value = reader.Initial;
        uint low = 0;
        var high = uint.MaxValue;
        for (var i = 0; i < count; i++)
        {
            var span = (ulong)(high - low) + 1;
            var target = (ushort)(((((ulong)(value - low)) + 1) * 65536 - 1) / span);
            var t = Vector256.Create(target);
            var s = BitOperations.PopCount(Vector256.LessThanOrEqual(v0, t).ExtractMostSignificantBits() & mask0)
                + BitOperations.PopCount(Vector256.LessThanOrEqual(v1, t).ExtractMostSignificantBits() & mask1);
            symbols[i * stride] = (byte)s;
            if (i == count - 1)
            {
                break;
            }
            ulong cLow = Unsafe.Add(ref cdfRef, s);
            var cHigh = s == top ? 65536ul : Unsafe.Add(ref cdfRef, s + 1);
            high = (uint)(low + ((span * cHigh) >> 16) - 1);
            low = (uint)(low + ((span * cLow) >> 16));
            Renormalize(ref low, ref high, ref value, ref reader);
        }
    }

    /// <summary>Streams decoded in lockstep by <see cref="DecodeInterleaved"/>.</summary>
    public const int Lanes = 4;

    /// <summary>
    /// Decodes <see cref="Lanes"/> streams of <paramref name="count"/> symbols in lockstep: stream k is
    /// <c>data[starts[k] .. starts[k] + lengths[k])</c>, uses table <c>cdf[k·Lp .. (k+1)·Lp)</c> and writes
    /// <c>symbols[k + i·stride]</c>. Interleaving independent streams lets the CPU overlap their dependency chains
    /// (the 64-bit division above all); the output equals <see cref="Decode"/> stream by stream. Requires Lp ≤ 33.
    /// </summary>
    public static void DecodeInterleaved(ReadOnlySpan<byte> data, ReadOnlySpan<int> starts, ReadOnlySpan<int> lengths, ReadOnlySpan<ushort> cdf, int lp, Span<byte> symbols, int stride, int count)
    {
        if (lp > 33 || !Vector256.IsHardwareAccelerated)
        {
            for (var k = 0; k < Lanes; k++)
            {
                DecodeScalarSearch(data.Slice(starts[k], lengths[k]), cdf.Slice(k * lp, lp), symbols[k..], stride, count);
            }
            return;
        }
        if (count <= 0 || symbols.Length < ((count - 1) * stride) + Lanes || starts.Length < Lanes || lengths.Length < Lanes)
        {
            throw new ArgumentException("The symbol buffer or the stream list is too small.", nameof(symbols));
        }
        Span<ushort> padded = stackalloc ushort[32 * Lanes];
        padded.Fill(ushort.MaxValue);
        for (var k = 0; k < Lanes; k++)
        {
            cdf.Slice((k * lp) + 1, lp - 2).CopyTo(padded[(k * 32)..]);
        }
        var valid = lp - 2;
        var mask0 = valid >= 16 ? 0xFFFFu : (1u << valid) - 1;
        var mask1 = valid >= 32 ? 0xFFFFu : valid <= 16 ? 0u : (1u << (valid - 16)) - 1;
        var a0 = Vector256.Create<ushort>(padded[..16]);
        var a1 = Vector256.Create<ushort>(padded[16..32]);
        var b0 = Vector256.Create<ushort>(padded[32..48]);
        var b1 = Vector256.Create<ushort>(padded[48..64]);
        var c0 = Vector256.Create<ushort>(padded[64..80]);
        var c1 = Vector256.Create<ushort>(padded[80..96]);
        var d0 = Vector256.Create<ushort>(padded[96..112]);
        var d1 = Vector256.Create<ushort>(padded[112..128]);
        ref var cdfRef = ref MemoryMarshal.GetReference(cdf);
        var la = new Lane(data, starts[0], lengths[0]);
        var lb = new Lane(data, starts[1], lengths[1]);
        var lc = new Lane(data, starts[2], lengths[2]);
        var ld = new Lane(data, starts[3], lengths[3]);
        var top = lp - 2;
        var last = count - 1;
        ref var output = ref MemoryMarshal.GetReference(symbols);
        for (var i = 0; i < count; i++)
        {
            ref var row = ref Unsafe.Add(ref output, i * stride);
            row = la.Step(data, a0, a1, mask0, mask1, ref cdfRef, top, i == last);
            Unsafe.Add(ref row, 1) = lb.Step(data, b0, b1, mask0, mask1, ref Unsafe.Add(ref cdfRef, lp), top, i == last);
            Unsafe.Add(ref row, 2) = lc.Step(data, c0, c1, mask0, mask1, ref Unsafe.Add(ref cdfRef, 2 * lp), top, i == last);
            Unsafe.Add(ref row, 3) = ld.Step(data, d0, d1, mask0, mask1, ref Unsafe.Add(ref cdfRef, 3 * lp), top, i == last);
        }
    }

    /// <summary>One stream's decoder state inside <see cref="DecodeInterleaved"/> (reads bytes [start, end) of the shared data).</summary>
    private struct Lane
    {
        private uint _low;
        private uint _high;
        private uint _value;
        private ulong _buffer;
        private int _bits;
        private int _next;
        private readonly int _end;

        public Lane(ReadOnlySpan<byte> data, int start, int length)
        {
            _low = 0;
            _high = uint.MaxValue;
            _next = start;
            _end = start + length;
            _buffer = 0;
            _bits = 0;
            Refill(data);
            _value = (uint)(_buffer >> 32);
            _buffer <<= 32;
            _bits -= 32;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public byte Step(ReadOnlySpan<byte> data, Vector256<ushort> v0, Vector256<ushort> v1, uint mask0, uint mask1, ref ushort cdf, int top, bool last)
        {
            var span = (ulong)(_high - _low) + 1;
            var target = (ushort)(((((ulong)(_value - _low)) + 1) * 65536 - 1) / span);
            var t = Vector256.Create(target);
            var s = BitOperations.PopCount(Vector256.LessThanOrEqual(v0, t).ExtractMostSignificantBits() & mask0)
                + BitOperations.PopCount(Vector256.LessThanOrEqual(v1, t).ExtractMostSignificantBits() & mask1);
            if (last)
            {
                return (byte)s;
            }
            ulong cLow = Unsafe.Add(ref cdf, s);
            var cHigh = s == top ? 65536ul : Unsafe.Add(ref cdf, s + 1);
            _high = (uint)(_low + ((span * cHigh) >> 16) - 1);
            _low = (uint)(_low + ((span * cLow) >> 16));
            var common = _low ^ _high;
            if ((common & Half) == 0)
            {
                var k = BitOperations.LeadingZeroCount(common);
                _low <<= k;
                _high = (_high << k) | ((1u << k) - 1);
                _value = (_value << k) | Read(data, k);
            }
            var k3 = Math.Min(BitOperations.LeadingZeroCount(~(_low << 1)), BitOperations.LeadingZeroCount(_high << 1));
            if (k3 > 0)
            {
                _low = (_low << k3) & 0x7FFFFFFFu;
                _high = (_high << k3) | Half | ((1u << k3) - 1);
                _value = (_value & Half) | ((_value << k3) & 0x7FFFFFFFu) | Read(data, k3);
            }
            return (byte)s;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private uint Read(ReadOnlySpan<byte> data, int count)
        {
            if (_bits < 32)
            {
                Refill(data);
            }
            var result = (uint)(_buffer >> (64 - count)) & (uint)((1ul << count) - 1);
            _buffer <<= count;
            _bits -= count;
            return result;
        }

        private void Refill(ReadOnlySpan<byte> data)
        {
            while (_bits <= 56)
            {
                ulong b = _next < _end ? data[_next] : 0u;
                _next++;
                _buffer |= b << (56 - _bits);
                _bits += 8;
            }
        }
    }

    /// <summary>
    /// <see cref="Decode"/> without vector instructions (a binary search for the symbol): the decoder of
    /// <see cref="LMCache.Core.Simd.SimdPath.Scalar"/>. Same symbols.
    /// </summary>
    public static void DecodeScalar(ReadOnlySpan<byte> stream, ReadOnlySpan<ushort> cdf, Span<byte> symbols, int stride, int count) =>
        DecodeScalarSearch(stream, cdf, symbols, stride, count);

    private static void DecodeScalarSearch(ReadOnlySpan<byte> stream, ReadOnlySpan<ushort> cdf, Span<byte> symbols, int stride, int count)
    {
        var top = cdf.Length - 2;
        var reader = new BitReader(stream);
        var value = reader.Initial;
        uint low = 0;
        var high = uint.MaxValue;
        for (var i = 0; i < count; i++)
        {
            var span = (ulong)(high - low) + 1;
            var target = (ushort)(((((ulong)(value - low)) + 1) * 65536 - 1) / span);
            var s = Search(cdf, target);
            symbols[i * stride] = (byte)s;
            if (i == count - 1)
            {
                break;
            }
            ulong cLow = cdf[s];
            var cHigh = s == top ? 65536ul : cdf[s + 1];
            high = (uint)(low + ((span * cHigh) >> 16) - 1);
            low = (uint)(low + ((span * cLow) >> 16));
            Renormalize(ref low, ref high, ref value, ref reader);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Renormalize(ref uint low, ref uint high, ref uint value, ref BitReader reader)
    {
        var common = low ^ high;
        if ((common & Half) == 0)
        {
            var k = BitOperations.LeadingZeroCount(common);
            low <<= k;
            high = (high << k) | ((1u << k) - 1);
            value = (value << k) | reader.Read(k);
        }
        var k3 = Math.Min(BitOperations.LeadingZeroCount(~(low << 1)), BitOperations.LeadingZeroCount(high << 1));
        if (k3 > 0)
        {
            low = (low << k3) & 0x7FFFFFFFu;
            high = (high << k3) | Half | ((1u << k3) - 1);
            value = (value & Half) | ((value << k3) & 0x7FFFFFFFu) | reader.Read(k3);
        }
    }

    /// <summary>The reference's binary search: the largest s in [0, Lp−2] with cdf[s] ≤ target (cdf[Lp−1] never probed).</summary>
    private static int Search(ReadOnlySpan<ushort> cdf, ushort target)
    {
        var left = 0;
        var right = cdf.Length - 1;
        while (left + 1 < right)
        {
            var mid = (left + right) >> 1;
            if (cdf[mid] > target)
            {
                right = mid;
            }
            else
            {
                left = mid;
            }
        }
        return left;
    }

    /// <summary>The bit-at-a-time decoder of the guide. Same symbols as <see cref="Decode"/>.</summary>
    public static void DecodeReference(ReadOnlySpan<byte> stream, ReadOnlySpan<ushort> cdf, Span<byte> symbols, int stride, int count)
    {
        var top = cdf.Length - 2;
        long bitPosition = 32;
        uint value = 0;
        for (var b = 0; b < 4; b++)
        {
            value = (value << 8) | (b < stream.Length ? stream[b] : 0u);
        }
        uint NextBit(ReadOnlySpan<byte> s)
        {
            var index = bitPosition >> 3;
            var bit = index < s.Length ? (uint)(s[(int)index] >> (7 - (int)(bitPosition & 7))) & 1u : 0u;
            bitPosition++;
            return bit;
        }

        uint low = 0;
        var high = uint.MaxValue;
        for (var i = 0; i < count; i++)
        {
            var span = (ulong)(high - low) + 1;
            var target = (ushort)(((((ulong)(value - low)) + 1) * 65536 - 1) / span);
            var s = 0;
            for (var c = 1; c <= top; c++)
            {
                if (cdf[c] <= target)
                {
                    s = c;
                }
            }
            symbols[i * stride] = (byte)s;
            if (i == count - 1)
            {
                break;
            }
            ulong cLow = cdf[s];
            var cHigh = s == top ? 65536ul : cdf[s + 1];
            high = (uint)(low + ((span * cHigh) >> 16) - 1);
            low = (uint)(low + ((span * cLow) >> 16));
            while (true)
            {
                if (low >= Half || high < Half)
                {
                    low <<= 1;
                    high = (high << 1) | 1;
                    value = (value << 1) | NextBit(stream);
                }
                else if (low >= Quarter && high < ThreeQuarters)
                {
                    low = (low << 1) & 0x7FFFFFFFu;
                    high = (high << 1) | 0x80000001u;
                    value = ((value - Quarter) << 1) | NextBit(stream);
                }
                else
                {
                    break;
                }
            }
        }
    }

    /// <summary>Packs bits MSB-first through a 64-bit accumulator, 32 bits at a time.</summary>
    private ref struct BitWriter
    {
        private readonly Span<byte> _output;
        private ulong _accumulator;
        private int _bits;
        private int _position;

        public BitWriter(Span<byte> output)
        {
            _output = output;
        }

        /// <summary>Appends the low <paramref name="count"/> (0..32) bits of <paramref name="bits"/> (no higher bits set).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Put(uint bits, int count)
        {
            _accumulator = (_accumulator << count) | bits;
            _bits += count;
            if (_bits >= 32)
            {
                _bits -= 32;
                BinaryPrimitives.WriteUInt32BigEndian(_output[_position..], (uint)(_accumulator >> _bits));
                _position += 4;
            }
        }

        /// <summary>Appends <paramref name="count"/> copies of <paramref name="bit"/>, in pieces of at most 32 (shift counts are masked in C#).</summary>
        public void PutRepeated(uint bit, long count)
        {
            var pattern = bit != 0 ? uint.MaxValue : 0u;
            while (count >= 32)
            {
                Put(pattern, 32);
                count -= 32;
            }
            if (count > 0)
            {
                Put(pattern >> (32 - (int)count), (int)count);
            }
        }

        /// <summary>Writes the last partial bytes (zero-padded) and returns the stream length.</summary>
        public int Finish()
        {
            if (_bits > 0)
            {
                var rest = (uint)(_accumulator << (32 - _bits));
                var bytes = (_bits + 7) >> 3;
                for (var b = 0; b < bytes; b++)
                {
                    _output[_position++] = (byte)(rest >> (24 - (8 * b)));
                }
                _bits = 0;
            }
            return _position;
        }
    }

    /// <summary>Reads bits MSB-first; bits past the end of the stream read as zero.</summary>
    private ref struct BitReader
    {
        private readonly ReadOnlySpan<byte> _stream;
        private ulong _buffer;
        private int _bits;
        private int _next;

        public BitReader(ReadOnlySpan<byte> stream)
        {
            _stream = stream;
            Refill();
            Initial = (uint)(_buffer >> 32);
            _buffer <<= 32;
            _bits -= 32;
            Refill();
        }

        /// <summary>The first four bytes as a big-endian value.</summary>
        public uint Initial { get; }

        /// <summary>Reads <paramref name="count"/> (0..31) bits.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public uint Read(int count)
        {
            if (_bits < 32)
            {
                Refill();
            }
            var result = (uint)(_buffer >> (64 - count)) & (uint)((1ul << count) - 1);
            _buffer <<= count;
            _bits -= count;
            return result;
        }

        private void Refill()
        {
            while (_bits <= 56)
            {
                ulong b = _next < _stream.Length ? _stream[_next] : 0u;
                _next++;
                _buffer |= b << (56 - _bits);
                _bits += 8;
            }
        }
    }
}
