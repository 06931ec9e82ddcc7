using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using LMCache.Inference.Demo;
using LMCache.Inference.Models.Safetensors;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

public sealed class SafetensorsWriterTests
{
    [Fact]
    public void Rewriting_tiny_llama_gives_the_file_transformers_wrote_byte_for_byte()
    {
        // The fixture's model.safetensors was written by transformers' save_pretrained (float32, one file).
        var fixture = RepositoryFixtures.File("test", "fixtures", "tiny-llama", "model.safetensors");
        var original = File.ReadAllBytes(fixture);
        var values = RawFile.Parse(original);
        var config = File.ReadAllText(RepositoryFixtures.File("test", "fixtures", "tiny-llama", "config.json"));

        using var folder = new TempFolder();
        var result = SafetensorsWriter.WriteModel(folder.Path, RandomWeightsModel.LlamaTensors(config, SafetensorsDType.F32), values.Fill);

        Assert.Equal([SafetensorsWriter.SingleFileName], result.Files);
        Assert.Null(result.IndexFile);
        Assert.False(File.Exists(folder.Combine(SafetensorsWriter.IndexFileName)));
        Assert.Equal(original, File.ReadAllBytes(folder.Combine(SafetensorsWriter.SingleFileName)));
    }

    [Fact]
    public void Rewriting_the_demo_coder_shards_gives_transformers_files_and_index_byte_for_byte()
    {
        // lmcache-demo-coder: float16, tied embeddings, two shards and an index from transformers 5.17. Its split
        // (layer 3's attention in shard 1, its MLP in shard 2) is what max_shard_size="14MB" gives.
        var names = new[] { "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors" };
        var originals = names.Select(n => File.ReadAllBytes(RepositoryFixtures.File("models", "lmcache-demo-coder", n))).ToArray();
        var values = RawFile.Parse(originals);
        var config = File.ReadAllText(RepositoryFixtures.File("models", "lmcache-demo-coder", "config.json"));
        var tensors = RandomWeightsModel.LlamaTensors(config, SafetensorsDType.F16);
        Assert.DoesNotContain(tensors, t => t.Name == "lm_head.weight");   // tie_word_embeddings

        using var folder = new TempFolder();
        var result = SafetensorsWriter.WriteModel(folder.Path, tensors, values.Fill, new SafetensorsWriteOptions { MaxShardBytes = 14_000_000 });

        Assert.Equal(names, result.Files);
        Assert.Equal(SafetensorsWriter.IndexFileName, result.IndexFile);
        for (var i = 0; i < names.Length; i++)
        {
            Assert.True(originals[i].AsSpan().SequenceEqual(File.ReadAllBytes(folder.Combine(names[i]))), $"{names[i]} differs from the fixture");
        }
        Assert.Equal(File.ReadAllText(RepositoryFixtures.File("models", "lmcache-demo-coder", SafetensorsWriter.IndexFileName)),
            File.ReadAllText(folder.Combine(SafetensorsWriter.IndexFileName)));
        Assert.Equal(22_030_080, result.TotalSize);
        Assert.Equal(11_015_040, result.TotalParameters);
    }

    [Fact]
    public void Sharded_bf16_f16_and_f32_tensors_round_trip_through_the_reader()
    {
        // Values that exercise rounding: halfway cases of bf16 (ties to even), values beyond fp16's range, subnormals.
        float Value(string name, long i) => name switch
        {
            "ties.bf16" => BitConverter.UInt32BitsToSingle(0x3F80_8000u + ((uint)(i % 4) << 16)),   // 1.0039.., 1.0117.., …: exact halves
            "wide.f16" => (i % 3) switch { 0 => 70000f, 1 => -1e-6f, _ => (i * 0.37f) - 40f },
            _ => (float)(Math.Sin(i + name.Length) * 3),
        };
        var tensors = new SafetensorsTensorSpec[]
        {
            new("model.embed_tokens.weight", SafetensorsDType.BF16, [64, 48]),
            new("ties.bf16", SafetensorsDType.BF16, [37]),
            new("wide.f16", SafetensorsDType.F16, [5, 7]),
            new("exact.f32", SafetensorsDType.F32, [3, 100]),
            new("model.norm.weight", SafetensorsDType.BF16, [48]),
        };
        void Fill(SafetensorsTensorSpec tensor, long first, Span<float> values)
        {
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = Value(tensor.Name, first + i);
            }
        }
        using var folder = new TempFolder();
        // 1,000-byte shards: the embedding (6,144 B) and exact.f32 (1,200 B) alone, the three small tensors together.
        var result = SafetensorsWriter.WriteModel(folder.Path, tensors, Fill, new SafetensorsWriteOptions { MaxShardBytes = 1000 });
        Assert.Equal(3, result.Files.Count);

