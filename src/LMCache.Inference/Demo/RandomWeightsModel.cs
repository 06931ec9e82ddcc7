using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LMCache.Inference.Models.Safetensors;

namespace LMCache.Inference.Demo;

/// <summary>Options of <see cref="RandomWeightsModel.Write"/>; every default is the one stated.</summary>
public sealed record RandomWeightsOptions
{
    /// <summary>Element type of the weight files. Defaults to <see cref="SafetensorsDType.BF16"/> (what Llama 3.2 ships).</summary>
    public SafetensorsDType DType { get; init; } = SafetensorsDType.BF16;

    /// <summary>
    /// Largest shard in bytes of tensor data (decimal, as <c>max_shard_size</c>). Defaults to 1,000,000,000, so the
    /// Llama-3.2-1B shape (2.47 GB in bf16) is written as three shards plus <c>model.safetensors.index.json</c>.
    /// </summary>
    public long MaxShardBytes { get; init; } = 1_000_000_000;

    /// <summary>Seed of the weights; the same seed, config and dtype give the same bytes. Defaults to 2024.</summary>
    public ulong Seed { get; init; } = 2024;

    /// <summary>
    /// The exact <c>generation_config.json</c> text, or null to write one with the config's <c>bos_token_id</c> and
    /// <c>eos_token_id</c>. Defaults to null.
    /// </summary>
    public string? GenerationConfigJson { get; init; }

    /// <summary>Receives progress lines (every 10 % of the bytes and per file). Defaults to none.</summary>
    public Action<string>? Progress { get; init; }
}

/// <summary>
/// Writes a complete Hugging Face model folder with <b>deterministic random weights</b> (its text is meaningless) for
/// a Llama-family <c>config.json</c>: the caller's config.json byte for byte, generation_config.json, the demo's
/// byte-level tokenizer (<see cref="DemoModel.SpecialTokens"/>, 261 ids) with its chat template, and the weights as
/// (sharded) safetensors under transformers' tensor names. Any prompt encodes to ids below 261, valid for any
/// vocabulary at least that large, so a real-size shape such as <see cref="Llama32_1BConfigJson"/> runs on any text.
/// It exists to measure the engine on real-size shapes without downloading a model.
/// </summary>
public static class RandomWeightsModel
{
    private static readonly UTF8Encoding s_utf8NoBom = new(encoderShouldEmitUTF8Identifier: false);

    /// <summary>
    /// <c>config.json</c> of meta-llama/Llama-3.2-1B-Instruct as published (transformers 4.45 layout): hidden 2048,
    /// 16 layers, 32 query heads and 8 KV heads of 64, MLP 8192, vocabulary 128,256, 131,072 positions, RoPE theta
    /// 500,000 with <c>llama3</c> scaling (factor 32, low/high frequency factors 1/4, original 8,192 positions), tied
    /// embeddings, bfloat16. 1,235,814,400 parameters.
    /// </summary>
    public const string Llama32_1BConfigJson = """
        {
          "architectures": [
            "LlamaForCausalLM"
          ],
          "attention_bias": false,
          "attention_dropout": 0.0,
          "bos_token_id": 128000,
          "eos_token_id": [
            128001,
            128008,
            128009
          ],
          "head_dim": 64,
          "hidden_act": "silu",
          "hidden_size": 2048,
          "initializer_range": 0.02,
          "intermediate_size": 8192,
          "max_position_embeddings": 131072,
          "mlp_bias": false,
          "model_type": "llama",
          "num_attention_heads": 32,
          "num_hidden_layers": 16,
          "num_key_value_heads": 8,
          "pretraining_tp": 1,
          "rms_norm_eps": 1e-05,
          "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3"
          },
          "rope_theta": 500000.0,
          "tie_word_embeddings": true,
          "torch_dtype": "bfloat16",
          "transformers_version": "4.45.0.dev0",
          "use_cache": true,
          "vocab_size": 128256
        }

        """;

    /// <summary><c>generation_config.json</c> of meta-llama/Llama-3.2-1B-Instruct as published.</summary>
    public const string Llama32_1BGenerationConfigJson = """
        {
          "bos_token_id": 128000,
          "do_sample": true,
          "eos_token_id": [
            128001,
            128008,
            128009
          ],
          "temperature": 0.6,
          "top_p": 0.9,
          "transformers_version": "4.45.0.dev0"
        }

        """;

