using System.Globalization;
using System.Runtime.InteropServices;
using Google.Protobuf;
using LMCache.Inference.Models.Safetensors;
using Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace LMCache.Inference.Models.Graph;

/// <summary>A decoder graph built from config.json and safetensors: the proto bytes (no weights) and the weights to inject.</summary>
public sealed class BuiltDecoderGraph : IDisposable
{
    internal BuiltDecoderGraph(byte[] model, NativeWeights weights, DecoderArchitecture architecture, WeightQuantization quantization, DecoderGraphOutputs outputs)
    {
        Model = model;
        Weights = weights;
        Architecture = architecture;
        Quantization = quantization;
        Outputs = outputs;
    }

    /// <summary>Which KV the graph outputs: the whole present, or only the new tokens' KV.</summary>
    public DecoderGraphOutputs Outputs { get; }

    /// <summary>The serialized ONNX <c>ModelProto</c>; every weight is an external initializer found in <see cref="Weights"/>.</summary>
    public byte[] Model { get; }

    /// <summary>The weights, as in-memory external-data files for the session; they must outlive the session.</summary>
    public NativeWeights Weights { get; }

    /// <summary>The architecture built.</summary>
    public DecoderArchitecture Architecture { get; }

    /// <summary>How linear weights are stored.</summary>
    public WeightQuantization Quantization { get; }

    /// <inheritdoc />
    public void Dispose() => Weights.Dispose();
}

/// <summary>The KV outputs of a built decoder graph.</summary>
public enum DecoderGraphOutputs
{
    /// <summary>
    /// The optimum convention: <c>present.{i}.key/value</c> <c>[batch, kv_heads, past + seq, head_dim]</c> =
    /// concat(past, new). Every run copies the whole past.
    /// </summary>
    Present,

    /// <summary>
    /// Only the new tokens' KV: <c>new_key_values.{i}.key/value</c> <c>[batch, kv_heads, seq, head_dim]</c>. Attention
    /// reads the past where it lies (scores against past and new keys are concatenated, and the context is the sum of
    /// the two parts), so a run never copies the past; the caller appends the new KV to its own buffer.
    /// </summary>
    NewOnly,
}

/// <summary>
/// Builds the ONNX decoder-with-past graph of a Hugging Face model from its config.json, in the optimum IO convention
/// (<c>input_ids</c>, <c>attention_mask</c>, <c>position_ids</c>, <c>past_key_values.{i}.key/value</c> in;
/// <c>logits</c> <c>[batch, 1, vocab]</c> of each row's last position and <c>present.{i}.key/value</c> out).
/// </summary>
/// <remarks>
/// <para>Visibility is by position, never by index: key position = CumSum(attention_mask) - 1 along the key axis, query
/// position = position_ids; key j is visible to query q iff mask[j] = 1, keypos[j] ≤ qpos[q] and, in a sliding-window
/// layer of window w, qpos[q] - keypos[j] &lt; w. Rows padded anywhere in their past are therefore exact.</para>
/// <para>The residual stream is kept 2-D (<c>[batch × seq, hidden]</c>) so every projection is one <c>Gemm</c> with
/// <c>transB = 1</c> over the Hugging Face <c>[out, in]</c> weight as stored (no transpose, and fp32 files are used
/// straight from the memory map), or one <c>com.microsoft.MatMulNBits</c> when quantized. Compute is fp32.</para>
/// </remarks>
public static class DecoderGraphBuilder
{
    /// <summary>Bumped whenever the graph a given model produces changes (part of the model fingerprint).</summary>
    public const int Version = 1;

