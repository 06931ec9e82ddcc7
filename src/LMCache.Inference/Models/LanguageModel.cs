using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using LMCache.Inference.Models.Graph;
using LMCache.Inference.Models.Safetensors;
using LMCache.Inference.Onnx;
using LMCache.Inference.Templates;
using LMCache.Inference.Tokenization;

namespace LMCache.Inference.Models;

/// <summary>
/// A Hugging Face model folder loaded for inference: <c>config.json</c> (+ <c>generation_config.json</c>),
/// <c>tokenizer.json</c>, the chat template and either <c>onnx/model.onnx</c> (or <c>model.onnx</c>), an optimum
/// export, or the <c>model.safetensors</c> weights (single or sharded), from which the decoder graph is built in C#.
/// </summary>
public sealed class LanguageModel : IDisposable
{
    private LanguageModel(string folder, string name, ModelConfig config, HfTokenizer tokenizer, ChatTemplate? chatTemplate,
        OnnxDecoder decoder, IReadOnlyList<int> eosTokenIds, string fingerprint, string? onnxPath, WeightQuantization quantization)
    {
        Folder = folder;
        Name = name;
        Config = config;
        Tokenizer = tokenizer;
        ChatTemplate = chatTemplate;
        Decoder = decoder;
        EosTokenIds = eosTokenIds;
        Fingerprint = fingerprint;
        OnnxPath = onnxPath;
        Quantization = quantization;
    }

    /// <summary>The model folder (absolute).</summary>
    public string Folder { get; }

    /// <summary>The model's name as served (<c>/v1/models</c>): the folder name unless given.</summary>
    public string Name { get; }

    /// <summary>The parsed config.json.</summary>
    public ModelConfig Config { get; }

    /// <summary>The tokenizer.</summary>
    public HfTokenizer Tokenizer { get; }

    /// <summary>The chat template, or null when the folder has none (chat requests are then refused).</summary>
    public ChatTemplate? ChatTemplate { get; }

    /// <summary>The ONNX decoder.</summary>
    public OnnxDecoder Decoder { get; }

    /// <summary>The ONNX file the decoder was loaded from, or null when the graph was built from the safetensors weights.</summary>
    public string? OnnxPath { get; }

    /// <summary>Whether the decoder graph was built in C# from the safetensors weights (else it is the folder's ONNX export).</summary>
    public bool IsBuiltGraph => OnnxPath is null;

    /// <summary>How the built graph stores its linear weights (<see cref="WeightQuantization.None"/> for an export).</summary>
    public WeightQuantization Quantization { get; }

    /// <summary>Token ids that end generation (config, generation_config and tokenizer_config's eos_token).</summary>
    public IReadOnlyList<int> EosTokenIds { get; }

    /// <summary>Maximum prompt + completion tokens (<c>max_position_embeddings</c>).</summary>
    public int ContextLength => Config.MaxPositionEmbeddings;

    /// <summary>
    /// A short hex digest of the KV geometry, dtype and weights: part of the cache key so different models, exports or
    /// quantizations never share chunks. For an export: config.json bytes, ONNX file sizes and the first and last MiB of
    /// each ONNX file. For a built graph: config.json bytes, the shard index, each shard's size and header (every
    /// tensor's name, dtype, shape and offsets), the first and last MiB of each shard, the builder version and the
    /// quantization.
    /// </summary>
    public string Fingerprint { get; }

    /// <summary>Loads a model folder.</summary>
    /// <param name="folder">The folder.</param>
    /// <param name="servedName">Name to serve the model as; defaults to the folder name.</param>
    /// <param name="intraOpThreads">ONNX Runtime intra-op threads; 0 = one per core.</param>
    /// <exception cref="FileNotFoundException">A required file is missing.</exception>
    /// <exception cref="InvalidDataException">A file is malformed or inconsistent with the others.</exception>
    public static LanguageModel Load(string folder, string? servedName = null, int intraOpThreads = 0) =>
        Load(folder, new ModelLoadOptions { ServedName = servedName, IntraOpThreads = intraOpThreads });

