using System.Text.Json;

namespace LMCache.Inference.Models.Safetensors;

/// <summary>
/// The weights of a Hugging Face model folder: <c>model.safetensors</c>, or the shards named by
/// <c>model.safetensors.index.json</c>'s <c>weight_map</c>. Every shard is memory-mapped; tensors are looked up by
/// name with their file, dtype and shape checked on the way.
/// </summary>
public sealed class SafetensorsWeights : IDisposable
{
    /// <summary>The single-file name.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>The shard index name.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, (SafetensorsFile File, SafetensorsTensorInfo Info)> _tensors;

    private SafetensorsWeights(string folder, string? indexPath, List<SafetensorsFile> files,
        Dictionary<string, (SafetensorsFile, SafetensorsTensorInfo)> tensors)
    {
        Folder = folder;
        IndexPath = indexPath;
        _files = files;
        _tensors = tensors;
    }

    /// <summary>The model folder.</summary>
    public string Folder { get; }

    /// <summary>The shard index, or null for a single file.</summary>
    public string? IndexPath { get; }

    /// <summary>The files, in shard order.</summary>
    public IReadOnlyList<SafetensorsFile> Files => _files;

    /// <summary>Every tensor by name.</summary>
    public IEnumerable<SafetensorsTensorInfo> Tensors => _tensors.Values.Select(t => t.Info);

    /// <summary>Whether <paramref name="folder"/> holds safetensors weights (a single file or an index).</summary>
    public static bool Exists(string folder) =>
        File.Exists(Path.Combine(folder, IndexFileName)) || File.Exists(Path.Combine(folder, SingleFileName));

    /// <summary>Opens the weights of <paramref name="folder"/>.</summary>
    /// <exception cref="SafetensorsException">No weights, a bad index, or a bad shard.</exception>
    public static SafetensorsWeights Open(string folder)
    {
        folder = Path.GetFullPath(folder);
        var indexPath = Path.Combine(folder, IndexFileName);
        var files = new List<SafetensorsFile>();
        try
        {
            var tensors = new Dictionary<string, (SafetensorsFile, SafetensorsTensorInfo)>(StringComparer.Ordinal);
            if (File.Exists(indexPath))
            {
                var weightMap = ReadIndex(indexPath);
                var byShard = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
                foreach (var shard in weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
                {
                    if (shard.Contains('/', StringComparison.Ordinal) || shard.Contains('\\', StringComparison.Ordinal) || shard.StartsWith('.'))
                    {
                        throw new SafetensorsException(indexPath, null, $"bad index: shard name '{shard}' is not a plain file name.");
                    }
                    var shardPath = Path.Combine(folder, shard);
                    if (!File.Exists(shardPath))
                    {
                        throw new SafetensorsException(shardPath, null, $"the shard named by {IndexFileName} does not exist.");
                    }
                    var file = SafetensorsFile.Open(shardPath);
                    files.Add(file);
                    byShard.Add(shard, file);
                }
                foreach (var (name, shard) in weightMap)
                {
                    var file = byShard[shard];
                    if (!file.Tensors.TryGetValue(name, out var info))
                    {
                        throw new SafetensorsException(file.FilePath, name, $"missing tensor: {IndexFileName} maps it to this shard but the shard's header has no such tensor.");
                    }
                    tensors.Add(name, (file, info));
                }
                return new SafetensorsWeights(folder, indexPath, files, tensors);
            }
            var single = Path.Combine(folder, SingleFileName);
            if (!File.Exists(single))
            {
                throw new SafetensorsException(folder, null, $"the folder has neither {SingleFileName} nor {IndexFileName}.");
            }
            var only = SafetensorsFile.Open(single);
            files.Add(only);
            foreach (var (name, info) in only.Tensors)
            {
                tensors.Add(name, (only, info));
            }
            return new SafetensorsWeights(folder, null, files, tensors);
        }
        catch
        {
            foreach (var file in files)
            {
                file.Dispose();
            }
            throw;
        }
    }

    private static Dictionary<string, string> ReadIndex(string indexPath)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            {
                throw new SafetensorsException(indexPath, null, "bad index: no 'weight_map' object.");
            }
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                {
                    throw new SafetensorsException(indexPath, entry.Name, "bad index: the weight_map value is not a file name.");
                }
                result[entry.Name] = entry.Value.GetString()!;
            }
            return result;
        }
        catch (JsonException ex)
        {
            throw new SafetensorsException(indexPath, null, $"bad index: the JSON does not parse ({ex.Message}).");
        }
    }

    /// <summary>Whether a tensor named <paramref name="name"/> exists.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>
    /// The tensor <paramref name="name"/>, checked to have <paramref name="expectedShape"/> and a dtype the loader reads.
    /// </summary>
    /// <exception cref="SafetensorsException">Missing, wrong shape or unsupported dtype; the message names file and tensor.</exception>
    public (SafetensorsFile File, SafetensorsTensorInfo Info) Require(string name, params long[] expectedShape)
    {
        if (!_tensors.TryGetValue(name, out var entry))
        {
            var where = IndexPath ?? _files[0].FilePath;
            throw new SafetensorsException(where, name, "missing tensor: the model's architecture needs it but the weights have no tensor of that name.");
        }
        if (!entry.Info.Shape.AsSpan().SequenceEqual(expectedShape))
        {
            throw new SafetensorsException(entry.File.FilePath, name,
                $"wrong shape: expected {SafetensorsTensorInfo.FormatShape(expectedShape)} (from config.json) but found {entry.Info.ShapeText}.");
        }
        if (entry.Info.DType is null)
        {
            throw WeightConversion.UnsupportedDType(entry.Info);
        }
        return entry;
    }

    /// <summary>Reads <paramref name="name"/> (checked against <paramref name="expectedShape"/>) as fp32 into <paramref name="destination"/>.</summary>
    public void ReadFloat32(string name, Span<float> destination, params long[] expectedShape)
    {
        var (file, info) = Require(name, expectedShape);
        WeightConversion.ToFloat32(info, file.Bytes(info), destination);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var file in _files)
        {
            file.Dispose();
        }
    }
}