    /// <summary>The shapes <c>lmcache bench make-model --shape</c> knows.</summary>
    public static IReadOnlyList<string> Shapes { get; } = ["llama-3.2-1b", "demo"];

    /// <summary>
    /// The config.json and generation_config.json of a named shape: <c>llama-3.2-1b</c> (the published files above)
    /// or <c>demo</c> (the random demo model's sizes, <see cref="DemoModelSpec"/>'s defaults, with the demo tokenizer's
    /// 261-token vocabulary and its special-token ids).
    /// </summary>
    /// <exception cref="ArgumentException">The shape is not one of <see cref="Shapes"/>.</exception>
    public static (string ConfigJson, string GenerationConfigJson) ShapeFiles(string shape, SafetensorsDType dtype)
    {
        switch (shape)
        {
            case "llama-3.2-1b":
                return (Llama32_1BConfigJson, Llama32_1BGenerationConfigJson);
            case "demo":
                var config = DemoShapeConfig(new DemoModelSpec(), dtype);
                return (config, GenerationConfig(config));
            default:
                throw new ArgumentException($"Unknown shape '{shape}'; known shapes: {string.Join(", ", Shapes)}.", nameof(shape));
        }
    }

    /// <summary>
    /// The tensors (transformers' names, module order) of a Llama-family config: embeddings, per layer
    /// <c>self_attn.{q,k,v,o}_proj</c>, <c>mlp.{gate,up,down}_proj</c>, both layer norms, the final norm and
    /// <c>lm_head.weight</c> unless <c>tie_word_embeddings</c>.
    /// </summary>
    /// <exception cref="NotSupportedException">The architecture is not Llama/Mistral, or the config asks for biases.</exception>
    /// <exception cref="InvalidDataException">A size is missing or inconsistent.</exception>
    public static IReadOnlyList<SafetensorsTensorSpec> LlamaTensors(string configJson, SafetensorsDType dtype)
    {
        var shape = LlamaShape.Parse(configJson);
        var tensors = new List<SafetensorsTensorSpec>
        {
            new("model.embed_tokens.weight", dtype, [shape.Vocab, shape.Hidden]),
        };
        for (var l = 0; l < shape.Layers; l++)
        {
            var p = $"model.layers.{l}.";
            tensors.Add(new(p + "self_attn.q_proj.weight", dtype, [(long)shape.Heads * shape.HeadDim, shape.Hidden]));
            tensors.Add(new(p + "self_attn.k_proj.weight", dtype, [(long)shape.KvHeads * shape.HeadDim, shape.Hidden]));
            tensors.Add(new(p + "self_attn.v_proj.weight", dtype, [(long)shape.KvHeads * shape.HeadDim, shape.Hidden]));
            tensors.Add(new(p + "self_attn.o_proj.weight", dtype, [shape.Hidden, (long)shape.Heads * shape.HeadDim]));
            tensors.Add(new(p + "mlp.gate_proj.weight", dtype, [shape.Intermediate, shape.Hidden]));
            tensors.Add(new(p + "mlp.up_proj.weight", dtype, [shape.Intermediate, shape.Hidden]));
            tensors.Add(new(p + "mlp.down_proj.weight", dtype, [shape.Hidden, shape.Intermediate]));
            tensors.Add(new(p + "input_layernorm.weight", dtype, [shape.Hidden]));
            tensors.Add(new(p + "post_attention_layernorm.weight", dtype, [shape.Hidden]));
        }
        tensors.Add(new("model.norm.weight", dtype, [shape.Hidden]));
        if (!shape.TiedEmbeddings)
        {
            tensors.Add(new("lm_head.weight", dtype, [shape.Vocab, shape.Hidden]));
        }
        return tensors;
    }