    /// <summary>
    /// Builds the graph of <paramref name="config"/> with the weights of <paramref name="weights"/>, which the result
    /// takes over (it keeps the maps open while fp32 tensors are used in place; disposed with the result or on failure).
    /// </summary>
    /// <exception cref="ModelArchitectureException">Unsupported architecture or RoPE.</exception>
    /// <exception cref="SafetensorsException">A tensor is missing, has the wrong shape or an unsupported dtype.</exception>
    public static BuiltDecoderGraph Build(ModelConfig config, SafetensorsWeights weights, WeightQuantization quantization = WeightQuantization.None,
        Action<string>? progress = null, DecoderGraphOutputs outputs = DecoderGraphOutputs.Present)
    {
        var native = new NativeWeights();
        native.KeepAlive(weights);
        try
        {
            var architecture = DecoderArchitecture.For(config);
            var rope = RotaryEmbedding.For(config);
            var builder = new Builder(config, architecture, rope, weights, native, quantization, progress, outputs);
            var graph = builder.Build();
            var model = new ModelProto
            {
                IrVersion = 8,
                ProducerName = "LMCache.NET decoder graph builder",
                ProducerVersion = Version.ToString(CultureInfo.InvariantCulture),
                Graph = graph,
                OpsetImport =
                {
                    new OperatorSetIdProto { Domain = "", Version = 17 },
                    new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 },
                },
            };
            return new BuiltDecoderGraph(model.ToByteArray(), native, architecture, quantization, outputs);
        }
        catch
        {
            native.Dispose();
            throw;
        }
    }

    private sealed unsafe class Builder
    {
        private readonly ModelConfig _config;
        private readonly DecoderArchitecture _architecture;
        private readonly RotaryEmbedding _rope;
        private readonly SafetensorsWeights _weights;
        private readonly NativeWeights _native;
        private readonly WeightQuantization _quantization;
        private readonly Action<string>? _progress;
        private readonly DecoderGraphOutputs _outputs;
        private readonly OnnxGraphWriter _g = new("lmcache-decoder");
        private float[] _scratch = [];

        // Values shared by every layer.
        private string _cos = "";
        private string _sin = "";
        private string _qShape = "";
        private string _kvShape = "";
        private string _eps = "";
        private string _pastLength = "";   // [1]: the past's column count (NewOnly graphs split the probabilities there)
        private readonly Dictionary<int, string> _masks = [];   // window (0 = full) -> additive bias [B, 1, 1, T, S]

        public Builder(ModelConfig config, DecoderArchitecture architecture, RotaryEmbedding rope, SafetensorsWeights weights,
            NativeWeights native, WeightQuantization quantization, Action<string>? progress, DecoderGraphOutputs outputs)
        {
            _outputs = outputs;
            _config = config;
            _architecture = architecture;
            _rope = rope;
            _weights = weights;
            _native = native;
            _quantization = quantization;
            _progress = progress;
        }

        public GraphProto Build()
        {
            var c = _config;
            int h = c.HiddenSize, nh = c.NumAttentionHeads, nkv = c.NumKeyValueHeads, hd = c.HeadDim, layers = c.NumLayers, vocab = c.VocabSize;
            if (nh % nkv != 0)
            {
                throw new ModelArchitectureException($"config.json: num_attention_heads {nh} is not a multiple of num_key_value_heads {nkv}.");
            }
            _g.Input("input_ids", DataType.Int64, "batch", "seq");
            _g.Input("attention_mask", DataType.Int64, "batch", "total");
            _g.Input("position_ids", DataType.Int64, "batch", "seq");
            for (var l = 0; l < layers; l++)
            {
                _g.Input($"past_key_values.{l}.key", DataType.Float, "batch", nkv, "past", hd);
                _g.Input($"past_key_values.{l}.value", DataType.Float, "batch", nkv, "past", hd);
            }
            _g.Output("logits", DataType.Float, "batch", 1, vocab);
            for (var l = 0; l < layers; l++)
            {
                if (_outputs == DecoderGraphOutputs.Present)
                {
                    _g.Output($"present.{l}.key", DataType.Float, "batch", nkv, "total", hd);
                    _g.Output($"present.{l}.value", DataType.Float, "batch", nkv, "total", hd);
                }
                else
                {
                    _g.Output($"new_key_values.{l}.key", DataType.Float, "batch", nkv, "seq", hd);
                    _g.Output($"new_key_values.{l}.value", DataType.Float, "batch", nkv, "seq", hd);
                }
            }

            _eps = _g.Scalar((float)c.RmsNormEps);
            var idsShape = _g.Op("Shape", "input_ids");
            _qShape = _g.Op("Concat", [idsShape, _g.Int64s(nh, hd)], ("axis", 0L));
            _kvShape = _g.Op("Concat", [idsShape, _g.Int64s(nkv, hd)], ("axis", 0L));
            _pastLength = _g.Op("Shape", ["past_key_values.0.key"], ("start", 2L), ("end", 3L));
            BuildRope();

            _progress?.Invoke("loading weights: embeddings");
            var embed = FloatWeight("model.embed_tokens.weight", vocab, h);
            var embedded = _g.Op("Gather", [embed, "input_ids"], ("axis", 0L));
            var hidden = _g.Op("Reshape", embedded, _g.Int64s(-1, h));

            for (var l = 0; l < layers; l++)
            {
                _progress?.Invoke(string.Create(CultureInfo.InvariantCulture, $"loading weights: layer {l + 1}/{layers}"));
                hidden = Layer(l, hidden);
            }

            _progress?.Invoke("loading weights: output head");
            var hidden3 = _g.Op("Reshape", hidden, _g.Op("Concat", [idsShape, _g.Int64s(h)], ("axis", 0L)));
            var last = _g.Op("Gather", [hidden3, _g.Int64Scalar(-1)], ("axis", 1L));
            var normed = RmsNorm(last, FloatWeight("model.norm.weight", h));
            string logits2;
            if (c.TieWordEmbeddings)
            {
                logits2 = _quantization == WeightQuantization.None
                    ? _g.Op("Gemm", [normed, embed], ("transB", 1L))
                    : QuantizedLinear(normed, "model.embed_tokens.weight", "lm_head.tied", vocab, h, outputHead: true);
            }
            else
            {
                logits2 = _quantization == WeightQuantization.None
                    ? Linear(normed, "lm_head.weight", null, vocab, h)
                    : QuantizedLinear(normed, "lm_head.weight", "lm_head.weight", vocab, h, outputHead: true);
            }
            _g.Node("Unsqueeze", [logits2, _g.Int64s(1)], ["logits"]);
            _scratch = [];
            return _g.Graph;
        }

        private void BuildRope()
        {
            var half = _rope.RotaryDim / 2;
            var positions = _g.Op("Cast", ["position_ids"], ("to", (long)DataType.Float));
            var positionsU = _g.Op("Unsqueeze", positions, _g.Int64s(-1));                                // [B, T, 1]
            var inv = _g.Floats("rope_inv_freq", _rope.InvFreq, half);
            string invPerPosition = inv;
            if (_rope.LongInvFreq is not null || _rope.Dynamic is not null)
            {
                // transformers' sequence length of a forward pass: max(position_ids) + 1, here per row (batch invariance).
                var rowLength = _g.Op("Add", _g.Op("ReduceMax", ["position_ids"], ("axes", new long[] { 1 }), ("keepdims", 1L)), _g.Int64Scalar(1));   // [B, 1]
                if (_rope.LongInvFreq is { } longInv)
                {
                    var isLong = _g.Op("Unsqueeze", _g.Op("Greater", rowLength, _g.Int64Scalar(_rope.LongFromPosition)), _g.Int64s(-1));           // [B, 1, 1]
                    invPerPosition = _g.Op("Where", isLong, _g.Floats("rope_inv_freq_long", longInv, half), inv);
                }
                else if (_rope.Dynamic is { } dynamic)
                {
                    // NTK base for the row's length: theta * (factor * len / max - (factor - 1)) ^ (dim / (dim - 2)).
                    var dim = _rope.RotaryDim;
                    var length = _g.Op("Cast", [rowLength], ("to", (long)DataType.Float));
                    var ratio = _g.Op("Sub", _g.Op("Mul", length, _g.Scalar((float)(dynamic.Factor / dynamic.MaxPositions))), _g.Scalar((float)(dynamic.Factor - 1)));
                    var logBase = _g.Op("Add", _g.Op("Mul", _g.Op("Log", _g.Op("Max", ratio, _g.Scalar(1f))), _g.Scalar((float)dim / (dim - 2))),
                        _g.Scalar((float)Math.Log(dynamic.Theta)));
                    var exponents = _g.Floats("rope_exponents", _rope.Exponents(), half);
                    var dynamicInv = _g.Op("Exp", _g.Op("Neg", _g.Op("Mul", _g.Op("Unsqueeze", logBase, _g.Int64s(-1)), exponents)));              // [B, 1, R/2]
                    var beyond = _g.Op("Unsqueeze", _g.Op("Greater", rowLength, _g.Int64Scalar(dynamic.MaxPositions)), _g.Int64s(-1));
                    invPerPosition = _g.Op("Where", beyond, dynamicInv, inv);
                }
            }
            var angles = _g.Op("Mul", positionsU, invPerPosition);                                             // [B, T, R/2]
            var emb = _g.Op("Concat", [angles, angles], ("axis", -1L));
            var cos = _g.Op("Cos", emb);
            var sin = _g.Op("Sin", emb);
            if (_rope.AttentionScaling != 1f)
            {
                cos = _g.Op("Mul", cos, _g.Scalar(_rope.AttentionScaling));
                sin = _g.Op("Mul", sin, _g.Scalar(_rope.AttentionScaling));
            }
            _cos = _g.Op("Unsqueeze", cos, _g.Int64s(1));                                                     // [B, 1, T, R]
            _sin = _g.Op("Unsqueeze", sin, _g.Int64s(1));
        }

        /// <summary>The additive attention bias [B, 1, 1, T, S] for a window (0 = full attention), built once.</summary>
        private string Mask(int window)
        {
            if (_masks.TryGetValue(window, out var mask))
            {
                return mask;
            }
            var keyPositions = _g.Op("Sub", _g.Op("CumSum", "attention_mask", _g.Int64Scalar(1)), _g.Int64Scalar(1));   // [B, S]
            var keyPositionsU = _g.Op("Unsqueeze", keyPositions, _g.Int64s(1));                                         // [B, 1, S]
            var queryPositionsU = _g.Op("Unsqueeze", "position_ids", _g.Int64s(2));                                      // [B, T, 1]
            var real = _g.Op("Unsqueeze", _g.Op("Cast", ["attention_mask"], ("to", (long)DataType.Bool)), _g.Int64s(1));
            var visible = _g.Op("And", real, _g.Op("LessOrEqual", keyPositionsU, queryPositionsU));                     // [B, T, S]
            if (window > 0)
            {
                var distance = _g.Op("Sub", queryPositionsU, keyPositionsU);
                visible = _g.Op("And", visible, _g.Op("Less", distance, _g.Int64Scalar(window)));
            }
            var bias = _g.Op("Where", visible, _g.Scalar(0f), _g.Scalar(-1e30f));
            mask = _g.Op("Unsqueeze", bias, _g.Int64s(1, 2));
            _masks[window] = mask;
            return mask;
        }

        private string Layer(int l, string hidden)
        {
            var c = _config;
            int h = c.HiddenSize, nh = c.NumAttentionHeads, nkv = c.NumKeyValueHeads, hd = c.HeadDim, f = c.IntermediateSize;
            var p = $"model.layers.{l}.";
            var a = _architecture;

            var x = RmsNorm(hidden, FloatWeight(p + "input_layernorm.weight", h));
            string q, k, v;
            if (a.FusedQkv)
            {
                var qkv = Linear(x, p + "self_attn.qkv_proj.weight", null, (nh + (2 * nkv)) * hd, h);
                q = _g.Name("q");
                k = _g.Name("k");
                v = _g.Name("v");
                _g.Node("Split", [qkv, _g.Int64s(nh * hd, nkv * hd, nkv * hd)], [q, k, v], ("axis", 1L));
            }
            else
            {
                q = Linear(x, p + "self_attn.q_proj.weight", a.QkvBias ? p + "self_attn.q_proj.bias" : null, nh * hd, h);
                k = Linear(x, p + "self_attn.k_proj.weight", a.QkvBias ? p + "self_attn.k_proj.bias" : null, nkv * hd, h);
                v = Linear(x, p + "self_attn.v_proj.weight", a.QkvBias ? p + "self_attn.v_proj.bias" : null, nkv * hd, h);
            }
            var q4 = _g.Op("Reshape", q, _qShape);      // [B, T, nh, hd]
            var k4 = _g.Op("Reshape", k, _kvShape);
            var v4 = _g.Op("Reshape", v, _kvShape);
            if (a.QkNorm)
            {
                q4 = RmsNorm(q4, FloatWeight(p + "self_attn.q_norm.weight", hd));
                k4 = RmsNorm(k4, FloatWeight(p + "self_attn.k_norm.weight", hd));
            }
            var perm = ("perm", (object)new long[] { 0, 2, 1, 3 });
            var qt = _g.Op("Transpose", [q4], perm);   // [B, nh, T, hd]
            var kt = _g.Op("Transpose", [k4], perm);
            var vt = _g.Op("Transpose", [v4], perm);
            var qScaled = _g.Op("Mul", Rope(qt), _g.Scalar((float)(1.0 / Math.Sqrt(hd))));
            var kRotated = Rope(kt);
            // Grouped-query attention without repeating K/V: q [B, kv, rep, T, hd] x k [B, kv, 1, hd, S].
            var q5 = _g.Op("Reshape", qScaled, _g.Int64s(0, nkv, nh / nkv, -1, hd));
            var mask = Mask(a.LayerWindows[l] ?? 0);
            string context;
            if (_outputs == DecoderGraphOutputs.Present)
            {
                var presentKey = $"present.{l}.key";
                var presentValue = $"present.{l}.value";
                _g.Node("Concat", [$"past_key_values.{l}.key", kRotated], [presentKey], ("axis", 2L));
                _g.Node("Concat", [$"past_key_values.{l}.value", vt], [presentValue], ("axis", 2L));
                var k5 = _g.Op("Unsqueeze", _g.Op("Transpose", [presentKey], ("perm", new long[] { 0, 1, 3, 2 })), _g.Int64s(2));
                var scores = _g.Op("Add", _g.Op("MatMul", q5, k5), mask);
                var probs = _g.Op("Softmax", [scores], ("axis", -1L));
                context = _g.Op("MatMul", probs, _g.Op("Unsqueeze", presentValue, _g.Int64s(2)));     // [B, kv, rep, T, hd]
            }
            else
            {
                // The past is read where it lies: scores = [q·K_pastᵀ | q·K_newᵀ] (the mask covers past + new as in
                // the Present graph), one softmax, then context = P_past·V_past + P_new·V_new. Only the new KV is output.
                _g.Node("Identity", [kRotated], [$"new_key_values.{l}.key"]);
                _g.Node("Identity", [vt], [$"new_key_values.{l}.value"]);
                // com.microsoft FusedMatMul with transB: K is read as stored ([B, kv, 1, P, hd]), never transposed into a copy.
                var scoresPast = MatMulTransposedB(q5, _g.Op("Unsqueeze", $"past_key_values.{l}.key", _g.Int64s(2)));   // [B, kv, rep, T, P]
                var scoresNew = MatMulTransposedB(q5, _g.Op("Unsqueeze", kRotated, _g.Int64s(2)));                      // [B, kv, rep, T, T]
                var scores = _g.Op("Concat", [scoresPast, scoresNew], ("axis", -1L));
                var probs = _g.Op("Softmax", [_g.Op("Add", scores, mask)], ("axis", -1L));
                var lastAxis = _g.Int64s(-1);
                var probsPast = _g.Op("Slice", probs, _g.Int64s(0), _pastLength, lastAxis);
                var probsNew = _g.Op("Slice", probs, _pastLength, _g.Int64s(long.MaxValue), lastAxis);
                context = _g.Op("Add",
                    _g.Op("MatMul", probsPast, _g.Op("Unsqueeze", $"past_key_values.{l}.value", _g.Int64s(2))),
                    _g.Op("MatMul", probsNew, _g.Op("Unsqueeze", vt, _g.Int64s(2))));                        // [B, kv, rep, T, hd]
            }
            var context4 = _g.Op("Transpose", [_g.Op("Reshape", context, _g.Int64s(0, nh, -1, hd))], perm);
            var context2 = _g.Op("Reshape", context4, _g.Int64s(-1, nh * hd));
            var attention = Linear(context2, p + "self_attn.o_proj.weight", a.OutputBias ? p + "self_attn.o_proj.bias" : null, h, nh * hd);
            var afterAttention = _g.Op("Add", hidden, attention);

            var y = RmsNorm(afterAttention, FloatWeight(p + "post_attention_layernorm.weight", h));
            string gate, up;
            if (a.FusedGateUp)
            {
                var gateUp = Linear(y, p + "mlp.gate_up_proj.weight", null, 2 * f, h);
                gate = _g.Name("gate");
                up = _g.Name("up");
                _g.Node("Split", [gateUp, _g.Int64s(f, f)], [gate, up], ("axis", 1L));
            }
            else
            {
                gate = Linear(y, p + "mlp.gate_proj.weight", a.MlpBias ? p + "mlp.gate_proj.bias" : null, f, h);
                up = Linear(y, p + "mlp.up_proj.weight", a.MlpBias ? p + "mlp.up_proj.bias" : null, f, h);
            }
            var activated = _g.Op("Mul", _g.Op("Mul", gate, _g.Op("Sigmoid", gate)), up);
            var down = Linear(activated, p + "mlp.down_proj.weight", a.MlpBias ? p + "mlp.down_proj.bias" : null, h, f);
            return _g.Op("Add", afterAttention, down);
        }

        /// <summary>a · bᵀ over the last two axes (batch axes broadcast), without materializing the transpose.</summary>
        private string MatMulTransposedB(string a, string b)
        {
            var output = _g.Name("fusedmatmul");
            _g.Node("FusedMatMul", "com.microsoft", [a, b], [output], ("transB", 1L), ("alpha", 1f));
            return output;
        }

        /// <summary>HF rotate_half RoPE on the first RotaryDim dimensions of [B, heads, T, hd].</summary>
        private string Rope(string x)
        {
            var hd = _config.HeadDim;
            var r = _rope.RotaryDim;
            var axis = _g.Int64s(3);
            var rotated = r == hd ? x : _g.Op("Slice", x, _g.Int64s(0), _g.Int64s(r), axis);
            var x1 = _g.Op("Slice", rotated, _g.Int64s(0), _g.Int64s(r / 2), axis);
            var x2 = _g.Op("Slice", rotated, _g.Int64s(r / 2), _g.Int64s(r), axis);
            var rotateHalf = _g.Op("Concat", [_g.Op("Neg", x2), x1], ("axis", -1L));
            var result = _g.Op("Add", _g.Op("Mul", rotated, _cos), _g.Op("Mul", rotateHalf, _sin));
            return r == hd ? result : _g.Op("Concat", [result, _g.Op("Slice", x, _g.Int64s(r), _g.Int64s(hd), axis)], ("axis", -1L));
        }

        /// <summary>transformers' RMSNorm over the last axis: x / sqrt(mean(x²) + eps) × weight.</summary>
        private string RmsNorm(string x, string weight)
        {
            var meanSquare = _g.Op("ReduceMean", [_g.Op("Pow", x, _g.Scalar(2f))], ("axes", new long[] { -1 }), ("keepdims", 1L));
            var normalized = _g.Op("Div", x, _g.Op("Sqrt", _g.Op("Add", meanSquare, _eps)));
            return _g.Op("Mul", normalized, weight);
        }

        /// <summary>x [N, in] → [N, out] with an HF [out, in] weight (and optional bias).</summary>
        private string Linear(string x, string weightName, string? biasName, int outFeatures, int inFeatures)
        {
            if (_quantization != WeightQuantization.None)
            {
                var y = QuantizedLinear(x, weightName, weightName, outFeatures, inFeatures);
                return biasName is null ? y : _g.Op("Add", y, FloatWeight(biasName, outFeatures));
            }
            var weight = FloatWeight(weightName, outFeatures, inFeatures);
            return biasName is null
                ? _g.Op("Gemm", [x, weight], ("transB", 1L))
                : _g.Op("Gemm", [x, weight, FloatWeight(biasName, outFeatures)], ("transB", 1L));
        }

        private string QuantizedLinear(string x, string sourceName, string name, int n, int k, bool outputHead = false)
        {
            // The output head stays at 8 bits under int4: its error lands directly on the logits (measured in
            // docs/serving.md), and it is one matrix of many.
            var bits = _quantization == WeightQuantization.Int4 && !outputHead ? 4 : 8;
            var (file, info) = _weights.Require(sourceName, n, k);
            ReadOnlySpan<float> values;
            if (info.DType == SafetensorsDType.F32 && info.DataOffset % sizeof(float) == 0)
            {
                values = MemoryMarshal.Cast<byte, float>(file.Bytes(info));
            }
            else
            {
                if (_scratch.Length < (long)n * k)
                {
                    _scratch = new float[(long)n * k];
                }
                WeightConversion.ToFloat32(info, file.Bytes(info), _scratch);
                values = _scratch.AsSpan(0, n * k);
            }
            var blocks = WeightQuantizer.BlocksPerRow(k);
            var blob = WeightQuantizer.BlobSize(bits);
            var packedName = name + ".quantized";
            var scalesName = name + ".scales";
            var packedAt = _native.Allocate<byte>((long)n * blocks * blob, out var packed);
            var scalesAt = _native.Allocate<float>((long)n * blocks, out var scales);
            _g.Weight(packedName, DataType.Uint8, packedAt.File, packedAt.Offset, packedAt.Bytes, n, blocks, blob);
            _g.Weight(scalesName, DataType.Float, scalesAt.File, scalesAt.Offset, scalesAt.Bytes, (long)n * blocks);
            string[] inputs = [x, packedName, scalesName];
            Span<byte> zeroPoints = [];
            if (bits == 4)
            {
                var zeroName = name + ".zero_points";
                var zeroBytes = (long)n * WeightQuantizer.ZeroPointBytesPerRow(k);
                var zeroAt = _native.Allocate<byte>(zeroBytes, out zeroPoints);
                _g.Weight(zeroName, DataType.Uint8, zeroAt.File, zeroAt.Offset, zeroAt.Bytes, zeroBytes);
                inputs = [x, packedName, scalesName, zeroName];
            }
            WeightQuantizer.Quantize(values, n, k, bits, packed, scales, zeroPoints);
            var output = _g.Name("matmulnbits");
            _g.Node("MatMulNBits", "com.microsoft", inputs, [output],
                ("K", (long)k), ("N", (long)n), ("bits", (long)bits), ("block_size", (long)WeightQuantizer.BlockSize), ("accuracy_level", (long)QuantizedAccuracyLevel));
            return output;
        }

        /// <summary>
        /// A weight used as fp32: a view of the memory map when the file stores aligned fp32, else widened once into
        /// native memory. Declared in the graph once.
        /// </summary>
        private string FloatWeight(string name, params long[] shape)
        {
            if (_declared.Contains(name))
            {
                return name;
            }
            var (file, info) = _weights.Require(name, shape);
            _declared.Add(name);
            var at = info.DType == SafetensorsDType.F32 && info.DataOffset % sizeof(float) == 0
                ? _native.UseMapped(file, info)
                : Widen(file, info);
            _g.Weight(name, DataType.Float, at.File, at.Offset, at.Bytes, shape);
            return name;
        }

        private (string File, long Offset, long Bytes) Widen(SafetensorsFile file, SafetensorsTensorInfo info)
        {
            var at = _native.Allocate<float>(info.ElementCount, out var destination);
            WeightConversion.ToFloat32(info, file.Bytes(info), destination);
            return at;
        }

        private readonly HashSet<string> _declared = new(StringComparer.Ordinal);
    }

    /// <summary>
    /// <c>MatMulNBits</c> accuracy level 4: activations are quantized to int8 per block inside the kernel, which runs
    /// ONNX Runtime's int8 dot-product kernels. Measured on a 155 M-parameter Llama shape on 2 cores: level 0 (fp32
    /// compute) decoded at 0.7 (int8) / 1.8 (int4) tokens/s against fp32's 7.8, level 4 at 15 / 20 tokens/s
    /// (docs/serving.md has the table and the accuracy).
    /// </summary>
    internal const int QuantizedAccuracyLevel = 4;
}