    /// <summary>Loads a model folder with <paramref name="options"/> (defaults when null).</summary>
    /// <param name="folder">The folder.</param>
    /// <param name="options">Served name, threads, quantization, graph source and progress; null = the defaults.</param>
    /// <exception cref="FileNotFoundException">A required file is missing.</exception>
    /// <exception cref="InvalidDataException">A file is malformed or inconsistent with the others.</exception>
    public static LanguageModel Load(string folder, ModelLoadOptions? options)
    {
        options ??= new ModelLoadOptions();
        var servedName = options.ServedName;
        var intraOpThreads = options.IntraOpThreads;
        folder = Path.GetFullPath(folder);
        var configPath = Path.Combine(folder, "config.json");
        if (!File.Exists(configPath))
        {
            throw new FileNotFoundException($"Model folder '{folder}' has no config.json.", configPath);
        }
        var generationPath = Path.Combine(folder, "generation_config.json");
        var generationEos = File.Exists(generationPath) ? ModelConfig.ParseGenerationEos(File.ReadAllText(generationPath)) : null;
        var configText = File.ReadAllText(configPath);
        var config = ModelConfig.Parse(configText, generationEos);

        var tokenizerPath = Path.Combine(folder, "tokenizer.json");
        if (!File.Exists(tokenizerPath))
        {
            throw new FileNotFoundException($"Model folder '{folder}' has no tokenizer.json.", tokenizerPath);
        }
        var tokenizer = HfTokenizer.Load(tokenizerPath);
        var template = ChatTemplate.Load(folder);

        var onnxPath = new[] { Path.Combine(folder, "onnx", "model.onnx"), Path.Combine(folder, "model.onnx") }.FirstOrDefault(File.Exists);
        var build = options.GraphSource switch
        {
            ModelGraphSource.Built => true,
            ModelGraphSource.OnnxExport => false,
            // Quantization is a property of the built graph, so asking for it builds even beside an export.
            _ => onnxPath is null || options.Quantization != WeightQuantization.None,
        };
        if (!build && options.Quantization != WeightQuantization.None)
        {
            throw new NotSupportedException($"--quantize {options.Quantization.ToString().ToLowerInvariant()} needs the decoder graph built from the safetensors weights; it does not apply to an ONNX export.");
        }
        if (!build && onnxPath is null)
        {
            throw new FileNotFoundException($"Model folder '{folder}' has neither onnx/model.onnx nor model.onnx.");
        }
        if (build && !SafetensorsWeights.Exists(folder))
        {
            throw new FileNotFoundException(onnxPath is null
                ? $"Model folder '{folder}' has no weights: neither {SafetensorsWeights.SingleFileName}, {SafetensorsWeights.IndexFileName}, onnx/model.onnx nor model.onnx."
                : $"Model folder '{folder}' has no {SafetensorsWeights.SingleFileName} or {SafetensorsWeights.IndexFileName} to build the decoder graph from.");
        }

        var eos = new List<int>(config.EosTokenIds);
        var tokenizerConfig = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(tokenizerConfig))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(tokenizerConfig));
            if (doc.RootElement.TryGetProperty("eos_token", out var e))
            {
                var text = e.ValueKind == JsonValueKind.String ? e.GetString() : e.ValueKind == JsonValueKind.Object && e.TryGetProperty("content", out var c) ? c.GetString() : null;
                if (text is not null && tokenizer.TokenToId(text) is { } id && !eos.Contains(id))
                {
                    eos.Add(id);
                }
            }
        }

        OnnxDecoder decoder;
        string fingerprint;
        if (build)
        {
            var weights = SafetensorsWeights.Open(folder);
            string weightsDigest;
            try
            {
                weightsDigest = WeightsFingerprint(weights, options.Quantization);
            }
            catch
            {
                weights.Dispose();
                throw;
            }
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            // The graph outputs only the new KV and reads the past in place, so a batched decode step never copies the
            // batch's past (docs/serving.md, "Scheduler"); the KV it computes is the Present graph's.
            var graph = DecoderGraphBuilder.Build(config, weights, options.Quantization, options.Progress, DecoderGraphOutputs.NewOnly);
            decoder = OnnxDecoder.Create(graph, config, intraOpThreads);
            options.Progress?.Invoke(string.Create(CultureInfo.InvariantCulture,
                $"decoder graph built: {graph.Architecture.Name}, {graph.Weights.Bytes / (1024.0 * 1024.0):F1} MiB of weights ({graph.Quantization.ToString().ToLowerInvariant()}) in {System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds:F2} s"));
            fingerprint = ComputeFingerprint(configText, decoder, weightsDigest);
        }
        else
        {
            decoder = OnnxDecoder.Load(onnxPath!, config, intraOpThreads);
            fingerprint = ComputeFingerprint(configText, onnxPath!, decoder);
        }
        try
        {
            return new LanguageModel(folder, servedName ?? Path.GetFileName(folder.TrimEnd(Path.DirectorySeparatorChar)), config, tokenizer, template, decoder, eos,
                fingerprint, build ? null : onnxPath, options.Quantization);
        }
        catch
        {
            decoder.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Digest of the safetensors weights as loaded, without hashing gigabytes: the index file, every shard's size and
    /// JSON header (each tensor's name, dtype, shape and offsets) and the first and last MiB of each shard's data,
    /// plus the graph builder's version and the quantization (so two quantizations never share cache chunks).
    /// </summary>
    private static string WeightsFingerprint(SafetensorsWeights weights, WeightQuantization quantization)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(System.Text.Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture,
            $"built-v{DecoderGraphBuilder.Version}|quantize={quantization}|block={WeightQuantizer.BlockSize}|")));
        if (weights.IndexPath is { } index)
        {
            hash.AppendData(File.ReadAllBytes(index));
        }
        const int Sample = 1 << 20;
        foreach (var file in weights.Files)
        {
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes(Path.GetFileName(file.FilePath)));
            hash.AppendData(BitConverter.GetBytes(file.Length));
            hash.AppendData(file.HeaderBytes.Span);
            var dataStart = 8L + file.HeaderBytes.Length;
            var dataLength = file.Length - dataStart;
            var head = (int)Math.Min(Sample, dataLength);
            hash.AppendData(file.FileBytes(dataStart, head));
            if (dataLength > Sample)
            {
                var tail = (int)Math.Min(Sample, dataLength - Sample);
                hash.AppendData(file.FileBytes(file.Length - tail, tail));
            }
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    private static string ComputeFingerprint(string configText, OnnxDecoder decoder, string weightsDigest)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(System.Text.Encoding.UTF8.GetBytes(configText));
        hash.AppendData(System.Text.Encoding.UTF8.GetBytes(decoder.Layout.ToString()));
        hash.AppendData(System.Text.Encoding.UTF8.GetBytes(weightsDigest));
        return Convert.ToHexStringLower(hash.GetHashAndReset())[..12];
    }

    private static string ComputeFingerprint(string configText, string onnxPath, OnnxDecoder decoder)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(System.Text.Encoding.UTF8.GetBytes(configText));
        hash.AppendData(System.Text.Encoding.UTF8.GetBytes(decoder.Layout.ToString()));
        var files = new List<string> { onnxPath };
        var folder = Path.GetDirectoryName(onnxPath)!;
        files.AddRange(Directory.EnumerateFiles(folder, Path.GetFileName(onnxPath) + "_data*").Order(StringComparer.Ordinal));
        files.AddRange(Directory.EnumerateFiles(folder, "*.onnx.data").Order(StringComparer.Ordinal));
        var buffer = new byte[1 << 20];
        foreach (var file in files.Distinct())
        {
            using var stream = File.OpenRead(file);
            hash.AppendData(BitConverter.GetBytes(stream.Length));
            var read = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
            hash.AppendData(buffer, 0, read);
            if (stream.Length > buffer.Length)
            {
                stream.Seek(-Math.Min(buffer.Length, stream.Length - buffer.Length), SeekOrigin.End);
                read = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
                hash.AppendData(buffer, 0, read);
            }
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset())[..12];
    }

    /// <inheritdoc />
    public void Dispose() => Decoder.Dispose();
}
