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
        if (root.TryGetProperty("rope_parameters", out var rp) && rp.ValueKind == JsonValueKind.Object)
        {
            // transformers 5: rope_parameters may also be keyed per layer type ({"full_attention": {...}}).
            var source = rp.TryGetProperty("rope_theta", out _) ? rp : FirstObject(rp) ?? rp;
            ropeTheta = OptionalDouble(source, "rope_theta") ?? ropeTheta;
            ropeType = OptionalString(source, "rope_type") ?? ropeType;
        }
        else
        {
            ropeTheta = OptionalDouble(root, "rope_theta") ?? ropeTheta;
            if (root.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind == JsonValueKind.Object)
            {
                ropeType = OptionalString(rs, "rope_type") ?? OptionalString(rs, "type") ?? ropeType;
            }
        }

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

    private static string? OptionalString(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
