using System.Diagnostics.Metrics;
using LMCache.Core.Configuration;
using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using LMCache.Serving;
using LMCache.Storage.Remote;

namespace LMCache.Hosting;

/// <summary>
/// What <see cref="LMCacheHost"/> builds, as objects (embedding, tests). Every member has a working default: a host
/// from <c>new LMCacheHostOptions()</c> serves the built-in demo model with the default cache configuration on
/// 127.0.0.1:8000.
/// </summary>
public sealed class LMCacheHostOptions
{
    /// <summary>The cache configuration (what <see cref="LMCacheConfigLoader"/> loads). Defaults to the built-in defaults.</summary>
    public LMCacheEngineOptions Cache { get; init; } = new();

    /// <summary>
    /// An already loaded model. The caller owns it: the host never disposes it. Defaults to null: the host loads
    /// <see cref="ModelFolder"/> (or the built-in demo model) and disposes it.
    /// </summary>
    public LanguageModel? Model { get; init; }

    /// <summary>
    /// A Hugging Face model folder (config.json, tokenizer.json, and model.safetensors / sharded safetensors or an
    /// optimum onnx/model.onnx), loaded when <see cref="Model"/> is null. Defaults to null: the built-in demo model (random weights), generated on first use.
    /// </summary>
    public string? ModelFolder { get; init; }

    /// <summary>
    /// Weight-only quantization when the host loads <see cref="ModelFolder"/>: int8 / int4 build the decoder graph from
    /// the safetensors weights with ONNX Runtime's <c>MatMulNBits</c> (docs/serving.md has the measured accuracy).
    /// Defaults to <see cref="WeightQuantization.None"/> (fp32 compute).
    /// </summary>
    public WeightQuantization Quantization { get; init; }

    /// <summary>The model's name in the API when the host loads it. Defaults to the folder name (lmcache-demo-llama for the demo model).</summary>
    public string? ServedModelName { get; init; }

    /// <summary>ONNX Runtime intra-op threads when the host loads the model; 0 = one per core. Defaults to 0.</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>Options of the inference engine. Defaults to its defaults.</summary>
    public InferenceEngineOptions? Inference { get; init; }

    /// <summary>The OpenAI HTTP server; null runs without one (in-process benchmarks). Defaults to 127.0.0.1:8000.</summary>
    public OpenAiServerOptions? Server { get; init; } = new();

    /// <summary>Connector factories registered after (and so over) the built-in ones. Defaults to none.</summary>
    public IReadOnlyList<IRemoteConnectorFactory> RemoteConnectors { get; init; } = [];

    /// <summary>Meters of the cache engine. Defaults to private meters.</summary>
    public IMeterFactory? MeterFactory { get; init; }

    /// <summary>
    /// The options of <c>lmcache serve</c>: the configuration as loaded from <paramref name="arguments"/>'s file, the
    /// <c>LMCACHE_*</c> environment and <paramref name="overrides"/> (in that precedence, as
    /// <see cref="LMCacheConfigLoader.LoadFromProcess"/>), plus the command-line options.
    /// </summary>
    /// <exception cref="Core.Diagnostics.LMCacheConfigurationException">The configuration is invalid.</exception>
    public static LMCacheHostOptions FromArguments(LMCacheServeArguments arguments, out LoadedConfiguration configuration, IReadOnlyDictionary<string, object?>? overrides = null)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        configuration = LMCacheConfigLoader.LoadFromProcess(arguments.ConfigFile, overrides);
        return new LMCacheHostOptions
        {
            Cache = configuration.Options,
            ModelFolder = arguments.ModelFolder,
            Quantization = arguments.Quantize,
            ServedModelName = arguments.ServedModelName,
            IntraOpThreads = arguments.Threads,
            Server = new OpenAiServerOptions { Host = arguments.Host, Port = arguments.Port },
        };
    }
}

/// <summary>The command-line options of <c>lmcache serve</c>, with the same defaults.</summary>
public sealed record LMCacheServeArguments
{
    /// <summary><c>MODEL_DIR</c>: a Hugging Face model folder; null for the built-in demo model.</summary>
    public string? ModelFolder { get; init; }

    /// <summary><c>--host</c>: address to bind. Defaults to 127.0.0.1.</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary><c>--port</c>: TCP port (0 picks a free one). Defaults to 8000.</summary>
    public int Port { get; init; } = 8000;

    /// <summary><c>--config</c>: configuration file (YAML or JSON) instead of <c>LMCACHE_CONFIG_FILE</c>. Defaults to none.</summary>
    public string? ConfigFile { get; init; }

    /// <summary><c>--quantize none|int8|int4</c>: weight-only quantization of a model built from safetensors. Defaults to none.</summary>
    public WeightQuantization Quantize { get; init; }

    /// <summary><c>--served-model-name</c>: the model's name in the API. Defaults to the folder name.</summary>
    public string? ServedModelName { get; init; }

    /// <summary><c>--threads</c>: ONNX Runtime intra-op threads; 0 = one per core. Defaults to 0.</summary>
    public int Threads { get; init; }
}
