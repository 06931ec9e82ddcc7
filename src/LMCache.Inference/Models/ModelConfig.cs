using System.Globalization;
using System.Text.Json;

namespace LMCache.Inference.Models;

/// <summary>
/// The fields of a Hugging Face <c>config.json</c> the engine needs: architecture sizes, RoPE, special token ids.
/// Accepts both the older layout (<c>rope_theta</c> at the top level) and the transformers-5 layout
/// (<c>rope_parameters.rope_theta</c>).
/// </summary>
public sealed class ModelConfig
{
    /// <summary>The <c>model_type</c> (e.g. <c>llama</c>, <c>qwen2</c>); empty when absent.</summary>
    public required string ModelType { get; init; }

    /// <summary>Hidden size (<c>hidden_size</c>).</summary>
    public required int HiddenSize { get; init; }

    /// <summary>Number of decoder layers (<c>num_hidden_layers</c>).</summary>
    public required int NumLayers { get; init; }

    /// <summary>Number of query heads (<c>num_attention_heads</c>).</summary>
    public required int NumAttentionHeads { get; init; }

    /// <summary>Number of KV heads (<c>num_key_value_heads</c>; defaults to the query heads, i.e. no GQA).</summary>
    public required int NumKeyValueHeads { get; init; }

    /// <summary>Per-head dimension (<c>head_dim</c>; defaults to hidden / heads).</summary>
    public required int HeadDim { get; init; }

    /// <summary>Vocabulary size (<c>vocab_size</c>).</summary>
    public required int VocabSize { get; init; }

    /// <summary>Maximum context in tokens (<c>max_position_embeddings</c>; defaults to 2048 when absent).</summary>
    public required int MaxPositionEmbeddings { get; init; }

    /// <summary>RoPE base (<c>rope_parameters.rope_theta</c> or top-level <c>rope_theta</c>; defaults to 10000 as in transformers).</summary>
    public required double RopeTheta { get; init; }

    /// <summary>RoPE type (<c>rope_parameters.rope_type</c> or <c>rope_scaling.rope_type</c>); <c>default</c> when absent.</summary>
    public required string RopeType { get; init; }

    /// <summary>BOS token id, or null.</summary>
    public int? BosTokenId { get; init; }

    /// <summary>EOS token ids (<c>eos_token_id</c> may be a number or a list); empty when absent.</summary>
    public required IReadOnlyList<int> EosTokenIds { get; init; }

    /// <summary>The declared weight dtype (<c>dtype</c> or <c>torch_dtype</c>), e.g. <c>float32</c>; null when absent.</summary>
    public string? DType { get; init; }

    /// <summary>The <c>architectures</c> list (e.g. <c>LlamaForCausalLM</c>); empty when absent.</summary>
    public IReadOnlyList<string> Architectures { get; init; } = [];

    /// <summary>MLP inner size (<c>intermediate_size</c>); 0 when absent.</summary>
    public int IntermediateSize { get; init; }

    /// <summary>RMSNorm epsilon (<c>rms_norm_eps</c>; defaults to 1e-6 as in transformers' Llama).</summary>
    public double RmsNormEps { get; init; } = 1e-6;

    /// <summary>MLP activation (<c>hidden_act</c>; defaults to <c>silu</c>).</summary>
    public string HiddenAct { get; init; } = "silu";

    /// <summary>Whether the LM head shares the embedding matrix (<c>tie_word_embeddings</c>; defaults to false).</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary>Whether q/k/v/o projections have biases (<c>attention_bias</c>; defaults to false).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Whether the MLP projections have biases (<c>mlp_bias</c>; defaults to false).</summary>
    public bool MlpBias { get; init; }

    /// <summary>Sliding attention window in tokens (<c>sliding_window</c>), or null for full attention.</summary>
    public int? SlidingWindow { get; init; }

    /// <summary><c>use_sliding_window</c> (Qwen2/3: the window applies only when true); null when absent.</summary>
    public bool? UseSlidingWindow { get; init; }

    /// <summary><c>max_window_layers</c> (Qwen2/3: layers from this index on use the window); null when absent.</summary>
    public int? MaxWindowLayers { get; init; }

    /// <summary>Per-layer attention kinds (<c>layer_types</c>: <c>full_attention</c> / <c>sliding_attention</c>); null when absent.</summary>
    public IReadOnlyList<string>? LayerTypes { get; init; }

    /// <summary>RoPE scaling parameters beyond the type and base (from <c>rope_parameters</c> or <c>rope_scaling</c>).</summary>
    public RopeScalingParameters RopeScaling { get; init; } = new();

