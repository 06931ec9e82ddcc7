using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace LMCache.Serde.CacheGen;

/// <summary>
/// The container's compact side information (format version 2): token scales, symbol counts and stream lengths as
/// adaptive Rice codes in one MSB-first bit string. Lossless: the decoder rebuilds exactly the values the encoder had,
/// so the CDFs rebuilt from the counts are bit-identical to the encoder's.
/// </summary>
/// <remarks>
/// <para><b>Rice(v, k)</b>: with <c>q = v &gt;&gt; k</c>, when <c>q &lt; 32</c>: q one-bits, a zero-bit, then the low
/// k bits of v; otherwise 32 one-bits then v in 32 bits (an escape that bounds every code at 64 bits).</para>
/// <para><b>Series</b> (scales of one row over its tokens; stream lengths of one row over its channels): the first
/// value raw in <c>width</c> bits, then each value as <c>Rice(zigzag(v − previous), k)</c> with
/// <c>k = min(31, max(0, bitlength(e) − 1))</c> of a running mean <c>e</c> (starting at 16, then <c>e ← (3e + z) / 4</c>).</para>
/// <para><b>Counts</b> of one (row, channel) over an alphabet of A used symbols (the quantizer's <c>2M + 1</c>) and N
/// tokens: <c>c_0 .. c_{A−2}</c> as <c>Rice(c_i, k_i)</c>, <c>k_i = max(0, bitlength(m_i) − 1)</c> with
/// <c>m_0 = N / A</c>, <c>m_1 = c_0</c>, <c>m_i = (c_{i−1} + c_{i−2} + 1) / 2</c>; <c>c_{A−1} = N − Σ</c>; counts of
/// symbols ≥ A are zero (the quantizer never produces them).</para>
/// </remarks>
internal static class SideInfo
{
    private const int EscapeOnes = 32;
    private const ulong SeriesStart = 16;

    /// <summary>Used symbols of a row quantized with <paramref name="bins"/> bins (<c>2M + 1</c>).</summary>
    public static int Alphabet(int bins) => (2 * ((bins / 2) - 1)) + 1;

    private static int K(ulong mean) => mean == 0 ? 0 : Math.Min(31, BitOperations.Log2(mean));

    private static uint Zigzag(long delta) => (uint)(delta >= 0 ? 2 * delta : (-2 * delta) - 1);

    private static long Unzigzag(uint z) => (z & 1) == 0 ? z >> 1 : -(((long)z + 1) >> 1);

    public static void WriteSeries(ref Writer writer, ReadOnlySpan<uint> values, int width)
    {
        // A local copy (all calls on it inlined) keeps the writer's state in registers through the loop.
        var local = writer;
        local.Put(values[0], width);
        var ema = SeriesStart;
        for (var i = 1; i < values.Length; i++)
        {
            var z = Zigzag((long)values[i] - values[i - 1]);
            local.Rice(z, K(ema));
            ema = ((3 * ema) + z) >> 2;
        }
        writer = local;
    }

    /// <summary>Reads a series; false when a value does not fit in <paramref name="width"/> bits.</summary>
    public static bool ReadSeries(ref Reader reader, scoped Span<uint> values, int width)
    {
        var local = reader;
        values[0] = local.Get(width);
        var ema = SeriesStart;
        var limit = width == 32 ? uint.MaxValue : (1ul << width) - 1;
        var ok = true;
        for (var i = 1; i < values.Length; i++)
        {
            var z = local.Rice(K(ema));
            var v = values[i - 1] + Unzigzag(z);
            if (v < 0 || (ulong)v > limit)
            {
                ok = false;
                break;
            }
            values[i] = (uint)v;
            ema = ((3 * ema) + z) >> 2;
        }
        reader = local;
        return ok;
    }

    public static void WriteCounts(ref Writer writer, ReadOnlySpan<uint> counts, int alphabet, uint tokens)
    {
        var local = writer;
        uint previous = 0, before = 0;
        for (var i = 0; i < alphabet - 1; i++)
        {
            var mean = i == 0 ? tokens / (uint)alphabet : i == 1 ? previous : (uint)(((ulong)previous + before + 1) >> 1);
            local.Rice(counts[i], K(mean));
            before = previous;
            previous = counts[i];
        }
        writer = local;
    }

    /// <summary>Reads one channel's counts into <paramref name="counts"/> (all maxBins entries); false when they do not sum to <paramref name="tokens"/>.</summary>
    public static bool ReadCounts(ref Reader reader, scoped Span<uint> counts, int alphabet, uint tokens)
    {
        // A local copy (all calls on it inlined) keeps the reader's state in registers through the loop.
        var local = reader;
        counts.Clear();
        uint previous = 0, before = 0;
        ulong sum = 0;
        var ok = true;
        for (var i = 0; i < alphabet - 1; i++)
        {
            var mean = i == 0 ? tokens / (uint)alphabet : i == 1 ? previous : (uint)(((ulong)previous + before + 1) >> 1);
            var c = local.Rice(K(mean));
            sum += c;
            if (sum > tokens)
            {
                ok = false;
                break;
            }
            counts[i] = c;
            before = previous;
            previous = c;
        }
        if (ok)
        {
            counts[alphabet - 1] = tokens - (uint)sum;
        }
        reader = local;
        return ok;
    }

