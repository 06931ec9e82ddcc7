namespace LMCache.Serde.CacheGen.Tests;

public sealed class CoderTests
{
    private static byte[] Bits(string bits)
    {
        var bytes = new byte[(bits.Length + 7) / 8];
        for (var i = 0; i < bits.Length; i++)
        {
            if (bits[i] == '1')
            {
                bytes[i / 8] |= (byte)(0x80 >> (i % 8));
            }
        }
        return bytes;
    }

    private static byte[] EncodeBoth(byte[] symbols, ushort[] cdf)
    {
        var fast = new byte[ArithmeticCoder.MaxStreamBytes(symbols.Length)];
        var reference = new byte[fast.Length];
        var n1 = ArithmeticCoder.Encode(symbols, 1, symbols.Length, cdf, fast);
        var n2 = ArithmeticCoder.EncodeReference(symbols, 1, symbols.Length, cdf, reference);
        Assert.Equal(reference.AsSpan(0, n2).ToArray(), fast.AsSpan(0, n1).ToArray());
        return fast.AsSpan(0, n1).ToArray();
    }

    private static void DecodeBoth(byte[] stream, ushort[] cdf, byte[] expected)
    {
        var fast = new byte[expected.Length];
        var reference = new byte[expected.Length];
        ArithmeticCoder.Decode(stream, cdf, fast, 1, expected.Length);
        ArithmeticCoder.DecodeReference(stream, cdf, reference, 1, expected.Length);
        Assert.Equal(expected, reference);
        Assert.Equal(expected, fast);
    }

    [Fact]
    public void Cdf_golden_values()
    {
        // counts of 4 tokens over maxBins = 4: cum = 0,2,3,3,4; cdf[i] = floor(65531·cum/4) + i.
        var cdf = new ushort[5];
        Cdf.Build([2, 1, 0, 1], 4, cdf);
        Assert.Equal(new ushort[] { 0, 32766, 49150, 49151, 65535 }, cdf);
        Assert.True(Cdf.IsValid(cdf));
    }

    [Fact]
    public void Cdf_is_strictly_increasing_for_any_counts()
    {
        var random = new Random(3);
        for (var trial = 0; trial < 500; trial++)
        {
            var maxBins = random.Next(4, 65);
            var counts = new uint[maxBins];
            var tokens = random.Next(1, 65536);
            for (var t = 0; t < tokens; t++)
            {
                counts[random.Next(trial % 2 == 0 ? maxBins : 2)]++;
            }
            var cdf = new ushort[maxBins + 1];
            Cdf.Build(counts, (ulong)tokens, cdf);
            Assert.True(Cdf.IsValid(cdf));
        }
    }

    [Fact]
    public void Golden_stream_for_a_half_half_table()
    {
        // Symbol 0 owns [0, 1/2), symbol 1 [1/2, 1): each symbol is one E1/E2 bit; termination adds "01".
        ushort[] cdf = [0, 32768, 65535];
        byte[] symbols = [1, 0, 1, 1];
        var stream = EncodeBoth(symbols, cdf);
        Assert.Equal(Bits("101101"), stream); // 0xB4
        Assert.Equal(new byte[] { 0xB4 }, stream);
        DecodeBoth(stream, cdf, symbols);
    }

    [Fact]
    public void Golden_stream_with_a_pending_bit()
    {
        // Symbol 1 owns [1/4, 3/4): an E3 step (pending 1). Then symbol 0 = [0, 1/4): E1 emits 0 + pending 1, E1 emits 0.
        ushort[] cdf = [0, 16384, 49152, 65535];
        byte[] symbols = [1, 0];
        var stream = EncodeBoth(symbols, cdf);
        Assert.Equal(Bits("01001"), stream); // 0x48
        DecodeBoth(stream, cdf, symbols);
    }

    [Fact]
    public void Golden_stream_with_forty_pending_bits()
    {
        // 40 middle symbols accumulate 40 pending bits (more than a 32-bit shift can carry), then one low symbol.
        ushort[] cdf = [0, 16384, 49152, 65535];
        var symbols = Enumerable.Repeat((byte)1, 40).Append((byte)0).ToArray();
        var stream = EncodeBoth(symbols, cdf);
        Assert.Equal(Bits("0" + new string('1', 40) + "0" + "01"), stream);
        DecodeBoth(stream, cdf, symbols);
    }

