using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Google.Protobuf;
using LMCache.Inference.Tokenization;
using Onnx;

namespace LMCache.Inference.Demo;

/// <summary>
/// Sizes of the built-in demo model: a Llama-architecture decoder with <b>random weights</b> (its text is
/// meaningless), used when <c>lmcache serve</c> gets no model folder. The defaults make a 4,000-token prompt take
/// several seconds to prefill on 2 cores, so the cache's effect on time-to-first-token is plain to see.
/// </summary>
public sealed record DemoModelSpec
{
    /// <summary>Hidden size. Defaults to 1024.</summary>
    public int Hidden { get; init; } = 1024;

    /// <summary>Decoder layers. Defaults to 4.</summary>
    public int Layers { get; init; } = 4;

    /// <summary>Query heads. Defaults to 16 (head size 64).</summary>
    public int Heads { get; init; } = 16;

    /// <summary>KV heads (GQA). Defaults to 4.</summary>
    public int KvHeads { get; init; } = 4;

    /// <summary>MLP inner size. Defaults to 2816.</summary>
    public int Intermediate { get; init; } = 2816;

    /// <summary>Context length in tokens. Defaults to 8192.</summary>
    public int MaxPositions { get; init; } = 8192;

    /// <summary>RoPE base. Defaults to 500000 (Llama 3).</summary>
    public double RopeTheta { get; init; } = 500000.0;

    /// <summary>Seed of the weights. Defaults to 2024.</summary>
    public ulong Seed { get; init; } = 2024;

    /// <summary>Head size.</summary>
    public int HeadDim => Hidden / Heads;

    /// <summary>A short digest of the spec and the generator version: the cache folder name.</summary>
    public string Digest => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
        string.Create(CultureInfo.InvariantCulture, $"v1|{Hidden}|{Layers}|{Heads}|{KvHeads}|{Intermediate}|{MaxPositions}|{RopeTheta}|{Seed}"))))[..12];
}

