using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LMCache.Inference.Models;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>Copies of fixture folders without their ONNX export, and a small safetensors writer for variants of them.</summary>
public static class BuiltModelFolders
{
    /// <summary>Copies <paramref name="source"/> into <paramref name="destination"/> without <c>onnx/</c> (and without *.onnx files).</summary>
    public static string CopyWithoutOnnx(string source, string destination, Func<string, bool>? include = null)
    {
        Directory.CreateDirectory(destination);
        foreach (var file in Directory.EnumerateFiles(source))
        {
            var name = Path.GetFileName(file);
            if (name.EndsWith(".onnx", StringComparison.Ordinal) || (include is not null && !include(name)))
            {
                continue;
            }
            File.Copy(file, Path.Combine(destination, name));
        }
        Assert.False(Directory.Exists(Path.Combine(destination, "onnx")));
        return destination;
    }

    /// <summary>A tensor to write: name, safetensors dtype, shape and raw little-endian bytes.</summary>
    public sealed record Tensor(string Name, string DType, long[] Shape, byte[] Data);

    /// <summary>Reads every tensor of a safetensors file (raw bytes, as stored).</summary>
    public static List<Tensor> Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        using var header = JsonDocument.Parse(bytes.AsMemory(8, headerLength));
        var tensors = new List<Tensor>();
        foreach (var entry in header.RootElement.EnumerateObject())
        {
            if (entry.Name == "__metadata__")
            {
                continue;
            }
            var offsets = entry.Value.GetProperty("data_offsets");
            var begin = offsets[0].GetInt64();
            var end = offsets[1].GetInt64();
            tensors.Add(new Tensor(entry.Name, entry.Value.GetProperty("dtype").GetString()!,
                entry.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray(),
                bytes.AsSpan((int)(8 + headerLength + begin), (int)(end - begin)).ToArray()));
        }
        return tensors;
    }

    /// <summary>Writes a safetensors file the way the format specifies (header padded to 8 bytes with spaces).</summary>
    public static void Write(string path, IEnumerable<Tensor> tensors)
    {
        var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        long offset = 0;
        var list = tensors.ToList();
        foreach (var t in list)
        {
            header[t.Name] = new JsonObject
            {
                ["dtype"] = t.DType,
                ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + t.Data.Length),
            };
            offset += t.Data.Length;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var padded = (json.Length + 7) / 8 * 8;
        using var stream = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        stream.Write(length);
        stream.Write(json);
        for (var i = json.Length; i < padded; i++)
        {
            stream.WriteByte((byte)' ');
        }
        foreach (var t in list)
        {
            stream.Write(t.Data);
        }
    }

    /// <summary>fp32 bytes → bf16 bytes, rounding to nearest even (what torch's <c>.to(torch.bfloat16)</c> does).</summary>
    public static byte[] Float32ToBf16(byte[] data)
    {
        var result = new byte[data.Length / 2];
        for (var i = 0; i < data.Length / 4; i++)
        {
            var bits = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(i * 4));
            var rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
            BinaryPrimitives.WriteUInt16LittleEndian(result.AsSpan(i * 2), (ushort)rounded);
        }
        return result;
    }

    /// <summary>bf16 bytes → fp32 bytes (exact).</summary>
    public static byte[] Bf16ToFloat32(byte[] data)
    {
        var result = new byte[data.Length * 2];
        for (var i = 0; i < data.Length / 2; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(result.AsSpan(i * 4), (uint)BinaryPrimitives.ReadUInt16LittleEndian(data.AsSpan(i * 2)) << 16);
        }
        return result;
    }

    /// <summary>Writes <paramref name="tensors"/> as <paramref name="shards"/> shards plus model.safetensors.index.json.</summary>
    public static void WriteSharded(string folder, IReadOnlyList<Tensor> tensors, int shards)
    {
        var map = new JsonObject();
        var perShard = (tensors.Count + shards - 1) / shards;
        for (var s = 0; s < shards; s++)
        {
            var name = $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
            var part = tensors.Skip(s * perShard).Take(perShard).ToList();
            Write(Path.Combine(folder, name), part);
            foreach (var t in part)
            {
                map[t.Name] = name;
            }
        }
        File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"),
            new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = tensors.Sum(t => (long)t.Data.Length) }, ["weight_map"] = map }.ToJsonString());
    }
}

/// <summary>tiny-llama loaded from its safetensors alone (a copy of the folder without onnx/), once per test class.</summary>
public sealed class BuiltTinyLlamaModel : IDisposable
{
    private readonly TempFolder _folder = new("lmcache-built-tiny");
    private readonly Lazy<LanguageModel> _model;

    public BuiltTinyLlamaModel() =>
        _model = new(() => LanguageModel.Load(BuiltModelFolders.CopyWithoutOnnx(TinyLlama.Folder, _folder.Combine("tiny-llama")),
            new ModelLoadOptions { IntraOpThreads = 2 }));

    public LanguageModel Model => _model.Value;

    public void Dispose()
    {
        if (_model.IsValueCreated)
        {
            _model.Value.Dispose();
        }
        _folder.Dispose();
    }
}