    [Fact]
    public void Fast_coder_equals_reference_on_random_skewed_streams()
    {
        var random = new Random(7);
        for (var trial = 0; trial < 3000; trial++)
        {
            var maxBins = trial % 3 == 0 ? 32 : random.Next(4, 65);
            var n = trial < 1000 ? random.Next(1, 5) : random.Next(1, 300);
            // Skewed distributions: most mass on one symbol (long pending runs), some rare symbols.
            var counts = new uint[maxBins];
            var symbols = new byte[n];
            var favourite = random.Next(maxBins);
            for (var i = 0; i < n; i++)
            {
                var s = random.Next(10) switch
                {
                    < 8 => favourite,
                    8 => random.Next(maxBins),
                    _ => Math.Min(maxBins - 1, favourite + 1),
                };
                symbols[i] = (byte)s;
                counts[s]++;
            }
            var cdf = new ushort[maxBins + 1];
            if (trial % 5 == 0)
            {
                // a table from other data: symbols of this stream may be rare in it
                var other = new uint[maxBins];
                other[random.Next(maxBins)] = 10000;
                Cdf.Build(other, 10000, cdf);
            }
            else
            {
                Cdf.Build(counts, (ulong)n, cdf);
            }
            var stream = EncodeBoth(symbols, cdf);
            Assert.True(stream.Length <= ArithmeticCoder.MaxStreamBytes(n));
            DecodeBoth(stream, cdf, symbols);
        }
    }

    [Fact]
    public void Interleaved_decoder_equals_single_stream_decoder()
    {
        var random = new Random(17);
        for (var trial = 0; trial < 300; trial++)
        {
            var maxBins = random.Next(4, 33);
            var lp = maxBins + 1;
            var n = random.Next(1, 260);
            var stride = ArithmeticCoder.Lanes + random.Next(0, 5);
            var symbols = new byte[n * stride];
            var cdf = new ushort[ArithmeticCoder.Lanes * lp];
            var data = new List<byte>();
            var starts = new int[ArithmeticCoder.Lanes];
            var lengths = new int[ArithmeticCoder.Lanes];
            for (var k = 0; k < ArithmeticCoder.Lanes; k++)
            {
                var counts = new uint[maxBins];
                var favourite = random.Next(maxBins);
                for (var i = 0; i < n; i++)
                {
                    var s = (byte)(random.Next(4) == 0 ? random.Next(maxBins) : favourite);
                    symbols[(i * stride) + k] = s;
                    counts[s]++;
                }
                Cdf.Build(counts, (ulong)n, cdf.AsSpan(k * lp, lp));
                var stream = new byte[ArithmeticCoder.MaxStreamBytes(n)];
                lengths[k] = ArithmeticCoder.Encode(symbols.AsSpan(k), stride, n, cdf.AsSpan(k * lp, lp), stream);
                starts[k] = data.Count;
                data.AddRange(stream.AsSpan(0, lengths[k]).ToArray());
            }
            var decoded = new byte[symbols.Length];
            ArithmeticCoder.DecodeInterleaved(data.ToArray(), starts, lengths, cdf, lp, decoded, stride, n);
            for (var i = 0; i < n; i++)
            {
                for (var k = 0; k < ArithmeticCoder.Lanes; k++)
                {
                    Assert.Equal(symbols[(i * stride) + k], decoded[(i * stride) + k]);
                }
            }
        }
    }

    [Fact]
    public void Decoding_damaged_or_empty_streams_stays_in_bounds()
    {
        ushort[] cdf = [0, 1000, 2000, 30000, 65535];
        var random = new Random(9);
        foreach (var length in new[] { 0, 1, 3, 4, 17 })
        {
            var stream = new byte[length];
            random.NextBytes(stream);
            var fast = new byte[300];
            var reference = new byte[300];
            ArithmeticCoder.Decode(stream, cdf, fast, 1, 300);
            ArithmeticCoder.DecodeReference(stream, cdf, reference, 1, 300);
            Assert.Equal(reference, fast);
            Assert.All(fast, s => Assert.InRange(s, 0, 3));
        }
    }
}
