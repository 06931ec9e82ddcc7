using LMCache.Core.Memory;
using LMCache.Core.Simd;

namespace LMCache.Serde.CacheGen.Tests;

/// <summary>
/// Every vector path of the decoder against the scalar reference, on every machine: a path this CPU lacks is the only
/// skip (and says so). CI's machine runs every path it has, the narrower ones forced through <see cref="SimdPath"/>.
/// </summary>
public sealed class SimdPathTests : IDisposable
{
    private readonly NativeSlabAllocator _allocator = new(64L << 20);

    public void Dispose()
    {
        Assert.Equal(0, _allocator.OutstandingObjects);
        _allocator.Dispose();
    }

    public static TheoryData<SimdPath> Paths => new(SimdPaths.All);

    private static void SkipUnlessSupported(SimdPath path)
    {
        if (!SimdPaths.IsSupported(path))
        {
            Assert.Skip($"This CPU has no {SimdPaths.Name(path)} (it has {string.Join(", ", SimdPaths.CpuFeatures())}): that path cannot run here.");
        }
    }

    private delegate void LaneDecoder(ReadOnlySpan<byte> data, ReadOnlySpan<int> starts, ReadOnlySpan<int> lengths, ReadOnlySpan<ushort> cdf, int lp, Span<byte> symbols, int stride, int count);

    private static (LaneDecoder Decode, int Lanes)? LaneDecoderOf(SimdPath path) => path switch
    {
        SimdPath.Avx512 => (ArithmeticCoder.DecodeWide, ArithmeticCoder.WideLanes),
        SimdPath.Avx2 => (ArithmeticCoder.DecodeAvx2, ArithmeticCoder.Avx2Lanes),
        SimdPath.Vector128 => (ArithmeticCoder.DecodeVector128, ArithmeticCoder.Vector128Lanes),
        _ => null,
    };

    [Theory]
    [MemberData(nameof(Paths))]
    public void Lane_decoder_equals_reference_decoder_on_random_streams_tables_and_bytes(SimdPath path)
    {
        SkipUnlessSupported(path);
        if (LaneDecoderOf(path) is not var (decode, lanes))
        {
            // The scalar path decodes one stream at a time: compare it on the same kinds of streams.
            ScalarDecoderEqualsReference();
            return;
        }
        var random = new Random(23 + (int)path);
        for (var trial = 0; trial < 400; trial++)
        {
            var maxBins = trial % 4 == 0 ? 32 : random.Next(2, 65);
            var lp = maxBins + 1;
            var n = trial < 40 ? random.Next(1, 4) : random.Next(1, ArithmeticCoder.WideMaxCount + 1);
            var stride = lanes + random.Next(0, 7);
            var garbage = trial % 7 == 3;
            var cdf = new ushort[lanes * lp];
            var data = new List<byte>();
            var starts = new int[lanes];
            var lengths = new int[lanes];
            var expected = new byte[((n - 1) * stride) + lanes];
            for (var k = 0; k < lanes; k++)
            {
                var (stream, length) = RandomStream(random, maxBins, n, garbage, cdf.AsSpan(k * lp, lp), out var symbols);
                starts[k] = data.Count;
                lengths[k] = length;
                data.AddRange(stream.AsSpan(0, length).ToArray());
                ArithmeticCoder.DecodeReference(stream.AsSpan(0, length), cdf.AsSpan(k * lp, lp), expected.AsSpan(k), stride, n);
                if (!garbage)
                {
                    Assert.Equal(symbols, Enumerable.Range(0, n).Select(i => expected[k + (i * stride)]).ToArray());
                }
            }
            // Data after the last stream must not be read as part of it.
            data.AddRange(Enumerable.Repeat((byte)0xFF, 64));
            var decoded = new byte[expected.Length];
            decode(data.ToArray(), starts, lengths, cdf, lp, decoded, stride, n);
            for (var i = 0; i < n; i++)
            {
                for (var k = 0; k < lanes; k++)
                {
                    Assert.True(expected[(i * stride) + k] == decoded[(i * stride) + k],
                        $"{path}, trial {trial}, lane {k}, symbol {i} of {n}, Lp {lp}: expected {expected[(i * stride) + k]}, got {decoded[(i * stride) + k]}");
                }
            }
        }
    }

    private static void ScalarDecoderEqualsReference()
    {
        var random = new Random(29);
        for (var trial = 0; trial < 400; trial++)
        {
            var maxBins = random.Next(2, 65);
            var lp = maxBins + 1;
            var n = random.Next(1, 300);
            var cdf = new ushort[lp];
            var (stream, length) = RandomStream(random, maxBins, n, trial % 7 == 3, cdf, out _);
            var expected = new byte[n];
            var decoded = new byte[n];
            ArithmeticCoder.DecodeReference(stream.AsSpan(0, length), cdf, expected, 1, n);
            ArithmeticCoder.DecodeScalar(stream.AsSpan(0, length), cdf, decoded, 1, n);
            Assert.Equal(expected, decoded);
        }
    }

