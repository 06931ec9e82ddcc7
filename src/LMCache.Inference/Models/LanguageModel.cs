using System.Security.Cryptography;
using System.Text.Json;
using LMCache.Inference.Onnx;
using LMCache.Inference.Templates;
using LMCache.Inference.Tokenization;

namespace LMCache.Inference.Models;

/// <summary>
/// A Hugging Face model folder loaded for inference: <c>config.json</c> (+ <c>generation_config.json</c>),
/// <c>tokenizer.json</c>, the chat template and <c>onnx/model.onnx</c> (or <c>model.onnx</c>).
/// </summary>
public sealed class LanguageModel : IDisposable
{
    private LanguageModel(string folder, string name, ModelConfig config, HfTokenizer tokenizer, ChatTemplate? chatTemplate,
        OnnxDecoder decoder, IReadOnlyList<int> eosTokenIds, string fingerprint, string onnxPath)
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

    /// <summary>The ONNX file the decoder was loaded from.</summary>
    public string OnnxPath { get; }

    /// <summary>Token ids that end generation (config, generation_config and tokenizer_config's eos_token).</summary>
    public IReadOnlyList<int> EosTokenIds { get; }

    /// <summary>Maximum prompt + completion tokens (<c>max_position_embeddings</c>).</summary>
    public int ContextLength => Config.MaxPositionEmbeddings;

    /// <summary>
    /// A short hex digest of the KV geometry, dtype and weights (config.json bytes, ONNX file sizes and the first
    /// and last MiB of the ONNX file): part of the cache key so different models or exports never share chunks.
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

        if (options.GraphSource == ModelGraphSource.Built || options.Quantization != WeightQuantization.None)
        {
            // Temporary: the safetensors loader and graph builder land in the following commits of this branch.
            throw new NotSupportedException("Building the decoder graph from safetensors is not available yet.");
        }
        var onnxPath = new[] { Path.Combine(folder, "onnx", "model.onnx"), Path.Combine(folder, "model.onnx") }.FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException($"Model folder '{folder}' has neither onnx/model.onnx nor model.onnx.");

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

        var decoder = OnnxDecoder.Load(onnxPath, config, intraOpThreads);
        try
        {
            return new LanguageModel(folder, servedName ?? Path.GetFileName(folder.TrimEnd(Path.DirectorySeparatorChar)), config, tokenizer, template, decoder, eos,
                ComputeFingerprint(configText, onnxPath, decoder), onnxPath);
        }
        catch
        {
            decoder.Dispose();
            throw;
        }
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
