namespace LMCache.Inference.Models;

/// <summary>How a built decoder graph stores its linear-layer weights (the <c>--quantize</c> flag).</summary>
public enum WeightQuantization
{
    /// <summary>fp32 weights, fp32 compute (the default; bf16/fp16 files are widened once at load).</summary>
    None,

    /// <summary>Weight-only 8-bit blocks through ONNX Runtime's <c>com.microsoft.MatMulNBits</c>; activations stay fp32.</summary>
    Int8,

    /// <summary>Weight-only 4-bit blocks through ONNX Runtime's <c>com.microsoft.MatMulNBits</c>; activations stay fp32.</summary>
    Int4,
}

/// <summary>Where the decoder graph of a model folder comes from.</summary>
public enum ModelGraphSource
{
    /// <summary><c>onnx/model.onnx</c> (or <c>model.onnx</c>) when the folder has one, else built from the safetensors.</summary>
    Auto,

    /// <summary>The folder's <c>optimum</c> ONNX export; an error when it has none.</summary>
    OnnxExport,

    /// <summary>Built in C# from <c>config.json</c> and the safetensors weights, even when an export exists.</summary>
    Built,
}

/// <summary>Options for <see cref="LanguageModel.Load(string, ModelLoadOptions?)"/>; every default is the one stated.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>The name the model is served as (<c>/v1/models</c>). Defaults to the folder name.</summary>
    public string? ServedName { get; init; }

    /// <summary>ONNX Runtime intra-op threads. Defaults to 0: ONNX Runtime's choice (one per core).</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>
    /// Weight quantization of a built graph. Defaults to <see cref="WeightQuantization.None"/> (fp32 compute).
    /// Anything else needs the built graph: with <see cref="ModelGraphSource.Auto"/> it builds from the safetensors even
    /// when the folder has an export.
    /// </summary>
    public WeightQuantization Quantization { get; init; }

    /// <summary>Where the decoder graph comes from. Defaults to <see cref="ModelGraphSource.Auto"/>.</summary>
    public ModelGraphSource GraphSource { get; init; }

    /// <summary>Receives progress lines on long loads (e.g. <c>loading weights 3/16 …</c>). Defaults to none.</summary>
    public Action<string>? Progress { get; init; }
}
