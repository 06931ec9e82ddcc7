namespace LMCache.Serde.CacheGen.Tests;

public sealed class SideInfoTests
{
    [Fact]
    public void Series_round_trip_including_escapes_and_extremes()
    {
        var random = new Random(5);
        foreach (var width in new[] { 16, 32 })
        {
            for (var trial = 0; trial < 200; trial++)
            {
                var values = new uint[random.Next(1, 300)];
                var limit = width == 16 ? 0xFFFFu : 0x7F7FFFFFu;
                for (var i = 0; i < values.Length; i++)
                {
                    values[i] = (trial % 4) switch
                    {
                        0 => (uint)random.NextInt64(0, (long)limit + 1),                              // jumps everywhere: escapes
                        1 => (uint)Math.Clamp(1000 + random.Next(-40, 41), 0, (long)limit),           // a smooth series
                        2 => i % 2 == 0 ? 0u : limit,                                                  // extremes
                        _ => (uint)random.Next(0, 3),
                    };
                }
                var writer = new SideInfo.Writer(4);
                SideInfo.WriteSeries(ref writer, values, width);
                writer.Finish();
                var reader = new SideInfo.Reader(writer.Written);
                var back = new uint[values.Length];
                Assert.True(SideInfo.ReadSeries(ref reader, back, width));
                Assert.Equal(values, back);
                Assert.False(reader.Overrun);
                Assert.True((writer.Written.Length * 8L) - reader.Consumed < 8);
                writer.Dispose();
            }
        }
    }

    [Fact]
    public void Counts_round_trip_and_rebuild_the_same_cdf()
    {
        var random = new Random(6);
        for (var trial = 0; trial < 500; trial++)
        {
            var bins = random.Next(CacheGenBins.MinBins, CacheGenBins.MaxBins + 1);
            var maxBins = Math.Max(bins, random.Next(bins, CacheGenBins.MaxBins + 1));
            var alphabet = SideInfo.Alphabet(bins);
            var tokens = (uint)random.Next(1, 1200);
            var counts = new uint[maxBins];
            var centre = random.Next(alphabet);
            for (var t = 0; t < tokens; t++)
            {
                var s = trial % 3 == 0 ? random.Next(alphabet) : Math.Clamp(centre + (int)Math.Round(random.NextDouble() * random.NextDouble() * 6 * (random.Next(2) * 2 - 1)), 0, alphabet - 1);
                counts[s]++;
            }
            var writer = new SideInfo.Writer(4);
            SideInfo.WriteCounts(ref writer, counts, alphabet, tokens);
            writer.Finish();
            var reader = new SideInfo.Reader(writer.Written);
            var back = new uint[maxBins];
            Assert.True(SideInfo.ReadCounts(ref reader, back, alphabet, tokens));
            Assert.Equal(counts, back);
            var cdf = new ushort[maxBins + 1];
            var rebuilt = new ushort[maxBins + 1];
            Cdf.Build(counts, tokens, cdf);
            Cdf.Build(back, tokens, rebuilt);
            Assert.Equal(cdf, rebuilt);
            writer.Dispose();
        }
    }

    [Fact]
    public void Counts_that_exceed_the_token_count_are_rejected()
    {
        var writer = new SideInfo.Writer(4);
        uint[] counts = [200, 100, 0, 0, 0];
        SideInfo.WriteCounts(ref writer, counts, 5, 300); // c0 + c1 = 300 fits; read back as 250 tokens it does not
        writer.Finish();
        var reader = new SideInfo.Reader(writer.Written);
        Assert.False(SideInfo.ReadCounts(ref reader, new uint[5], 5, 250));
        writer.Dispose();
    }
}