        using var weights = SafetensorsWeights.Open(folder.Path);
        Assert.Equal(folder.Combine(SafetensorsWriter.IndexFileName), weights.IndexPath);
        Assert.Equal(tensors.Select(t => t.Name).Order(StringComparer.Ordinal), weights.Tensors.Select(t => t.Name).Order(StringComparer.Ordinal));
        foreach (var tensor in tensors)
        {
            var read = new float[tensor.ElementCount];
            weights.ReadFloat32(tensor.Name, read, [.. tensor.Shape]);
            for (var i = 0; i < read.Length; i++)
            {
                var value = Value(tensor.Name, i);
                var expected = tensor.DType switch
                {
                    SafetensorsDType.F32 => value,
                    SafetensorsDType.F16 => (float)(Half)value,   // 70000 → +infinity, -1e-6 → the nearest fp16 subnormal
                    _ => BitConverter.UInt32BitsToSingle((uint)SafetensorsWriter.ToBFloat16Bits(value) << 16),
                };
                Assert.True(expected.Equals(read[i]), $"{tensor.Name}[{i}]: wrote {value}, read {read[i]}, expected {expected}");
            }
        }
        // Ties to even, seen through the reader: 1 + 2^-8 → 1.0; 1 + 3·2^-8 → 1 + 2^-6 (the even neighbour above).
        var ties = new float[37];
        weights.ReadFloat32("ties.bf16", ties, 37);
        Assert.Equal(1.0f, ties[0]);
        Assert.Equal(1.015625f, ties[1]);
        Assert.True(float.IsPositiveInfinity(ReadOne(weights, "wide.f16", 0, [5, 7])));
    }

    private static float ReadOne(SafetensorsWeights weights, string name, int index, long[] shape)
    {
        var values = new float[shape.Aggregate(1L, (a, b) => a * b)];
        weights.ReadFloat32(name, values, shape);
        return values[index];
    }

    [Fact]
    public void Bf16_rounds_to_nearest_even_and_keeps_nan_and_infinity()
    {
        (uint Float, ushort BFloat)[] cases =
        [
            (0x3F80_0000, 0x3F80),   // 1.0 exactly
            (0x3F80_7FFF, 0x3F80),   // just below half an ulp: down
            (0x3F80_8000, 0x3F80),   // exactly half, even below: stays even
            (0x3F81_8000, 0x3F82),   // exactly half, odd below: up to even
            (0x3F80_8001, 0x3F81),   // just above half: up
            (0xBF80_8001, 0xBF81),   // negative, above half: away from zero
            (0x7F7F_FFFF, 0x7F80),   // float.MaxValue rounds to +infinity, as torch does
            (0x7F80_0000, 0x7F80),   // +infinity
            (0xFF80_0000, 0xFF80),   // -infinity
            (0x0000_0001, 0x0000),   // smallest subnormal rounds to zero
            (0x8000_0000, 0x8000),   // -0
        ];
        foreach (var (single, expected) in cases)
        {
            Assert.Equal(expected, SafetensorsWriter.ToBFloat16Bits(BitConverter.UInt32BitsToSingle(single)));
        }
        var nan = SafetensorsWriter.ToBFloat16Bits(BitConverter.UInt32BitsToSingle(0x7F80_0001));   // a NaN whose payload would round away
        Assert.True(float.IsNaN(BitConverter.UInt32BitsToSingle((uint)nan << 16)));
        Assert.True(float.IsNaN(BitConverter.UInt32BitsToSingle((uint)SafetensorsWriter.ToBFloat16Bits(BitConverter.UInt32BitsToSingle(0xFFFF_FFFF)) << 16)));

        // The vector path (16 at a time) gives the scalar result for every value, edge cases included.
        var random = new Random(3);
        var values = new float[1003];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = i < cases.Length ? BitConverter.UInt32BitsToSingle(cases[i].Float) : BitConverter.UInt32BitsToSingle((uint)random.NextInt64(0, 1L << 32));
        }
        values[500] = float.NaN;
        var bytes = new byte[values.Length * 2];
        SafetensorsWriter.Encode(values, SafetensorsDType.BF16, bytes);
        for (var i = 0; i < values.Length; i++)
        {
            var expected = SafetensorsWriter.ToBFloat16Bits(values[i]);
            var actual = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(i * 2));
            Assert.True(expected == actual || (IsNaN(expected) && IsNaN(actual)), $"value {i} ({BitConverter.SingleToUInt32Bits(values[i]):X8}): {actual:X4} != {expected:X4}");
        }

        static bool IsNaN(ushort bf16) => float.IsNaN(BitConverter.UInt32BitsToSingle((uint)bf16 << 16));
    }

    [Fact]
    public void Mixed_dtypes_are_laid_out_widest_first_with_an_aligned_header_and_exact_offsets()
    {
        var tensors = new SafetensorsTensorSpec[]
        {
            new("b.half", SafetensorsDType.F16, [3]),
            new("a.bf16", SafetensorsDType.BF16, [2, 3]),
            new("z.float", SafetensorsDType.F32, [5]),
            new("c.scalar", SafetensorsDType.F32, []),
        };
        static void Fill(SafetensorsTensorSpec tensor, long first, Span<float> values)
        {
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = (tensor.Name[0] * 100) + first + i + 0.25f;
            }
        }
        using var folder = new TempFolder();
        var path = folder.Combine("mixed.safetensors");
        var length = SafetensorsWriter.WriteFile(path, tensors, Fill, new Dictionary<string, string> { ["format"] = "pt" });
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(bytes.Length, length);

        var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, (8 + headerLength) % 8);
        var headerText = Encoding.UTF8.GetString(bytes, 8, headerLength);
        Assert.EndsWith("}", headerText.TrimEnd(' '), StringComparison.Ordinal);   // padded with spaces only, fewer than 8
        Assert.InRange(headerText.Length - headerText.TrimEnd(' ').Length, 0, 7);
        using var header = JsonDocument.Parse(headerText);
        var order = header.RootElement.EnumerateObject().Select(p => p.Name).ToArray();
        Assert.Equal(["__metadata__", "c.scalar", "z.float", "a.bf16", "b.half"], order);   // F32 by name, then BF16, then F16
        Assert.Equal("pt", header.RootElement.GetProperty("__metadata__").GetProperty("format").GetString());

        var data = bytes.AsSpan(8 + headerLength);
        long expectedOffset = 0;
        foreach (var name in order.Skip(1))
        {
            var entry = header.RootElement.GetProperty(name);
            var tensor = tensors.Single(t => t.Name == name);
            var offsets = entry.GetProperty("data_offsets").EnumerateArray().Select(o => o.GetInt64()).ToArray();
            Assert.Equal(expectedOffset, offsets[0]);
            Assert.Equal(tensor.ByteLength, offsets[1] - offsets[0]);
            Assert.Equal(tensor.Shape, entry.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray());
            Assert.Equal(SafetensorsTensorSpec.Token(tensor.DType), entry.GetProperty("dtype").GetString());
            var slice = data.Slice((int)offsets[0], (int)(offsets[1] - offsets[0]));
            for (var i = 0; i < tensor.ElementCount; i++)
            {
                var value = (name[0] * 100) + i + 0.25f;
                var actual = tensor.DType switch
                {
                    SafetensorsDType.F32 => BinaryPrimitives.ReadSingleLittleEndian(slice[(i * 4)..]),
                    SafetensorsDType.F16 => (float)BinaryPrimitives.ReadHalfLittleEndian(slice[(i * 2)..]),
                    _ => BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(slice[(i * 2)..]) << 16),
                };
                var expected = tensor.DType switch
                {
                    SafetensorsDType.F32 => value,
                    SafetensorsDType.F16 => (float)(Half)value,
                    _ => BitConverter.UInt32BitsToSingle((uint)SafetensorsWriter.ToBFloat16Bits(value) << 16),
                };
                Assert.Equal(expected, actual);
            }
            expectedOffset = offsets[1];
        }
        Assert.Equal(expectedOffset, data.Length);
    }

    [Fact]
    public void Shards_split_as_huggingface_hub_splits_them()
    {
        SafetensorsTensorSpec T(string name, long elements) => new(name, SafetensorsDType.F32, [elements]);
        var tensors = new[] { T("a", 10), T("b", 10), T("big", 40), T("c", 15), T("d", 5) };   // 40, 40, 160, 60, 20 bytes

        var shards = SafetensorsWriter.PlanShards(tensors, maxShardBytes: 100);

        // a + b fit (80); big exceeds the limit and gets its own shard, listed before the shard being filled;
        // c would tip a + b over 100, so it starts a new shard that d joins.
        Assert.Equal([["big"], ["a", "b"], ["c", "d"]], shards.Select(s => s.Select(t => t.Name).ToArray()).ToArray());
        Assert.Single(SafetensorsWriter.PlanShards(tensors, maxShardBytes: 1000));
        Assert.Equal("model-00003-of-00012.safetensors", SafetensorsWriter.ShardFileName(2, 12));
    }

    [Fact]
    public void Duplicate_or_reserved_tensor_names_are_refused()
    {
        using var folder = new TempFolder();
        var twice = new SafetensorsTensorSpec[] { new("w", SafetensorsDType.F32, [1]), new("w", SafetensorsDType.F16, [1]) };
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.WriteModel(folder.Path, twice, (_, _, v) => v.Clear()));
        var reserved = new SafetensorsTensorSpec[] { new("__metadata__", SafetensorsDType.F32, [1]) };
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.WriteFile(folder.Combine("x.safetensors"), reserved, (_, _, v) => v.Clear()));
    }

    /// <summary>
    /// The tensors of safetensors files as fp32 values, parsed here independently of the code under test (the
    /// format's header and F32/F16 data), to feed them back to the writer.
    /// </summary>
    private sealed class RawFile
    {
        private readonly Dictionary<string, float[]> _tensors = new(StringComparer.Ordinal);

        public static RawFile Parse(params byte[][] files)
        {
            var parsed = new RawFile();
            foreach (var file in files)
            {
                var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(file);
                using var header = JsonDocument.Parse(file.AsMemory(8, headerLength));
                var data = file.AsSpan(8 + headerLength);
                foreach (var entry in header.RootElement.EnumerateObject().Where(p => p.Name != "__metadata__"))
                {
                    var offsets = entry.Value.GetProperty("data_offsets").EnumerateArray().Select(o => (int)o.GetInt64()).ToArray();
                    var bytes = data[offsets[0]..offsets[1]];
                    parsed._tensors[entry.Name] = entry.Value.GetProperty("dtype").GetString() switch
                    {
                        "F32" => [.. Enumerable.Range(0, bytes.Length / 4).Select(i => BinaryPrimitives.ReadSingleLittleEndian(file.AsSpan(8 + headerLength + offsets[0] + (i * 4))))],
                        "F16" => [.. Enumerable.Range(0, bytes.Length / 2).Select(i => (float)BinaryPrimitives.ReadHalfLittleEndian(file.AsSpan(8 + headerLength + offsets[0] + (i * 2))))],
                        var other => throw new InvalidDataException($"unexpected dtype {other}"),
                    };
                }
            }
            return parsed;
        }

        public void Fill(SafetensorsTensorSpec tensor, long first, Span<float> values) =>
            _tensors[tensor.Name].AsSpan((int)first, values.Length).CopyTo(values);
    }
}
