using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Text;
using System.Text.Json;

namespace LMCache.Inference.Models.Safetensors;

/// <summary>
/// Fills <paramref name="destination"/> with the fp32 values of <paramref name="tensor"/> from element
/// <paramref name="firstElement"/> on (row-major order); the writer converts them to the tensor's dtype.
/// </summary>
/// <param name="tensor">The tensor being written.</param>
/// <param name="firstElement">Index of the first element to produce.</param>
/// <param name="destination">Where to write the next <c>destination.Length</c> values.</param>
public delegate void TensorValueSource(SafetensorsTensorSpec tensor, long firstElement, Span<float> destination);

/// <summary>Options of <see cref="SafetensorsWriter.WriteModel"/>; every default is the one stated.</summary>
public sealed record SafetensorsWriteOptions
{
    /// <summary>
    /// The largest shard, in bytes of tensor data (headers not counted), as <c>max_shard_size</c> of
    /// <c>save_pretrained</c>. A tensor larger than this gets a shard of its own. Defaults to 5,000,000,000
    /// (huggingface_hub's <c>"5GB"</c>, decimal units as it parses them).
    /// </summary>
    public long MaxShardBytes { get; init; } = 5_000_000_000;

    /// <summary>The <c>__metadata__</c> of every file. Defaults to <c>{"format": "pt"}</c>, as transformers writes.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string> { ["format"] = "pt" };

    /// <summary>Receives a line per file and per tensor larger than 64 MiB. Defaults to none.</summary>
    public Action<string>? Progress { get; init; }
}

/// <summary>What <see cref="SafetensorsWriter.WriteModel"/> wrote.</summary>
/// <param name="Files">The safetensors files, in shard order (file names only).</param>
/// <param name="IndexFile">The index file name (<c>model.safetensors.index.json</c>), or null for a single file.</param>
/// <param name="TotalSize">Bytes of tensor data over all files (the index's <c>metadata.total_size</c>).</param>
/// <param name="TotalParameters">Elements over all tensors (the index's <c>metadata.total_parameters</c>).</param>
public sealed record SafetensorsWriteResult(IReadOnlyList<string> Files, string? IndexFile, long TotalSize, long TotalParameters);

/// <summary>
/// Writes safetensors files as the Hugging Face libraries do, streaming each tensor's values to disk in blocks so a
/// model is never whole in memory.
/// </summary>
/// <remarks>
/// <para>File layout (the format's specification): an 8-byte little-endian header length N, N bytes of UTF-8 JSON
/// <c>{"__metadata__": {…}, name: {"dtype", "shape", "data_offsets": [begin, end]}, …}</c> padded with spaces so the
/// data starts 8-byte aligned, then the tensors' bytes back to back (offsets relative to the end of the header).
/// Within a file the tensors are ordered as the Rust <c>safetensors</c> serializer orders them: wider dtypes first,
/// then by name (ordinal).</para>
/// <para>Sharding follows huggingface_hub's <c>split_torch_state_dict_into_shards</c>: tensors in the caller's
/// (module) order; a tensor that would tip the current shard over <see cref="SafetensorsWriteOptions.MaxShardBytes"/>
/// starts a new one; a tensor larger than the limit gets its own. One shard is written as <c>model.safetensors</c>;
/// several as <c>model-0000k-of-0000n.safetensors</c> plus <c>model.safetensors.index.json</c>
/// (<c>{"metadata": {"total_parameters", "total_size"}, "weight_map": {name: file}}</c>, keys sorted, 2-space indent,
/// trailing newline — transformers 5's file, byte for byte in form).</para>
/// </remarks>
public static class SafetensorsWriter
{
    /// <summary>The single-file name.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>The index file name of a sharded model.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    // Values converted and written per step: 1 Mi elements = 4 MiB of fp32 scratch, pooled.
    private const int BlockElements = 1 << 20;