    /// <summary>A stream over a skewed, uniform or foreign table (rare symbols: long pending runs), or random bytes.</summary>
    private static (byte[] Stream, int Length) RandomStream(Random random, int maxBins, int n, bool garbage, Span<ushort> cdf, out byte[] symbols)
    {
        var counts = new uint[maxBins];
        var favourite = random.Next(maxBins);
        var spread = random.Next(1, 5);
        var stream = new byte[ArithmeticCoder.MaxStreamBytes(n)];
        symbols = new byte[n];
        for (var i = 0; i < n; i++)
        {
            symbols[i] = (byte)(random.Next(spread + 1) == 0 ? random.Next(maxBins) : favourite);
            counts[symbols[i]]++;
        }
        if (random.Next(6) == 0)
        {
            Array.Clear(counts);
            counts[random.Next(maxBins)] = 1;
            Cdf.Build(counts, 1, cdf);
        }
        else
        {
            Cdf.Build(counts, (ulong)n, cdf);
        }
        if (garbage)
        {
            var length = random.Next(0, Math.Min(40, stream.Length + 1));
            random.NextBytes(stream.AsSpan(0, length));
            return (stream, length);
        }
        return (stream, ArithmeticCoder.Encode(symbols, 1, n, cdf, stream));
    }

    public static TheoryData<SimdPath, KvDType, int, int, int> PathsAndShapes()
    {
        var data = new TheoryData<SimdPath, KvDType, int, int, int>();
        foreach (var path in SimdPaths.All)
        {
            data.Add(path, KvDType.BFloat16, 4, 256, 64);   // every channel in full lane groups
            data.Add(path, KvDType.Float16, 3, 300, 44);    // 44 = 2·16 + 8 + 4: every lane width, then none left
            data.Add(path, KvDType.Float32, 2, 513, 31);    // leftovers decoded one stream at a time
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(PathsAndShapes))]
    public void Codec_on_each_path_writes_and_reads_what_the_reference_does(SimdPath path, KvDType dtype, int layers, int tokens, int hidden)
    {
        SkipUnlessSupported(path);
        var bytes = KvData.ToBytes(KvData.Values(2 * layers, tokens, hidden, seed: (layers * 100) + hidden), dtype);
        using var chunk = KvData.Chunk(_allocator, dtype, layers, tokens, hidden, bytes);
        var bins = CacheGenBins.Create([.. Enumerable.Range(0, layers).Select(l => l == 0 ? 64 : 32)], [.. Enumerable.Range(0, layers).Select(l => l == 0 ? 8 : 16)]);

        var codec = new CacheGenCodec(2, simd: path);
        Assert.Equal(path, codec.Simd);
        var reference = new CacheGenCodec(1, reference: true);
        var blob = Encode(codec, chunk, dtype, layers, tokens, hidden, bins);
        Assert.Equal(Encode(reference, chunk, dtype, layers, tokens, hidden, bins), blob);

        Assert.True(CacheGenContainer.TryParse(blob, out var parsed, out var reason), reason);
        using var parsedBlob = parsed!;
        Assert.Equal((byte)CacheGenMode.Coded, blob[5]);
        var fast = new byte[bytes.Length];
        var expected = new byte[bytes.Length];
        codec.Decode(blob, parsedBlob, null, fast);
        reference.Decode(blob, parsedBlob, null, expected);
        Assert.Equal(expected, fast);
    }

    [Fact]
    public void The_variable_names_a_path_and_never_widens_past_the_cpu()
    {
        Assert.Equal(SimdPaths.Widest, SimdPaths.Resolve(null));
        Assert.Equal(SimdPaths.Widest, SimdPaths.Resolve(" "));
        Assert.Equal(SimdPath.Scalar, SimdPaths.Resolve("scalar"));
        Assert.Equal(SimdPaths.Cap(SimdPath.Vector128), SimdPaths.Resolve(" Vector128 "));
        Assert.Equal(SimdPaths.Cap(SimdPath.Avx2), SimdPaths.Resolve("AVX2"));
        Assert.Equal(SimdPaths.Widest, SimdPaths.Resolve("avx512"));
        Assert.True(SimdPaths.Resolve("avx512") <= SimdPaths.Widest);
        var error = Assert.Throws<ArgumentException>(() => SimdPaths.Resolve("sse"));
        Assert.Contains(SimdPaths.Variable, error.Message, StringComparison.Ordinal);
        Assert.Contains("vector128", error.Message, StringComparison.Ordinal);
    }

    private static byte[] Encode(CacheGenCodec codec, MemoryObject chunk, KvDType dtype, int layers, int tokens, int hidden, CacheGenBins bins)
    {
        using var prepared = codec.Prepare(chunk.Memory, dtype, layers, tokens, hidden, bins, null);
        var blob = new byte[prepared.Size];
        prepared.WriteTo(blob);
        return blob;
    }
}
