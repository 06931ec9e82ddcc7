using System.Runtime.InteropServices;
using LMCache.Core.Memory;

namespace LMCache.Serde.CacheGen.Tests;

public sealed class QuantizerTests
{
    public static TheoryData<KvDType> DTypes => [KvDType.BFloat16, KvDType.Float16, KvDType.Float32];

    [Fact]
    public void Golden_row_with_ties_rounds_half_to_even()
    {
        // 32 bins: M = 15, m = 1, f = 15. 1→30; −0.5→7.5→8 (even); 0.25→18.75→19; 0→15; 0.5→22.5→22 (even).
        var row = KvData.ToBytes([1.0f, -0.5f, 0.25f, 0f, 0.5f], KvDType.BFloat16);
        var symbols = new byte[5];
        Assert.True(Quantizer.QuantizeRowReference(KvDType.BFloat16, row, 32, symbols, out var scale));
        Assert.Equal(new byte[] { 30, 8, 19, 15, 22 }, symbols);
        Assert.Equal(0x3F80u, scale);

        // 16 bins: M = 7, m = 2, f = 3.5. 2→14; −1→3.5→4 (even); 0.5→8.75→9; −2→0; 1→10.5→10 (even).
        row = KvData.ToBytes([2f, -1f, 0.5f, -2f, 1f], KvDType.BFloat16);
        Assert.True(Quantizer.QuantizeRowReference(KvDType.BFloat16, row, 16, symbols, out scale));
        Assert.Equal(new byte[] { 14, 4, 9, 0, 10 }, symbols);
        Assert.Equal(0x4000u, scale);
    }

    [Theory]
    [MemberData(nameof(DTypes))]
    public void All_zero_row_gives_symbol_zero_and_decodes_to_negative_zero(KvDType dtype)
    {
        var row = KvData.ToBytes([0f, -0f, 0f, 0f, -0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f], dtype);
        var symbols = Enumerable.Repeat((byte)7, 34).ToArray();
        Assert.True(Quantizer.QuantizeRow(dtype, row, 32, symbols, out var scale));
        Assert.All(symbols, s => Assert.Equal(0, s));
        Assert.Equal(0u, scale);
        var output = new byte[row.Length];
        Quantizer.DequantizeRow(dtype, symbols, 32, scale, output);
        for (var i = 0; i < symbols.Length; i++)
        {
            var y = KvData.Read(output, dtype, i);
            Assert.True(y == 0f && float.IsNegative(y), $"element {i} is {y}, expected -0.0");
        }
    }

    [Theory]
    [MemberData(nameof(DTypes))]
    public void Non_finite_rows_are_rejected(KvDType dtype)
    {
        var symbols = new byte[3];
        Assert.False(Quantizer.QuantizeRow(dtype, KvData.ToBytes([1f, float.NaN, 2f], dtype), 32, symbols, out _));
        Assert.False(Quantizer.QuantizeRowReference(dtype, KvData.ToBytes([1f, float.NegativeInfinity, 2f], dtype), 32, symbols, out _));
    }

    [Theory]
    [MemberData(nameof(DTypes))]
    public void Vector_path_equals_reference_on_random_rows(KvDType dtype)
    {
        var random = new Random(11 + (int)dtype);
        foreach (var hidden in new[] { 1, 7, 31, 32, 33, 64, 100, 1024 })
        {
            foreach (var bins in new[] { 4, 12, 16, 32, 33, 64 })
            {
                for (var trial = 0; trial < 5; trial++)
                {
                    var values = new float[hidden];
                    var magnitude = (float)Math.Pow(10, random.Next(-6, 4));
                    for (var i = 0; i < hidden; i++)
                    {
                        values[i] = (float)(random.NextDouble() * 2 - 1) * magnitude;
                    }
                    if (trial == 1)
                    {
                        // exact ties after scaling: multiples of m/(2M)
                        var levels = (bins / 2) - 1;
                        for (var i = 0; i < hidden; i++)
                        {
                            values[i] = (random.Next(-2 * levels, (2 * levels) + 1) / (2f * levels)) * 4f;
                        }
                    }
                    var row = KvData.ToBytes(values, dtype);
                    var expected = new byte[hidden];
                    var actual = new byte[hidden];
                    Assert.Equal(
                        Quantizer.QuantizeRowReference(dtype, row, bins, expected, out var expectedScale),
                        Quantizer.QuantizeRow(dtype, row, bins, actual, out var actualScale));
                    Assert.Equal(expectedScale, actualScale);
                    Assert.Equal(expected, actual);

                    var expectedOut = new byte[row.Length];
                    var actualOut = new byte[row.Length];
                    Quantizer.DequantizeRowReference(dtype, expected, bins, expectedScale, expectedOut);
                    Quantizer.DequantizeRow(dtype, expected, bins, expectedScale, actualOut);
                    Assert.Equal(expectedOut, actualOut);
                }
            }
        }
    }

    [Fact]
    public void Vector_half_widening_is_exact_for_every_finite_half()
    {
        // Every finite fp16 pattern (normals, subnormals, both zeros), in rows whose scale forces a wide range of f.
        var patterns = Enumerable.Range(0, 65536).Where(b => (b & 0x7C00) != 0x7C00).Select(b => (ushort)b).ToArray();
        for (var start = 0; start < patterns.Length; start += 96)
        {
            var row = MemoryMarshal.AsBytes(patterns.AsSpan(start, Math.Min(96, patterns.Length - start))).ToArray();
            var count = row.Length / 2;
            var expected = new byte[count];
            var actual = new byte[count];
            Quantizer.QuantizeRowReference(KvDType.Float16, row, 32, expected, out var s1);
            Quantizer.QuantizeRow(KvDType.Float16, row, 32, actual, out var s2);
            Assert.Equal(s1, s2);
            Assert.Equal(expected, actual);
        }
    }

    [Theory]
    [MemberData(nameof(DTypes))]
    public void Every_value_is_within_half_a_step_of_its_token_scale(KvDType dtype)
    {
        var random = new Random(5);
        foreach (var bins in new[] { 16, 32 })
        {
            for (var trial = 0; trial < 50; trial++)
            {
                var values = new float[128];
                for (var i = 0; i < values.Length; i++)
                {
                    values[i] = (float)((random.NextDouble() * 2 - 1) * Math.Pow(10, random.Next(-3, 3)));
                }
                var row = KvData.ToBytes(values, dtype);
                var symbols = new byte[values.Length];
                Assert.True(Quantizer.QuantizeRow(dtype, row, bins, symbols, out var scale));
                var output = new byte[row.Length];
                Quantizer.DequantizeRow(dtype, symbols, bins, scale, output);
                var m = Quantizer.ScaleToSingle(dtype, scale);
                var step = m / ((bins / 2) - 1);
                for (var i = 0; i < values.Length; i++)
                {
                    var x = KvData.Read(row, dtype, i);
                    var y = KvData.Read(output, dtype, i);
                    // half a step, a few float32 ulps, and half an ulp of the output dtype (relative 2^-8 for bf16, 2^-11 for fp16)
                    var outputUlp = dtype switch { KvDType.BFloat16 => Math.Abs(y) / 128f, KvDType.Float16 => Math.Abs(y) / 1024f + 6e-8f, _ => 0f };
                    Assert.True(Math.Abs(y - x) <= (step / 2) * 1.0001f + (m * 1e-6f) + outputUlp, $"x={x} y={y} m={m} bins={bins}");
                }
            }
        }
    }
}