    /// <summary>An MSB-first bit writer into a pooled, growing buffer.</summary>
    public struct Writer : IDisposable
    {
        private byte[] _buffer;
        private int _position;
        private ulong _accumulator;
        private int _bits;

        public Writer(int capacity)
        {
            _buffer = ArrayPool<byte>.Shared.Rent(Math.Max(64, capacity));
        }

        /// <summary>Bytes written so far (after <see cref="Finish"/>: the whole, zero-padded section).</summary>
        public readonly ReadOnlySpan<byte> Written => _buffer.AsSpan(0, _position);

        /// <summary>Appends the low <paramref name="count"/> (0..32) bits of <paramref name="value"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Put(uint value, int count)
        {
            // Fewer than 32 bits are pending before a put, so at most 63 after it.
            _accumulator = (_accumulator << count) | (value & (uint)((1ul << count) - 1));
            _bits += count;
            if (_bits >= 32)
            {
                _bits -= 32;
                if (_position + 4 > _buffer.Length)
                {
                    _buffer = Grow(_buffer, _position);
                }
                BinaryPrimitives.WriteUInt32BigEndian(_buffer.AsSpan(_position), (uint)(_accumulator >> _bits));
                _position += 4;
            }
        }

        private static byte[] Grow(byte[] buffer, int used)
        {
            var larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
            buffer.AsSpan(0, used).CopyTo(larger);
            ArrayPool<byte>.Shared.Return(buffer);
            return larger;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Rice(uint value, int k)
        {
            var q = value >> k;
            if (q + (uint)k < 31)
            {
                // Quotient ones, the stop zero and the remainder in one put.
                var n = (int)q + 1 + k;
                Put((uint)(((1ul << ((int)q + 1)) - 2) << k) | (value & (uint)((1ul << k) - 1)), n);
            }
            else if (q < EscapeOnes)
            {
                Put((uint)((1ul << ((int)q + 1)) - 2), (int)q + 1);
                Put(value, k);
            }
            else
            {
                Put(uint.MaxValue, EscapeOnes);
                Put(value, 32);
            }
        }

        /// <summary>Writes what is pending, the last byte padded with zero bits.</summary>
        public void Finish()
        {
            if (_bits % 8 != 0)
            {
                Put(0, 8 - (_bits % 8));
            }
            while (_bits >= 8)
            {
                _bits -= 8;
                if (_position + 1 > _buffer.Length)
                {
                    _buffer = Grow(_buffer, _position);
                }
                _buffer[_position++] = (byte)(_accumulator >> _bits);
            }
        }

        public void Dispose()
        {
            if (_buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = null!;
            }
        }
    }

    /// <summary>An MSB-first bit reader; bits past the end read as zero and set <see cref="Overrun"/>.</summary>
    public ref struct Reader
    {
        private readonly ReadOnlySpan<byte> _data;
        private ulong _buffer;
        private int _bits;
        private int _next;

        public Reader(ReadOnlySpan<byte> data)
        {
            _data = data;
        }

        /// <summary>Whether more bits were read than the section holds.</summary>
        public readonly bool Overrun => ((long)_next * 8) - _bits > (long)_data.Length * 8;

        /// <summary>Bits read so far.</summary>
        public readonly long Consumed => ((long)_next * 8) - _bits;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Refill()
        {
            if (_bits > 56)
            {
                return;
            }
            if (_next + 8 <= _data.Length)
            {
                // Eight bytes at once; the bits of a partly taken byte are read again, identically, next time.
                _buffer |= BinaryPrimitives.ReadUInt64BigEndian(_data[_next..]) >> _bits;
                var bytes = (63 - _bits) >> 3;
                _next += bytes;
                _bits += bytes * 8;
                return;
            }
            while (_bits <= 56)
            {
                ulong b = _next < _data.Length ? _data[_next] : 0u;
                _next++;
                _buffer |= b << (56 - _bits);
                _bits += 8;
            }
        }

        /// <summary>Reads <paramref name="count"/> (0..32) bits.</summary>
        public uint Get(int count)
        {
            if (count == 0)
            {
                return 0;
            }
            Refill();
            var value = (uint)(_buffer >> (64 - count));
            _buffer <<= count;
            _bits -= count;
            return value;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public uint Rice(int k)
        {
            Refill();
            var q = BitOperations.LeadingZeroCount(~_buffer);
            if (q >= EscapeOnes)
            {
                _buffer <<= EscapeOnes;
                _bits -= EscapeOnes;
                return Get(32);
            }
            var total = q + 1 + k;
            if (total <= _bits)
            {
                // The common case: quotient, stop bit and remainder all in the buffer (k = 0 shifts the remainder out).
                var remainder = (uint)((_buffer << (q + 1)) >> (63 - k) >> 1);
                _buffer <<= total;
                _bits -= total;
                return ((uint)q << k) | remainder;
            }
            _buffer <<= q + 1;
            _bits -= q + 1;
            return ((uint)q << k) | Get(k);
        }
    }
}