    /// <summary>The shard file name for shard <paramref name="index"/> (0-based) of <paramref name="count"/>.</summary>
    public static string ShardFileName(int index, int count) =>
        string.Create(CultureInfo.InvariantCulture, $"model-{index + 1:D5}-of-{count:D5}.safetensors");

    /// <summary>
    /// Splits <paramref name="tensors"/> (in module order) into shards of at most <paramref name="maxShardBytes"/>
    /// bytes of data, as huggingface_hub does (see the class remarks).
    /// </summary>
    public static IReadOnlyList<IReadOnlyList<SafetensorsTensorSpec>> PlanShards(IReadOnlyList<SafetensorsTensorSpec> tensors, long maxShardBytes)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        var shards = new List<IReadOnlyList<SafetensorsTensorSpec>>();
        var current = new List<SafetensorsTensorSpec>();
        long currentBytes = 0;
        foreach (var tensor in tensors)
        {
            var size = tensor.ByteLength;
            if (size > maxShardBytes)
            {
                shards.Add([tensor]);
                continue;
            }
            if (currentBytes + size > maxShardBytes)
            {
                shards.Add(current);
                current = [];
                currentBytes = 0;
            }
            current.Add(tensor);
            currentBytes += size;
        }
        if (current.Count > 0)
        {
            shards.Add(current);
        }
        return shards;
    }

    /// <summary>
    /// Writes <paramref name="tensors"/> into <paramref name="folder"/> as a model's weights: <c>model.safetensors</c>,
    /// or shards and <c>model.safetensors.index.json</c> when they exceed <see cref="SafetensorsWriteOptions.MaxShardBytes"/>.
    /// </summary>
    /// <param name="folder">An existing folder; files of the same names are replaced.</param>
    /// <param name="tensors">The tensors in module order (the order sharding walks).</param>
    /// <param name="source">Produces each tensor's values.</param>
    /// <param name="options">Shard size, metadata, progress; null for the defaults.</param>
    /// <exception cref="ArgumentException">Two tensors share a name, or a name is empty or <c>__metadata__</c>.</exception>
    public static SafetensorsWriteResult WriteModel(string folder, IReadOnlyList<SafetensorsTensorSpec> tensors, TensorValueSource source, SafetensorsWriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(source);
        options ??= new SafetensorsWriteOptions();
        CheckNames(tensors);
        var shards = PlanShards(tensors, options.MaxShardBytes);
        var files = new List<string>(shards.Count);
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        long totalSize = 0, totalParameters = 0;
        for (var i = 0; i < shards.Count; i++)
        {
            var name = shards.Count == 1 ? SingleFileName : ShardFileName(i, shards.Count);
            options.Progress?.Invoke($"writing {name} ({shards[i].Count} tensors, {shards[i].Sum(t => t.ByteLength) / 1e6:0.#} MB)");
            WriteFile(Path.Combine(folder, name), shards[i], source, options.Metadata, options.Progress);
            files.Add(name);
            foreach (var tensor in shards[i])
            {
                weightMap[tensor.Name] = name;
                totalSize += tensor.ByteLength;
                totalParameters += tensor.ElementCount;
            }
        }
        if (shards.Count <= 1)
        {
            return new SafetensorsWriteResult(files, null, totalSize, totalParameters);
        }
        WriteIndex(Path.Combine(folder, IndexFileName), totalParameters, totalSize, weightMap);
        return new SafetensorsWriteResult(files, IndexFileName, totalSize, totalParameters);
    }

    /// <summary>Writes one safetensors file holding <paramref name="tensors"/> (ordered as the class remarks say).</summary>
    /// <param name="path">The file; replaced when it exists.</param>
    /// <param name="tensors">The tensors of this file, any order.</param>
    /// <param name="source">Produces each tensor's values.</param>
    /// <param name="metadata">The <c>__metadata__</c> map, or null for none.</param>
    /// <param name="progress">Receives a line per tensor larger than 64 MiB, or null.</param>
    /// <returns>The file's length in bytes.</returns>
    public static long WriteFile(string path, IReadOnlyList<SafetensorsTensorSpec> tensors, TensorValueSource source, IReadOnlyDictionary<string, string>? metadata = null,
        Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(source);
        CheckNames(tensors);
        var ordered = FileOrder(tensors);
        var header = BuildHeader(ordered, metadata);
        var floats = ArrayPool<float>.Shared.Rent(BlockElements);
        var bytes = ArrayPool<byte>.Shared.Rent(BlockElements * sizeof(float));
        try
        {
            using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            foreach (var tensor in ordered)
            {
                if (tensor.ByteLength > 64L << 20)
                {
                    progress?.Invoke($"  {tensor.Name} [{string.Join(", ", tensor.Shape)}] {SafetensorsTensorSpec.Token(tensor.DType)}");
                }
                var count = tensor.ElementCount;
                var elementSize = SafetensorsTensorSpec.ElementSize(tensor.DType);
                for (long start = 0; start < count; start += BlockElements)
                {
                    var n = (int)Math.Min(BlockElements, count - start);
                    var values = floats.AsSpan(0, n);
                    source(tensor, start, values);
                    var encoded = bytes.AsSpan(0, n * elementSize);
                    Encode(values, tensor.DType, encoded);
                    stream.Write(encoded);
                }
            }
            return stream.Length;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
            ArrayPool<float>.Shared.Return(floats);
        }
    }

    /// <summary>
    /// The header bytes for <paramref name="ordered"/> in exactly that order: compact JSON, <c>__metadata__</c> first
    /// when present, padded with spaces to a multiple of 8 bytes (the 8-byte length prefix is not included).
    /// </summary>
    internal static byte[] BuildHeader(IReadOnlyList<SafetensorsTensorSpec> ordered, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = false }))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    json.WriteString(key, value);
                }
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var tensor in ordered)
            {
                json.WriteStartObject(tensor.Name);
                json.WriteString("dtype", SafetensorsTensorSpec.Token(tensor.DType));
                json.WriteStartArray("shape");
                foreach (var dim in tensor.Shape)
                {
                    json.WriteNumberValue(dim);
                }
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset += tensor.ByteLength;
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        var padding = (8 - (buffer.WrittenCount % 8)) % 8;
        var header = new byte[buffer.WrittenCount + padding];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(buffer.WrittenCount).Fill((byte)' ');
        return header;
    }

    /// <summary>The order tensors take inside one file: wider dtypes first (F32, BF16, F16, as the Rust serializer's dtype order), then by name.</summary>
    internal static IReadOnlyList<SafetensorsTensorSpec> FileOrder(IReadOnlyList<SafetensorsTensorSpec> tensors) =>
        [.. tensors.OrderBy(t => t.DType switch { SafetensorsDType.F32 => 0, SafetensorsDType.BF16 => 1, _ => 2 }).ThenBy(t => t.Name, StringComparer.Ordinal)];

    /// <summary>Converts <paramref name="values"/> to <paramref name="dtype"/>'s little-endian bytes.</summary>
    public static void Encode(ReadOnlySpan<float> values, SafetensorsDType dtype, Span<byte> destination)
    {
        var needed = values.Length * SafetensorsTensorSpec.ElementSize(dtype);
        if (destination.Length < needed)
        {
            throw new ArgumentException($"destination holds {destination.Length} bytes; {needed} are needed.", nameof(destination));
        }
        switch (dtype)
        {
            case SafetensorsDType.F32:
                if (BitConverter.IsLittleEndian)
                {
                    MemoryMarshal.AsBytes(values).CopyTo(destination);
                }
                else
                {
                    for (var i = 0; i < values.Length; i++)
                    {
                        BinaryPrimitives.WriteSingleLittleEndian(destination[(i * 4)..], values[i]);
                    }
                }
                break;
            case SafetensorsDType.BF16:
                ToBFloat16(values, destination);
                break;
            case SafetensorsDType.F16:
                for (var i = 0; i < values.Length; i++)
                {
                    // (Half) rounds to nearest even, overflows to ±infinity and keeps NaN a NaN.
                    BinaryPrimitives.WriteHalfLittleEndian(destination[(i * 2)..], (Half)values[i]);
                }
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown safetensors dtype");
        }
    }

    /// <summary>
    /// The bfloat16 bits of <paramref name="value"/>, rounded to nearest even (as PyTorch's <c>.to(torch.bfloat16)</c>);
    /// a NaN stays a (quiet) NaN of the same sign.
    /// </summary>
    public static ushort ToBFloat16Bits(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u)
        {
            return (ushort)((bits >> 16) | 0x0040u);
        }
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    private static void ToBFloat16(ReadOnlySpan<float> values, Span<byte> destination)
    {
        var output = MemoryMarshal.Cast<byte, ushort>(destination[..(values.Length * 2)]);
        var i = 0;
        if (BitConverter.IsLittleEndian && Vector256.IsHardwareAccelerated)
        {
            // 16 values per step: round-to-nearest-even on the raw bits, NaNs quieted, then keep the upper halves.
            var input = MemoryMarshal.Cast<float, uint>(values);
            var bias = Vector256.Create(0x7FFFu);
            var one = Vector256.Create(1u);
            var magnitude = Vector256.Create(0x7FFF_FFFFu);
            var infinity = Vector256.Create(0x7F80_0000u);
            var quiet = Vector256.Create(0x0040u);
            for (; i + 16 <= values.Length; i += 16)
            {
                var low = Round(Vector256.Create(input.Slice(i, 8)));
                var high = Round(Vector256.Create(input.Slice(i + 8, 8)));
                Vector256.Narrow(low, high).CopyTo(output[i..]);
            }

            Vector256<uint> Round(Vector256<uint> bits)
            {
                var rounded = Vector256.ShiftRightLogical(bits + bias + (Vector256.ShiftRightLogical(bits, 16) & one), 16);
                var nan = Vector256.GreaterThan(bits & magnitude, infinity);
                return Vector256.ConditionalSelect(nan, Vector256.ShiftRightLogical(bits, 16) | quiet, rounded);
            }
        }
        for (; i < values.Length; i++)
        {
            var bf16 = ToBFloat16Bits(values[i]);
            output[i] = BitConverter.IsLittleEndian ? bf16 : BinaryPrimitives.ReverseEndianness(bf16);
        }
    }

    private static void WriteIndex(string path, long totalParameters, long totalSize, SortedDictionary<string, string> weightMap)
    {
        // json.dumps(index, indent=2, sort_keys=True) + "\n", as transformers' save_pretrained writes it.
        var text = new StringBuilder();
        text.Append("{\n  \"metadata\": {\n");
        text.Append(CultureInfo.InvariantCulture, $"    \"total_parameters\": {totalParameters},\n");
        text.Append(CultureInfo.InvariantCulture, $"    \"total_size\": {totalSize}\n");
        text.Append("  },\n  \"weight_map\": {\n");
        var index = 0;
        foreach (var (name, file) in weightMap)
        {
            text.Append("    ").Append(JsonSerializer.Serialize(name)).Append(": ").Append(JsonSerializer.Serialize(file));
            text.Append(++index < weightMap.Count ? ",\n" : "\n");
        }
        text.Append("  }\n}\n");
        File.WriteAllText(path, text.ToString(), new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
    }

    private static void CheckNames(IReadOnlyList<SafetensorsTensorSpec> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var tensor in tensors)
        {
            if (string.IsNullOrEmpty(tensor.Name) || tensor.Name == "__metadata__")
            {
                throw new ArgumentException($"'{tensor.Name}' is not a valid tensor name.", nameof(tensors));
            }
            if (!seen.Add(tensor.Name))
            {
                throw new ArgumentException($"Tensor '{tensor.Name}' appears twice.", nameof(tensors));
            }
            foreach (var dim in tensor.Shape)
            {
                if (dim < 0)
                {
                    throw new ArgumentException($"Tensor '{tensor.Name}' has a negative dimension.", nameof(tensors));
                }
            }
        }
    }
}