/// <summary>
/// Writes the demo model as a complete Hugging Face folder (config.json, generation_config.json, a byte-level BPE
/// tokenizer.json with Llama-3 special tokens, tokenizer_config.json, chat_template.jinja, onnx/model.onnx with its
/// weights in onnx/model.onnx_data), deterministically from <see cref="DemoModelSpec.Seed"/>. The graph is plain
/// opset-17 ONNX in the optimum decoder-with-past convention and keeps only the last position's logits.
/// </summary>
public static class DemoModel
{
    /// <summary>Special tokens of the demo tokenizer (ids 256..260 after the 256 byte tokens).</summary>
    public static readonly string[] SpecialTokens = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];

    /// <summary>The default cache folder: <c>$LMCACHE_DEMO_MODEL_DIR</c>, else <c>~/.cache/lmcache-dotnet</c>.</summary>
    public static string DefaultCacheRoot =>
        Environment.GetEnvironmentVariable("LMCACHE_DEMO_MODEL_DIR") is { Length: > 0 } dir ? dir
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "lmcache-dotnet");

    /// <summary>
    /// Returns the folder of the demo model for <paramref name="spec"/> under <paramref name="cacheRoot"/>, generating
    /// it first when absent (written to a temporary folder and renamed, so a partial model is never used).
    /// </summary>
    public static string EnsureCreated(DemoModelSpec? spec = null, string? cacheRoot = null, Action<string>? progress = null)
    {
        spec ??= new DemoModelSpec();
        var root = cacheRoot ?? DefaultCacheRoot;
        var folder = Path.Combine(root, "demo-" + spec.Digest);
        if (File.Exists(Path.Combine(folder, "onnx", "model.onnx")))
        {
            return folder;
        }
        Directory.CreateDirectory(root);
        var temporary = Path.Combine(root, $".demo-{spec.Digest}-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            Write(spec, temporary, progress);
            try
            {
                Directory.Move(temporary, folder);
            }
            catch (IOException) when (File.Exists(Path.Combine(folder, "onnx", "model.onnx")))
            {
                // Another process finished first; use its copy.
                Directory.Delete(temporary, recursive: true);
            }
        }
        catch
        {
            if (Directory.Exists(temporary))
            {
                Directory.Delete(temporary, recursive: true);
            }
            throw;
        }
        return folder;
    }

    /// <summary>Writes the demo model folder for <paramref name="spec"/> into <paramref name="folder"/>.</summary>
    public static void Write(DemoModelSpec spec, string folder, Action<string>? progress = null)
    {
        Directory.CreateDirectory(Path.Combine(folder, "onnx"));
        var vocab = 256 + SpecialTokens.Length;
        WriteJson(Path.Combine(folder, "config.json"), new Dictionary<string, object?>
        {
            ["architectures"] = new[] { "LlamaForCausalLM" },
            ["model_type"] = "llama",
            ["hidden_size"] = spec.Hidden,
            ["intermediate_size"] = spec.Intermediate,
            ["num_hidden_layers"] = spec.Layers,
            ["num_attention_heads"] = spec.Heads,
            ["num_key_value_heads"] = spec.KvHeads,
            ["head_dim"] = spec.HeadDim,
            ["vocab_size"] = vocab,
            ["max_position_embeddings"] = spec.MaxPositions,
            ["rms_norm_eps"] = 1e-5,
            ["rope_theta"] = spec.RopeTheta,
            ["bos_token_id"] = 256,
            ["eos_token_id"] = 260,
            ["dtype"] = "float32",
            ["lmcache_demo"] = "random weights generated by LMCache.NET; the text it produces is meaningless",
        });
        WriteJson(Path.Combine(folder, "generation_config.json"), new Dictionary<string, object?> { ["bos_token_id"] = 256, ["eos_token_id"] = 260 });
        WriteJson(Path.Combine(folder, "tokenizer_config.json"), new Dictionary<string, object?>
        {
            ["bos_token"] = SpecialTokens[0],
            ["eos_token"] = SpecialTokens[4],
            ["model_max_length"] = spec.MaxPositions,
        });
        File.WriteAllText(Path.Combine(folder, "chat_template.jinja"), ChatTemplateText);
        WriteTokenizer(Path.Combine(folder, "tokenizer.json"));
        WriteOnnx(spec, vocab, Path.Combine(folder, "onnx"), progress);
    }

    /// <summary>The demo's Llama-3-style chat template (chat_template.jinja), over <see cref="SpecialTokens"/>.</summary>
    internal const string ChatTemplateText =
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    internal static void WriteJson(string path, object value) =>
        File.WriteAllText(path, JsonSerializer.Serialize(value, new JsonSerializerOptions { WriteIndented = true }));

    /// <summary>
    /// Writes the demo's byte-level BPE tokenizer.json: the 256 byte tokens (ids 0..255, no merges) and
    /// <see cref="SpecialTokens"/> (256..260), with a post-processor that prepends <c>&lt;|begin_of_text|&gt;</c>.
    /// Shared with <see cref="RandomWeightsModel"/>, whose random folders use the same tokenizer.
    /// </summary>
    internal static void WriteTokenizer(string path)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var b = 0; b < 256; b++)
        {
            vocab[ByteLevelAlphabet.ToChar((byte)b).ToString()] = b;
        }
        var added = new List<object>();
        for (var i = 0; i < SpecialTokens.Length; i++)
        {
            vocab[SpecialTokens[i]] = 256 + i;
            added.Add(new Dictionary<string, object> { ["id"] = 256 + i, ["content"] = SpecialTokens[i], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true });
        }
        WriteJson(path, new Dictionary<string, object?>
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new Dictionary<string, object> { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = new Dictionary<string, object>
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new object[]
                {
                    new Dictionary<string, object> { ["SpecialToken"] = new Dictionary<string, object> { ["id"] = SpecialTokens[0], ["type_id"] = 0 } },
                    new Dictionary<string, object> { ["Sequence"] = new Dictionary<string, object> { ["id"] = "A", ["type_id"] = 0 } },
                },
                ["pair"] = Array.Empty<object>(),
                ["special_tokens"] = new Dictionary<string, object>
                {
                    [SpecialTokens[0]] = new Dictionary<string, object> { ["id"] = SpecialTokens[0], ["ids"] = new[] { 256 }, ["tokens"] = new[] { SpecialTokens[0] } },
                },
            },
            ["decoder"] = new Dictionary<string, object> { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new Dictionary<string, object?>
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = null,
                ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false,
                ["byte_fallback"] = false,
                ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = Array.Empty<string>(),
            },
        });
    }

    private static void WriteOnnx(DemoModelSpec spec, int vocab, string folder, Action<string>? progress)
    {
        var builder = new GraphBuilder(Path.Combine(folder, "model.onnx_data"), "model.onnx_data", spec.Seed);
        try
        {
            BuildGraph(builder, spec, vocab, progress);
        }
        finally
        {
            builder.CloseData();
        }
        var model = new ModelProto
        {
            IrVersion = 8,
            ProducerName = "LMCache.NET demo model",
            Graph = builder.Graph,
            OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 17 } },
        };
        File.WriteAllBytes(Path.Combine(folder, "model.onnx"), model.ToByteArray());
    }

    private static void BuildGraph(GraphBuilder g, DemoModelSpec spec, int vocab, Action<string>? progress)
    {
        int h = spec.Hidden, nh = spec.Heads, nkv = spec.KvHeads, hd = spec.HeadDim, f = spec.Intermediate, layers = spec.Layers;
        var rep = nh / nkv;
        g.Input("input_ids", TensorProto.Types.DataType.Int64, "batch", "seq");
        g.Input("position_ids", TensorProto.Types.DataType.Int64, "batch", "seq");
        for (var l = 0; l < layers; l++)
        {
            g.Input($"past_key_values.{l}.key", TensorProto.Types.DataType.Float, "batch", nkv, "past", hd);
            g.Input($"past_key_values.{l}.value", TensorProto.Types.DataType.Float, "batch", nkv, "past", hd);
        }
        g.Output("logits", TensorProto.Types.DataType.Float, "batch", 1, vocab);
        for (var l = 0; l < layers; l++)
        {
            g.Output($"present.{l}.key", TensorProto.Types.DataType.Float, "batch", nkv, "total", hd);
            g.Output($"present.{l}.value", TensorProto.Types.DataType.Float, "batch", nkv, "total", hd);
        }

        // Constants.
        var invFreq = new float[hd / 2];
        for (var i = 0; i < hd / 2; i++)
        {
            invFreq[i] = (float)(1.0 / Math.Pow(spec.RopeTheta, 2.0 * i / hd));
        }
        var cos = new float[spec.MaxPositions * hd];
        var sin = new float[spec.MaxPositions * hd];
        for (var p = 0; p < spec.MaxPositions; p++)
        {
            for (var i = 0; i < hd; i++)
            {
                var angle = p * (double)invFreq[i % (hd / 2)];
                cos[(p * hd) + i] = (float)Math.Cos(angle);
                sin[(p * hd) + i] = (float)Math.Sin(angle);
            }
        }
        g.Constant("rope_cos", cos, spec.MaxPositions, hd);
        g.Constant("rope_sin", sin, spec.MaxPositions, hd);
        g.ConstantInt64("half_start", [0]);
        g.ConstantInt64("half_mid", [hd / 2]);
        g.ConstantInt64("half_end", [hd]);
        g.ConstantInt64("axis3", [3]);
        g.ConstantInt64("last_index", [-1]);
        g.ConstantInt64("shape_q", [0, 0, nh, hd]);
        g.ConstantInt64("shape_kv", [0, 0, nkv, hd]);
        g.ConstantInt64("shape_q5", [0, nkv, rep, -1, hd]);
        g.ConstantInt64("shape_ctx", [0, nh, -1, hd]);
        g.ConstantInt64("shape_out", [0, 0, nh * hd]);
        g.ConstantInt64("two", [2]);
        g.ConstantScalarInt64("zero_i", 0);
        g.ConstantScalarInt64("one_i", 1);
        g.Constant("eps", [1e-5f]);
        g.Constant("scale", [(float)(1.0 / Math.Sqrt(hd))]);
        g.Constant("mask_zero", [0f]);
        g.Constant("mask_neg", [-1e9f]);

        // Embedding and RoPE tables for these positions.
        progress?.Invoke("embedding");
        g.Weight("embed_tokens", 0.02f, vocab, h);
        g.Node("Gather", ["embed_tokens", "input_ids"], ["h_0"]);
        g.Node("Gather", ["rope_cos", "position_ids"], ["cos_btd"]);
        g.Node("Gather", ["rope_sin", "position_ids"], ["sin_btd"]);
        g.Node("Unsqueeze", ["cos_btd", "one_axis"], ["cos_b1td"]);
        g.Node("Unsqueeze", ["sin_btd", "one_axis"], ["sin_b1td"]);
        g.ConstantInt64("one_axis", [1]);
        g.ConstantInt64("mask_axes", [1, 2]);
        g.ConstantInt64("last_axis", [-1]);

        var hidden = "h_0";
        for (var l = 0; l < layers; l++)
        {
            progress?.Invoke($"layer {l + 1}/{layers}");
            var p = $"l{l}_";
            g.Ones(p + "ln1", h);
            g.Ones(p + "ln2", h);
            g.Weight(p + "wq", 0.02f, h, nh * hd);
            g.Weight(p + "wk", 0.02f, h, nkv * hd);
            g.Weight(p + "wv", 0.02f, h, nkv * hd);
            g.Weight(p + "wo", 0.02f, nh * hd, h);
            g.Weight(p + "w_gate", 0.02f, h, f);
            g.Weight(p + "w_up", 0.02f, h, f);
            g.Weight(p + "w_down", 0.02f, f, h);

            var x = RmsNorm(g, hidden, p + "ln1", p + "n1");
            g.Node("MatMul", [x, p + "wq"], [p + "q"]);
            g.Node("MatMul", [x, p + "wk"], [p + "k"]);
            g.Node("MatMul", [x, p + "wv"], [p + "v"]);
            g.Node("Reshape", [p + "q", "shape_q"], [p + "q4"]);
            g.Node("Reshape", [p + "k", "shape_kv"], [p + "k4"]);
            g.Node("Reshape", [p + "v", "shape_kv"], [p + "v4"]);
            g.Node("Transpose", [p + "q4"], [p + "qt"], ("perm", [0, 2, 1, 3]));
            g.Node("Transpose", [p + "k4"], [p + "kt"], ("perm", [0, 2, 1, 3]));
            g.Node("Transpose", [p + "v4"], [p + "vt"], ("perm", [0, 2, 1, 3]));
            var qr = Rope(g, p + "qt", p + "qr");
            var kr = Rope(g, p + "kt", p + "kr");
            g.Node("Concat", [$"past_key_values.{l}.key", kr], [$"present.{l}.key"], ("axis", [2]));
            g.Node("Concat", [$"past_key_values.{l}.value", p + "vt"], [$"present.{l}.value"], ("axis", [2]));

            // Attention with GQA: q [B, kv, rep, T, hd] x k [B, kv, 1, hd, S].
            g.Node("Reshape", [qr, "shape_q5"], [p + "q5"]);
            g.Node("Unsqueeze", [$"present.{l}.key", "two"], [p + "k5"]);
            g.Node("Transpose", [p + "k5"], [p + "k5t"], ("perm", [0, 1, 2, 4, 3]));
            g.Node("MatMul", [p + "q5", p + "k5t"], [p + "scores_raw"]);
            g.Node("Mul", [p + "scores_raw", "scale"], [p + "scores_scaled"]);
            if (l == 0)
            {
                // Causal mask from positions: key j is visible to a query at position p when j <= p.
                g.Node("Shape", ["present.0.key"], ["present_shape"]);
                g.Node("Gather", ["present_shape", "two_scalar"], ["total_len"], ("axis", [0]));
                g.ConstantScalarInt64("two_scalar", 2);
                g.Node("Range", ["zero_i", "total_len", "one_i"], ["key_positions"]);
                g.Node("Unsqueeze", ["position_ids", "last_axis"], ["query_positions"]);
                g.Node("LessOrEqual", ["key_positions", "query_positions"], ["visible"]);
                g.Node("Where", ["visible", "mask_zero", "mask_neg"], ["mask_bts"]);
                g.Node("Unsqueeze", ["mask_bts", "mask_axes"], ["mask"]);
            }
            g.Node("Add", [p + "scores_scaled", "mask"], [p + "scores"]);
            g.Node("Softmax", [p + "scores"], [p + "probs"], ("axis", [-1]));
            g.Node("Unsqueeze", [$"present.{l}.value", "two"], [p + "v5"]);
            g.Node("MatMul", [p + "probs", p + "v5"], [p + "ctx5"]);
            g.Node("Reshape", [p + "ctx5", "shape_ctx"], [p + "ctx4"]);
            g.Node("Transpose", [p + "ctx4"], [p + "ctxt"], ("perm", [0, 2, 1, 3]));
            g.Node("Reshape", [p + "ctxt", "shape_out"], [p + "ctx"]);
            g.Node("MatMul", [p + "ctx", p + "wo"], [p + "attn"]);
            g.Node("Add", [hidden, p + "attn"], [p + "h_attn"]);

            // SwiGLU MLP.
            var y = RmsNorm(g, p + "h_attn", p + "ln2", p + "n2");
            g.Node("MatMul", [y, p + "w_gate"], [p + "gate"]);
            g.Node("MatMul", [y, p + "w_up"], [p + "up"]);
            g.Node("Sigmoid", [p + "gate"], [p + "gate_sig"]);
            g.Node("Mul", [p + "gate", p + "gate_sig"], [p + "silu"]);
            g.Node("Mul", [p + "silu", p + "up"], [p + "act"]);
            g.Node("MatMul", [p + "act", p + "w_down"], [p + "mlp"]);
            g.Node("Add", [p + "h_attn", p + "mlp"], [$"h_{l + 1}"]);
            hidden = $"h_{l + 1}";
        }
        progress?.Invoke("output head");
        g.Ones("final_norm", h);
        g.Weight("lm_head", 0.02f, h, vocab);
        g.Node("Gather", [hidden, "last_index"], ["h_last"], ("axis", [1]));
        var normed = RmsNorm(g, "h_last", "final_norm", "final");
        g.Node("MatMul", [normed, "lm_head"], ["logits"]);
    }

    private static string RmsNorm(GraphBuilder g, string input, string weight, string prefix)
    {
        g.Node("Mul", [input, input], [prefix + "_sq"]);
        g.Node("ReduceMean", [prefix + "_sq"], [prefix + "_ms"], ("axes", [-1]), ("keepdims", [1]));
        g.Node("Add", [prefix + "_ms", "eps"], [prefix + "_mse"]);
        g.Node("Sqrt", [prefix + "_mse"], [prefix + "_rms"]);
        g.Node("Reciprocal", [prefix + "_rms"], [prefix + "_inv"]);
        g.Node("Mul", [input, prefix + "_inv"], [prefix + "_scaled"]);
        g.Node("Mul", [prefix + "_scaled", weight], [prefix + "_out"]);
        return prefix + "_out";
    }

    private static string Rope(GraphBuilder g, string input, string output)
    {
        // HF rotate_half: x * cos + concat(-x2, x1) * sin.
        g.Node("Slice", [input, "half_start", "half_mid", "axis3"], [output + "_x1"]);
        g.Node("Slice", [input, "half_mid", "half_end", "axis3"], [output + "_x2"]);
        g.Node("Neg", [output + "_x2"], [output + "_nx2"]);
        g.Node("Concat", [output + "_nx2", output + "_x1"], [output + "_rot"], ("axis", [-1]));
        g.Node("Mul", [input, "cos_b1td"], [output + "_c"]);
        g.Node("Mul", [output + "_rot", "sin_b1td"], [output + "_s"]);
        g.Node("Add", [output + "_c", output + "_s"], [output]);
        return output;
    }

    /// <summary>Accumulates graph nodes and writes weights to one external-data file.</summary>
    private sealed class GraphBuilder
    {
        private readonly FileStream _data;
        private readonly string _location;
        private ulong _state;

        public GraphBuilder(string dataPath, string location, ulong seed)
        {
            _data = new FileStream(dataPath, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
            _location = location;
            _state = seed * 0x9E3779B97F4A7C15UL + 0x632BE59BD9B4E019UL;
            Graph = new GraphProto { Name = "lmcache-demo-llama" };
        }

        public GraphProto Graph { get; }

        public void CloseData() => _data.Dispose();

        public void Input(string name, TensorProto.Types.DataType type, params object[] dims) => Graph.Input.Add(ValueInfo(name, type, dims));

        public void Output(string name, TensorProto.Types.DataType type, params object[] dims) => Graph.Output.Add(ValueInfo(name, type, dims));

        private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
        {
            var shape = new TensorShapeProto();
            foreach (var d in dims)
            {
                shape.Dim.Add(d is string s ? new TensorShapeProto.Types.Dimension { DimParam = s } : new TensorShapeProto.Types.Dimension { DimValue = Convert.ToInt64(d, CultureInfo.InvariantCulture) });
            }
            return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
        }

        public void Node(string op, string[] inputs, string[] outputs, params (string Name, long[] Ints)[] attributes)
        {
            var node = new NodeProto { OpType = op, Name = $"{op}_{Graph.Node.Count}" };
            node.Input.AddRange(inputs);
            node.Output.AddRange(outputs);
            foreach (var (name, ints) in attributes)
            {
                node.Attribute.Add(ints.Length == 1 && name is not ("axes" or "perm")
                    ? new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = ints[0] }
                    : new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { ints } });
            }
            Graph.Node.Add(node);
        }

        public void Constant(string name, float[] values, params long[] dims)
        {
            var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes<float>(values)) };
            tensor.Dims.AddRange(dims.Length == 0 ? [values.Length] : dims);
            Graph.Initializer.Add(tensor);
        }

        public void ConstantInt64(string name, long[] values)
        {
            var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes<long>(values)) };
            tensor.Dims.Add(values.Length);
            Graph.Initializer.Add(tensor);
        }

        public void ConstantScalarInt64(string name, long value) =>
            Graph.Initializer.Add(new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64, RawData = ByteString.CopyFrom(BitConverter.GetBytes(value)) });

        public void Ones(string name, int size)
        {
            var ones = new float[size];
            Array.Fill(ones, 1f);
            Constant(name, ones, size);
        }

        /// <summary>A weight matrix of uniform values with standard deviation <paramref name="std"/>, stored externally.</summary>
        public void Weight(string name, float std, int rows, int cols)
        {
            var bound = std * MathF.Sqrt(3f);
            var offset = _data.Position;
            var row = new byte[cols * sizeof(float)];
            for (var r = 0; r < rows; r++)
            {
                for (var c = 0; c < cols; c++)
                {
                    // xorshift64*: fast, deterministic across platforms.
                    _state ^= _state >> 12;
                    _state ^= _state << 25;
                    _state ^= _state >> 27;
                    var bits = (_state * 0x2545F4914F6CDD1DUL) >> 40;   // 24 random bits
                    var value = ((bits / (float)(1 << 24)) * 2f - 1f) * bound;
                    BinaryPrimitives.WriteSingleLittleEndian(row.AsSpan(c * sizeof(float)), value);
                }
                _data.Write(row);
            }
            var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, DataLocation = TensorProto.Types.DataLocation.External };
            tensor.Dims.Add(rows);
            tensor.Dims.Add(cols);
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = _location });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = ((long)rows * cols * sizeof(float)).ToString(CultureInfo.InvariantCulture) });
            Graph.Initializer.Add(tensor);
        }
    }
}