    /// <summary>
    /// Writes the model folder into <paramref name="folder"/> (created when missing; it must not already hold a
    /// config.json). Weights are uniform with the standard deviation of the config's <c>initializer_range</c>
    /// (0.02 when absent); norm weights are 1.
    /// </summary>
    /// <param name="folder">Destination folder.</param>
    /// <param name="configJson">config.json, written exactly as given.</param>
    /// <param name="options">dtype, shard size, seed, progress; null for the defaults.</param>
    /// <returns>What the safetensors writer wrote.</returns>
    /// <exception cref="IOException">The folder already holds a model.</exception>
    public static SafetensorsWriteResult Write(string folder, string configJson, RandomWeightsOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(configJson);
        options ??= new RandomWeightsOptions();
        var tensors = LlamaTensors(configJson, options.DType);
        var shape = LlamaShape.Parse(configJson);
        if (File.Exists(Path.Combine(folder, "config.json")))
        {
            throw new IOException($"'{folder}' already holds a model (config.json); choose an empty folder.");
        }
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), configJson, s_utf8NoBom);
        File.WriteAllText(Path.Combine(folder, "generation_config.json"), options.GenerationConfigJson ?? GenerationConfig(configJson), s_utf8NoBom);
        DemoModel.WriteJson(Path.Combine(folder, "tokenizer_config.json"), new Dictionary<string, object?>
        {
            ["bos_token"] = DemoModel.SpecialTokens[0],
            ["eos_token"] = DemoModel.SpecialTokens[4],
            ["model_max_length"] = shape.MaxPositions,
        });
        File.WriteAllText(Path.Combine(folder, "chat_template.jinja"), DemoModel.ChatTemplateText);
        DemoModel.WriteTokenizer(Path.Combine(folder, "tokenizer.json"));
        File.WriteAllText(Path.Combine(folder, "README.md"), string.Create(CultureInfo.InvariantCulture,
            $"# Random weights\n\nWritten by LMCache.NET's `RandomWeightsModel` (seed {options.Seed}, {SafetensorsTensorSpec.Token(options.DType)}): the weights are random, the text this model produces is meaningless. It exists to measure the engine on a real-size shape. The tokenizer is LMCache.NET's byte-level demo tokenizer (261 ids), not the original model's.\n"));

        var total = tensors.Sum(t => t.ByteLength);
        long done = 0;
        var reported = 0;
        var bound = shape.InitializerRange * MathF.Sqrt(3f);
        void Fill(SafetensorsTensorSpec tensor, long first, Span<float> values)
        {
            if (tensor.Shape.Count == 1)
            {
                values.Fill(1f);   // RMSNorm weights: transformers initializes them to ones
            }
            else
            {
                FillUniform(TensorSeed(options.Seed, tensor.Name), first, values, bound);
            }
            done += (long)values.Length * SafetensorsTensorSpec.ElementSize(tensor.DType);
            var percent = (int)(done * 10 / Math.Max(1, total)) * 10;
            if (percent > reported)
            {
                reported = percent;
                options.Progress?.Invoke($"{percent}% of {total / 1e9:0.###} GB");
            }
        }
        return SafetensorsWriter.WriteModel(folder, tensors, Fill, new SafetensorsWriteOptions { MaxShardBytes = options.MaxShardBytes, Progress = options.Progress });
    }

    /// <summary>
    /// Element <c>first + i</c> of a tensor is a pure function of (tensor seed, index) — a counter-based generator
    /// (SplitMix64's finalizer over the index) — so blocks can be filled in any order and on any number of threads and
    /// still give the same bytes.
    /// </summary>
    private static void FillUniform(ulong seed, long first, Span<float> values, float bound)
    {
        const int Slice = 1 << 16;
        if (values.Length < 4 * Slice || Environment.ProcessorCount == 1)
        {
            FillRange(seed, first, values, bound);
            return;
        }
        unsafe
        {
            fixed (float* pointer = values)
            {
                var address = (nint)pointer;
                var length = values.Length;
                Parallel.For(0, (length + Slice - 1) / Slice, block =>
                {
                    var start = block * Slice;
                    var span = new Span<float>((float*)address + start, Math.Min(Slice, length - start));
                    FillRange(seed, first + start, span, bound);
                });
            }
        }
    }

    private static void FillRange(ulong seed, long first, Span<float> values, float bound)
    {
        const float Scale = 2f / (1 << 24);
        for (var i = 0; i < values.Length; i++)
        {
            var z = seed + ((ulong)(first + i) * 0x9E3779B97F4A7C15UL);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            values[i] = (((z >> 40) * Scale) - 1f) * bound;   // 24 random bits → [-1, 1) × bound
        }
    }

    /// <summary>FNV-1a of the tensor name mixed with the model seed: each tensor gets its own stream.</summary>
    private static ulong TensorSeed(ulong seed, string name)
    {
        var hash = 0xCBF29CE484222325UL ^ seed;
        foreach (var c in name)
        {
            hash = (hash ^ c) * 0x100000001B3UL;
        }
        return hash;
    }

    private static string GenerationConfig(string configJson)
    {
        var root = JsonNode.Parse(configJson)!.AsObject();
        var generation = new JsonObject();
        foreach (var key in new[] { "bos_token_id", "eos_token_id" })
        {
            if (root[key] is { } value)
            {
                generation[key] = value.DeepClone();
            }
        }
        return generation.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    private static string DemoShapeConfig(DemoModelSpec spec, SafetensorsDType dtype)
    {
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["attention_bias"] = false,
            ["bos_token_id"] = 256,
            ["eos_token_id"] = 260,
            ["head_dim"] = spec.HeadDim,
            ["hidden_act"] = "silu",
            ["hidden_size"] = spec.Hidden,
            ["initializer_range"] = 0.02,
            ["intermediate_size"] = spec.Intermediate,
            ["max_position_embeddings"] = spec.MaxPositions,
            ["mlp_bias"] = false,
            ["model_type"] = "llama",
            ["num_attention_heads"] = spec.Heads,
            ["num_hidden_layers"] = spec.Layers,
            ["num_key_value_heads"] = spec.KvHeads,
            ["rms_norm_eps"] = 1e-5,
            ["rope_theta"] = spec.RopeTheta,
            ["tie_word_embeddings"] = false,
            ["torch_dtype"] = dtype switch { SafetensorsDType.F32 => "float32", SafetensorsDType.F16 => "float16", _ => "bfloat16" },
            ["vocab_size"] = 256 + DemoModel.SpecialTokens.Length,
        };
        return config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    /// <summary>The sizes of a Llama-family config.json that decide its tensors.</summary>
    private sealed record LlamaShape(int Hidden, int Intermediate, int Layers, int Heads, int KvHeads, int HeadDim, int Vocab, int MaxPositions,
        bool TiedEmbeddings, float InitializerRange)
    {
        public static LlamaShape Parse(string configJson)
        {
            using var document = JsonDocument.Parse(configJson);
            var root = document.RootElement;
            var architecture = root.TryGetProperty("architectures", out var a) && a.ValueKind == JsonValueKind.Array && a.GetArrayLength() > 0 ? a[0].GetString() : null;
            if (architecture is not ("LlamaForCausalLM" or "MistralForCausalLM"))
            {
                throw new NotSupportedException($"Random weights are written for LlamaForCausalLM and MistralForCausalLM only; config.json names '{architecture ?? "(none)"}'.");
            }
            foreach (var bias in new[] { "attention_bias", "mlp_bias" })
            {
                if (root.TryGetProperty(bias, out var b) && b.ValueKind == JsonValueKind.True)
                {
                    throw new NotSupportedException($"config.json sets {bias}; random weights are written for the Llama layout without biases.");
                }
            }
            var hidden = Required(root, "hidden_size");
            var heads = Required(root, "num_attention_heads");
            var headDim = root.TryGetProperty("head_dim", out var hd) && hd.ValueKind == JsonValueKind.Number ? hd.GetInt32() : hidden / heads;
            var kvHeads = root.TryGetProperty("num_key_value_heads", out var kv) && kv.ValueKind == JsonValueKind.Number ? kv.GetInt32() : heads;
            if (heads % kvHeads != 0)
            {
                throw new InvalidDataException($"config.json: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}.");
            }
            var tied = root.TryGetProperty("tie_word_embeddings", out var t) && t.ValueKind == JsonValueKind.True;
            var range = root.TryGetProperty("initializer_range", out var r) && r.ValueKind == JsonValueKind.Number ? r.GetSingle() : 0.02f;
            var vocab = Required(root, "vocab_size");
            if (vocab < 256 + DemoModel.SpecialTokens.Length)
            {
                throw new InvalidDataException($"config.json: vocab_size {vocab} is below the {256 + DemoModel.SpecialTokens.Length} ids of the byte-level tokenizer written with random weights.");
            }
            return new LlamaShape(hidden, Required(root, "intermediate_size"), Required(root, "num_hidden_layers"), heads, kvHeads, headDim, vocab,
                Required(root, "max_position_embeddings"), tied, range);
        }

        private static int Required(JsonElement root, string name) =>
            root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.GetInt32() > 0
                ? value.GetInt32()
                : throw new InvalidDataException($"config.json: '{name}' is missing or not a positive integer.");
    }
}