    /// <summary>Parses <c>config.json</c> text.</summary>
    /// <exception cref="InvalidDataException">A required field is missing or has the wrong type.</exception>
    public static ModelConfig Parse(string json, IReadOnlyList<int>? generationEosIds = null)
    {
        using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        var root = doc.RootElement;
        // Multimodal configs nest the language model under text_config.
        if (root.TryGetProperty("text_config", out var text) && text.ValueKind == JsonValueKind.Object && !root.TryGetProperty("hidden_size", out _))
        {
            root = text;
        }
        var hidden = RequiredInt(root, "hidden_size");
        var heads = RequiredInt(root, "num_attention_heads");
        var kvHeads = OptionalInt(root, "num_key_value_heads") ?? heads;
        var headDim = OptionalInt(root, "head_dim") ?? hidden / heads;

        double ropeTheta = 10000.0;
        var ropeType = "default";
        JsonElement? ropeSource = null;
        if (root.TryGetProperty("rope_parameters", out var rp) && rp.ValueKind == JsonValueKind.Object)
        {
            // transformers 5: rope_parameters may also be keyed per layer type ({"full_attention": {...}}).
            var source = rp.TryGetProperty("rope_theta", out _) || rp.TryGetProperty("rope_type", out _) ? rp : FirstObject(rp) ?? rp;
            ropeSource = source;
            ropeTheta = OptionalDouble(source, "rope_theta") ?? OptionalDouble(root, "rope_theta") ?? ropeTheta;
            ropeType = OptionalString(source, "rope_type") ?? OptionalString(source, "type") ?? ropeType;
        }
        else
        {
            ropeTheta = OptionalDouble(root, "rope_theta") ?? ropeTheta;
            if (root.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind == JsonValueKind.Object)
            {
                ropeSource = rs;
                ropeType = OptionalString(rs, "rope_type") ?? OptionalString(rs, "type") ?? ropeType;
            }
        }
        // Phi-3 names su / longrope "longrope"; older exports say "su" (and "yarn" is not supported by the builder).
        if (ropeType == "su")
        {
            ropeType = "longrope";
        }
        var scaling = new RopeScalingParameters
        {
            Factor = ropeSource is { } f ? OptionalDouble(f, "factor") : null,
            LowFreqFactor = ropeSource is { } lf ? OptionalDouble(lf, "low_freq_factor") : null,
            HighFreqFactor = ropeSource is { } hf ? OptionalDouble(hf, "high_freq_factor") : null,
            OriginalMaxPositionEmbeddings = (ropeSource is { } om ? OptionalInt(om, "original_max_position_embeddings") : null)
                ?? OptionalInt(root, "original_max_position_embeddings"),
            OriginalMaxPositionEmbeddingsAtTopLevel = OptionalInt(root, "original_max_position_embeddings") is not null,
            AttentionFactor = ropeSource is { } af ? OptionalDouble(af, "attention_factor") : null,
            ShortFactor = ropeSource is { } sf ? OptionalDoubles(sf, "short_factor") : null,
            LongFactor = ropeSource is { } lgf ? OptionalDoubles(lgf, "long_factor") : null,
            PartialRotaryFactor = (ropeSource is { } pr ? OptionalDouble(pr, "partial_rotary_factor") : null)
                ?? OptionalDouble(root, "partial_rotary_factor") ?? 1.0,
        };

        var eos = new List<int>();
        if (root.TryGetProperty("eos_token_id", out var eosElement))
        {
            AddIds(eosElement, eos);
        }
        if (generationEosIds is not null)
        {
            foreach (var id in generationEosIds)
            {
                if (!eos.Contains(id))
                {
                    eos.Add(id);
                }
            }
        }

        return new ModelConfig
        {
            ModelType = OptionalString(root, "model_type") ?? "",
            HiddenSize = hidden,
            NumLayers = RequiredInt(root, "num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = RequiredInt(root, "vocab_size"),
            MaxPositionEmbeddings = OptionalInt(root, "max_position_embeddings") ?? 2048,
            RopeTheta = ropeTheta,
            RopeType = ropeType,
            BosTokenId = root.TryGetProperty("bos_token_id", out var bos) && bos.ValueKind == JsonValueKind.Number ? bos.GetInt32() : null,
            EosTokenIds = eos,
            DType = OptionalString(root, "dtype") ?? OptionalString(root, "torch_dtype"),
            Architectures = root.TryGetProperty("architectures", out var archs) && archs.ValueKind == JsonValueKind.Array
                ? archs.EnumerateArray().Where(a => a.ValueKind == JsonValueKind.String).Select(a => a.GetString()!).ToArray()
                : [],
            IntermediateSize = OptionalInt(root, "intermediate_size") ?? 0,
            RmsNormEps = OptionalDouble(root, "rms_norm_eps") ?? 1e-6,
            HiddenAct = OptionalString(root, "hidden_act") ?? OptionalString(root, "hidden_activation") ?? "silu",
            TieWordEmbeddings = OptionalBool(root, "tie_word_embeddings") ?? false,
            AttentionBias = OptionalBool(root, "attention_bias") ?? false,
            MlpBias = OptionalBool(root, "mlp_bias") ?? false,
            SlidingWindow = OptionalInt(root, "sliding_window"),
            UseSlidingWindow = OptionalBool(root, "use_sliding_window"),
            MaxWindowLayers = OptionalInt(root, "max_window_layers"),
            LayerTypes = root.TryGetProperty("layer_types", out var lt) && lt.ValueKind == JsonValueKind.Array
                ? lt.EnumerateArray().Select(a => a.GetString() ?? "").ToArray()
                : null,
            RopeScaling = scaling,
        };
    }

    /// <summary>Reads the EOS ids of a <c>generation_config.json</c> (number or list); empty when absent.</summary>
    public static IReadOnlyList<int> ParseGenerationEos(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var ids = new List<int>();
        if (doc.RootElement.TryGetProperty("eos_token_id", out var e))
        {
            AddIds(e, ids);
        }
        return ids;
    }

    private static void AddIds(JsonElement element, List<int> ids)
    {
        if (element.ValueKind == JsonValueKind.Number)
        {
            ids.Add(element.GetInt32());
        }
        else if (element.ValueKind == JsonValueKind.Array)
        {
            foreach (var item in element.EnumerateArray())
            {
                if (item.ValueKind == JsonValueKind.Number && !ids.Contains(item.GetInt32()))
                {
                    ids.Add(item.GetInt32());
                }
            }
        }
    }

    private static JsonElement? FirstObject(JsonElement element)
    {
        foreach (var property in element.EnumerateObject())
        {
            if (property.Value.ValueKind == JsonValueKind.Object)
            {
                return property.Value;
            }
        }
        return null;
    }

    private static int RequiredInt(JsonElement root, string name) =>
        OptionalInt(root, name) ?? throw new InvalidDataException($"config.json: '{name}' is missing or not an integer.");

    private static int? OptionalInt(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : null;

    private static double? OptionalDouble(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble()
        : v.ValueKind == JsonValueKind.String && double.TryParse(v.GetString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d : null;

    private static bool? OptionalBool(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    private static double[]? OptionalDoubles(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array
            ? v.EnumerateArray().Select(x => x.GetDouble()).ToArray()
            : null;

    private static string? OptionalString(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}

/// <summary>
/// RoPE scaling parameters of <c>rope_parameters</c> / <c>rope_scaling</c> (each null when the config has none).
/// Which ones apply depends on <see cref="ModelConfig.RopeType"/>: <c>linear</c> and <c>dynamic</c> use
/// <see cref="Factor"/>; <c>llama3</c> adds the low/high frequency factors and the original context; <c>longrope</c>
/// uses the short/long factors, the original context and the attention factor.
/// </summary>
public sealed record RopeScalingParameters
{
    /// <summary><c>factor</c>.</summary>
    public double? Factor { get; init; }

    /// <summary><c>low_freq_factor</c> (llama3).</summary>
    public double? LowFreqFactor { get; init; }

    /// <summary><c>high_freq_factor</c> (llama3).</summary>
    public double? HighFreqFactor { get; init; }

    /// <summary><c>original_max_position_embeddings</c> (from the RoPE parameters or, for Phi-3, the top level).</summary>
    public int? OriginalMaxPositionEmbeddings { get; init; }

    /// <summary>Whether <c>original_max_position_embeddings</c> is a top-level config field (Phi-3's layout; changes longrope's default factor).</summary>
    public bool OriginalMaxPositionEmbeddingsAtTopLevel { get; init; }

    /// <summary><c>attention_factor</c> (longrope); null = derived from the context extension.</summary>
    public double? AttentionFactor { get; init; }

    /// <summary><c>short_factor</c> (longrope): one per rotary frequency.</summary>
    public IReadOnlyList<double>? ShortFactor { get; init; }

    /// <summary><c>long_factor</c> (longrope): one per rotary frequency.</summary>
    public IReadOnlyList<double>? LongFactor { get; init; }

    /// <summary><c>partial_rotary_factor</c>: the share of each head's dimensions that is rotated (defaults to 1).</summary>
    public double PartialRotaryFactor { get; init; } = 1.0;
}
