using System.Globalization;
using System.Text.RegularExpressions;
using LMCache.Engine;
using LMCache.Inference.Models;
using LMCache.Inference.Models.Graph;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LMCache.Inference.Onnx;

/// <summary>
/// A decoder-with-past ONNX model in the <c>optimum</c> IO convention: inputs <c>input_ids</c>, optional
/// <c>attention_mask</c> and <c>position_ids</c>, <c>past_key_values.{i}.key/value</c>
/// <c>[batch, kv_heads, past, head_dim]</c>; outputs <c>logits</c> (<c>[batch, seq, vocab]</c>, or
/// <c>[batch, 1, vocab]</c> for exports that keep only the last position) and <c>present.{i}.key/value</c>.
/// Our loop owns the KV: each <see cref="Forward"/> feeds a <see cref="KvSequence"/> as the past and replaces it with
/// the present. One session per model; runs are serialized by the caller.
/// </summary>
public sealed partial class OnnxDecoder : IDisposable
{
    private readonly InferenceSession _session;
    private readonly RunOptions _runOptions = new();
    private readonly string[] _pastNames;      // [kv * layers + layer]
    private readonly string[] _presentNames;   // same order: present.* or, for a NewOnly graph, new_key_values.*
    private readonly bool _newKvOnly;
    private readonly bool _hasAttentionMask;
    private readonly bool _hasPositionIds;
    private readonly string? _logitsToKeepName;
    private readonly bool _lastLogitsOnly;
    private readonly TensorElementType _logitsType;

    private OnnxDecoder(InferenceSession session, KvLayout layout, TensorElementType kvType, int vocabSize,
        string[] pastNames, string[] presentNames, bool hasAttentionMask, bool hasPositionIds, string? logitsToKeepName,
        bool lastLogitsOnly, TensorElementType logitsType, bool newKvOnly)
    {
        _session = session;
        _newKvOnly = newKvOnly;
        Layout = layout;
        KvElementType = kvType;
        VocabSize = vocabSize;
        _pastNames = pastNames;
        _presentNames = presentNames;
        _hasAttentionMask = hasAttentionMask;
        _hasPositionIds = hasPositionIds;
        _logitsToKeepName = logitsToKeepName;
        _lastLogitsOnly = lastLogitsOnly;
        _logitsType = logitsType;
    }

    /// <summary>The KV geometry (layers, KV heads, head size, dtype) read from the model's past inputs.</summary>
    public KvLayout Layout { get; }

    /// <summary>ONNX element type of the KV tensors.</summary>
    public TensorElementType KvElementType { get; }

    /// <summary>Logits per position.</summary>
    public int VocabSize { get; }

    /// <summary>
    /// Loads <paramref name="path"/> and checks its inputs and outputs against the convention and
    /// <paramref name="config"/>.
    /// </summary>
    /// <param name="path">The .onnx file (external data next to it is found by ONNX Runtime).</param>
    /// <param name="config">The model's config.json, for the layer/head geometry when the graph leaves it symbolic.</param>
    /// <param name="intraOpThreads">ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose (one per core).</param>
    /// <exception cref="InvalidDataException">The graph does not follow the decoder-with-past convention.</exception>
    public static OnnxDecoder Load(string path, ModelConfig config, int intraOpThreads = 0)
    {
        using var sessionOptions = CreateSessionOptions(intraOpThreads);
        var session = new InferenceSession(path, sessionOptions);
        try
        {
            return Create(session, config);
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Creates a decoder over a graph built in C# (<see cref="DecoderGraphBuilder"/>), giving ONNX Runtime its weights
    /// as in-memory external-data files. ONNX Runtime copies them into the session, so <paramref name="graph"/> (its
    /// native buffers and memory maps) is disposed as soon as the session exists, or on failure.
    /// </summary>
    /// <param name="graph">The built graph and its weights.</param>
    /// <param name="config">The model's config.json.</param>
    /// <param name="intraOpThreads">ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose (one per core).</param>
    /// <param name="disablePrepacking">Whether ONNX Runtime keeps weights as given instead of re-packing them (see docs/serving.md).</param>
    public static OnnxDecoder Create(BuiltDecoderGraph graph, ModelConfig config, int intraOpThreads = 0, bool disablePrepacking = DisablePrepackingDefault)
    {
        ArgumentNullException.ThrowIfNull(graph);
        try
        {
            using var sessionOptions = CreateSessionOptions(intraOpThreads);
            if (disablePrepacking)
            {
                sessionOptions.AddSessionConfigEntry("session.disable_prepacking", "1");
            }
            OrtNativeApi.AddExternalInitializersFromFilesInMemory(sessionOptions, graph.Weights.FileNames, graph.Weights.FileAddresses, graph.Weights.FileLengths);
            var session = new InferenceSession(graph.Model, sessionOptions);
            // ONNX Runtime copies initializers out of in-memory external-data files when it creates the session
            // (measured: poisoning our buffers afterwards leaves the logits unchanged), so ours are released now and
            // the weights live once, in ONNX Runtime's memory, for the life of the session.
            graph.Dispose();
            try
            {
                return Create(session, config);
            }
            catch
            {
                session.Dispose();
                throw;
            }
        }
        catch
        {
            graph.Dispose();
            throw;
        }
    }

    /// <summary>Whether built graphs run with ONNX Runtime's weight pre-packing off by default (measured: docs/serving.md).</summary>
    public const bool DisablePrepackingDefault = false;

    private static SessionOptions CreateSessionOptions(int intraOpThreads) => new()
    {
        GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
        IntraOpNumThreads = intraOpThreads,
        InterOpNumThreads = 1,
        ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
        // Every run has new shapes (growing past, varying prompt steps): memory-pattern planning would be redone each time.
        EnableMemoryPattern = false,
    };

    private static OnnxDecoder Create(InferenceSession session, ModelConfig config)
    {
        var inputs = session.InputMetadata;
        var outputs = session.OutputMetadata;
        if (!inputs.ContainsKey("input_ids"))
        {
            throw new InvalidDataException("ONNX model: no 'input_ids' input; expected a decoder exported in the optimum convention.");
        }
        if (!outputs.ContainsKey("logits"))
        {
            throw new InvalidDataException("ONNX model: no 'logits' output.");
        }
        var pastLayers = inputs.Keys.Select(k => PastKeyRegex().Match(k)).Where(m => m.Success)
            .Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).Distinct().OrderBy(i => i).ToArray();
        if (pastLayers.Length == 0)
        {
            throw new InvalidDataException("ONNX model: no 'past_key_values.{i}.key' inputs; export the decoder *with past* (optimum task text-generation-with-past).");
        }
        var layers = pastLayers.Length;
        if (pastLayers[^1] != layers - 1)
        {
            throw new InvalidDataException($"ONNX model: past_key_values layers are not 0..{layers - 1}.");
        }
        if (layers != config.NumLayers)
        {
            throw new InvalidDataException($"ONNX model has {layers} layers of past_key_values but config.json says num_hidden_layers = {config.NumLayers}.");
        }
        var pastNames = new string[2 * layers];
        var presentNames = new string[2 * layers];
        // A built graph of DecoderGraphOutputs.NewOnly outputs only the new tokens' KV; every other graph, the present.
        var newKvOnly = outputs.ContainsKey("new_key_values.0.key") && !outputs.ContainsKey("present.0.key");
        var outputPrefix = newKvOnly ? "new_key_values" : "present";
        for (var l = 0; l < layers; l++)
        {
            pastNames[l] = $"past_key_values.{l}.key";
            pastNames[layers + l] = $"past_key_values.{l}.value";
            presentNames[l] = $"{outputPrefix}.{l}.key";
            presentNames[layers + l] = $"{outputPrefix}.{l}.value";
        }
        foreach (var name in pastNames)
        {
            if (!inputs.ContainsKey(name))
            {
                throw new InvalidDataException($"ONNX model: missing input '{name}'.");
            }
        }
        foreach (var name in presentNames)
        {
            if (!outputs.ContainsKey(name))
            {
                throw new InvalidDataException($"ONNX model: missing output '{name}'.");
            }
        }
        var past0 = inputs[pastNames[0]];
        var kvType = past0.ElementDataType;
        var dims = past0.Dimensions;
        var kvHeads = dims.Length == 4 && dims[1] > 0 ? dims[1] : config.NumKeyValueHeads;
        var headDim = dims.Length == 4 && dims[3] > 0 ? dims[3] : config.HeadDim;
        if (kvHeads != config.NumKeyValueHeads || headDim != config.HeadDim)
        {
            throw new InvalidDataException($"ONNX past tensors are [*, {kvHeads}, *, {headDim}] but config.json says {config.NumKeyValueHeads} KV heads of {config.HeadDim}.");
        }
        var layout = new KvLayout(layers, kvHeads, headDim, KvSequence.ToKvDType(kvType));
        var logits = outputs["logits"];
        var vocab = logits.Dimensions.Length == 3 && logits.Dimensions[2] > 0 ? logits.Dimensions[2] : config.VocabSize;
        var lastOnly = logits.Dimensions.Length == 3 && logits.Dimensions[1] == 1;
        var logitsToKeep = inputs.Keys.FirstOrDefault(k => k is "num_logits_to_keep" or "logits_to_keep");
        foreach (var name in inputs.Keys)
        {
            if (name is not ("input_ids" or "attention_mask" or "position_ids" or "num_logits_to_keep" or "logits_to_keep") && !pastNames.Contains(name))
            {
                throw new InvalidDataException($"ONNX model: unexpected input '{name}' (this engine feeds input_ids, attention_mask, position_ids and past_key_values.*).");
            }
        }
        return new OnnxDecoder(session, layout, kvType, vocab, pastNames, presentNames,
            inputs.ContainsKey("attention_mask"), inputs.ContainsKey("position_ids"), logitsToKeep,
            lastOnly || logitsToKeep is not null, logits.ElementDataType, newKvOnly);
    }

    /// <summary>
    /// Whether the graph outputs only the new tokens' KV and reads the past in place
    /// (<see cref="DecoderGraphOutputs.NewOnly"/>): decode batches are then gathered with spare columns and a step
    /// never copies the past (<see cref="DecodeBatch"/>).
    /// </summary>
    public bool DecodesInPlace => _newKvOnly;

    /// <summary>
    /// Runs the model on <paramref name="tokens"/> at positions <c>sequence.Length ..</c>, extends
    /// <paramref name="sequence"/> with their KV, and writes the logits of the last position into
    /// <paramref name="lastLogits"/> (length <see cref="VocabSize"/>).
    /// </summary>
    public void Forward(ReadOnlySpan<int> tokens, KvSequence sequence, Span<float> lastLogits)
    {
        if (tokens.IsEmpty)
        {
            throw new ArgumentException("At least one token is needed.", nameof(tokens));
        }
        var past = sequence.Length;
        var count = tokens.Length;
        var total = past + count;
        var ids = new long[count];
        var positions = new long[count];
        for (var i = 0; i < count; i++)
        {
            ids[i] = tokens[i];
            positions[i] = past + i;
        }
        var inputNames = new List<string>(4 + _pastNames.Length);
        var inputValues = new List<OrtValue>(4 + _pastNames.Length);
        var owned = new List<OrtValue>(4);
        var outputNames = new List<string>(1 + _presentNames.Length);
        var outputValues = new List<OrtValue>(1 + _presentNames.Length);
        OrtValue[]? presents = null;
        try
        {
            Add("input_ids", OrtValue.CreateTensorValueFromMemory(ids, [1, count]), own: true);
            if (_hasAttentionMask)
            {
                var mask = new long[total];
                Array.Fill(mask, 1L);
                Add("attention_mask", OrtValue.CreateTensorValueFromMemory(mask, [1, total]), own: true);
            }
            if (_hasPositionIds)
            {
                Add("position_ids", OrtValue.CreateTensorValueFromMemory(positions, [1, count]), own: true);
            }
            if (_logitsToKeepName is not null)
            {
                Add(_logitsToKeepName, OrtValue.CreateTensorValueFromMemory(new long[] { 1 }, []), own: true);
            }
            for (var i = 0; i < _pastNames.Length; i++)
            {
                Add(_pastNames[i], sequence.Tensor(i % Layout.NumLayers, i >= Layout.NumLayers), own: false);
            }

            var logitRows = _lastLogitsOnly ? 1 : count;
            var logits = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _logitsType, [1, logitRows, VocabSize]);
            owned.Add(logits);
            outputNames.Add("logits");
            outputValues.Add(logits);
            presents = sequence.Allocate(total);
            outputNames.AddRange(_presentNames);
            if (_newKvOnly)
            {
                foreach (var value in sequence.AllocateNew(count))
                {
                    owned.Add(value);
                    outputValues.Add(value);
                }
            }
            else
            {
                outputValues.AddRange(presents);
            }

            _session.Run(_runOptions, inputNames, inputValues, outputNames, outputValues);
            if (_newKvOnly)
            {
                // present = concat(past, new), done here instead of in the graph (a prefill chunk copies its past once).
                sequence.Concatenate(outputValues.GetRange(1, presents.Length), presents, count);
            }

            CopyLogits(logits, (logitRows - 1) * VocabSize, VocabSize, lastLogits);
            sequence.Replace(presents, total);
            presents = null;
        }
        finally
        {
            foreach (var value in owned)
            {
                value.Dispose();
            }
            if (presents is not null)
            {
                foreach (var value in presents)
                {
                    value.Dispose();
                }
            }
        }

        void Add(string name, OrtValue value, bool own)
        {
            inputNames.Add(name);
            inputValues.Add(value);
            if (own)
            {
                owned.Add(value);
            }
        }
    }

    /// <summary>
    /// Whether several sequences can decode in one run: the graph takes <c>attention_mask</c> and <c>position_ids</c>,
    /// so padded rows are exact (the decoder graph contract). Without them (the random-weight demo graph) the
    /// scheduler runs each row on its own.
    /// </summary>
    public bool SupportsBatching => _hasAttentionMask && _hasPositionIds;

    /// <summary>
    /// One decode step for every row of <paramref name="batch"/>: row b's token <paramref name="tokens"/>[b] at
    /// position <see cref="DecodeBatch.Length"/>(b), attending to its own real tokens only (the mask hides the
    /// padding). Appends the new KV column to the batch and writes row b's logits to
    /// <paramref name="logits"/>[b × <see cref="VocabSize"/> ..].
    /// </summary>
    internal void ForwardBatch(DecodeBatch batch, ReadOnlySpan<int> tokens, Span<float> logits)
    {
        if (!SupportsBatching)
        {
            throw new InvalidOperationException("This graph has no attention_mask/position_ids input: it cannot decode several sequences in one run.");
        }
        var rows = batch.Rows;
        if (tokens.Length != rows || logits.Length < rows * VocabSize)
        {
            throw new ArgumentException($"Expected {rows} tokens and {rows * VocabSize} logits.", nameof(tokens));
        }
        if (batch.InPlace != _newKvOnly)
        {
            throw new InvalidOperationException(_newKvOnly
                ? "This graph reads the past in place: gather the decode batch with inPlace = true."
                : "This graph outputs the whole present: gather the decode batch with inPlace = false.");
        }
        if (_newKvOnly)
        {
            batch.EnsureSpareColumn();
        }
        var columns = _newKvOnly ? batch.Capacity + 1 : batch.Columns + 1;
        var ids = new long[rows];
        var positions = new long[rows];
        long[] mask;
        if (_newKvOnly)
        {
            // The batch's own mask: its storage columns (spare ones 0) and a last column of ones for the new token.
            mask = batch.MaskArray;
            for (var b = 0; b < rows; b++)
            {
                ids[b] = tokens[b];
                positions[b] = batch.Length(b);
            }
        }
        else
        {
            mask = new long[rows * columns];
            var pastMask = batch.Mask;
            for (var b = 0; b < rows; b++)
            {
                ids[b] = tokens[b];
                positions[b] = batch.Length(b);
                pastMask.Slice(b * batch.Columns, batch.Columns).CopyTo(mask.AsSpan(b * columns));
                mask[(b * columns) + columns - 1] = 1;
            }
        }
        var inputNames = new List<string>(4 + _pastNames.Length);
        var inputValues = new List<OrtValue>(4 + _pastNames.Length);
        var owned = new List<OrtValue>(5);
        OrtValue[]? presents = null;
        try
        {
            Add("input_ids", OrtValue.CreateTensorValueFromMemory(ids, [rows, 1]));
            Add("attention_mask", OrtValue.CreateTensorValueFromMemory(mask, [rows, columns]));
            Add("position_ids", OrtValue.CreateTensorValueFromMemory(positions, [rows, 1]));
            if (_logitsToKeepName is not null)
            {
                Add(_logitsToKeepName, OrtValue.CreateTensorValueFromMemory(new long[] { 1 }, []));
            }
            for (var i = 0; i < _pastNames.Length; i++)
            {
                inputNames.Add(_pastNames[i]);
                inputValues.Add(batch.Tensor(i));
            }
            var output = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _logitsType, [rows, 1, VocabSize]);
            owned.Add(output);
            var outputNames = new List<string>(1 + _presentNames.Length) { "logits" };
            outputNames.AddRange(_presentNames);
            var outputValues = new List<OrtValue>(1 + _presentNames.Length) { output };
            if (_newKvOnly)
            {
                for (var i = 0; i < _presentNames.Length; i++)
                {
                    outputValues.Add(batch.NewTensor(i));
                }
            }
            else
            {
                presents = batch.Allocate(columns);
                outputValues.AddRange(presents);
            }

            _session.Run(_runOptions, inputNames, inputValues, outputNames, outputValues);

            CopyLogits(output, 0, rows * VocabSize, logits);
            if (_newKvOnly)
            {
                batch.AppendNew();
            }
            else
            {
                batch.Append(presents!, mask);
                presents = null;
            }
        }
        finally
        {
            foreach (var value in owned)
            {
                value.Dispose();
            }
            if (presents is not null)
            {
                foreach (var value in presents)
                {
                    value.Dispose();
                }
            }
        }

        void Add(string name, OrtValue value)
        {
            inputNames.Add(name);
            inputValues.Add(value);
            owned.Add(value);
        }
    }

    /// <summary>Copies <paramref name="count"/> logits from <paramref name="offset"/> of a run's output, widening fp16.</summary>
    private void CopyLogits(OrtValue output, int offset, int count, Span<float> destination)
    {
        if (_logitsType == TensorElementType.Float)
        {
            output.GetTensorDataAsSpan<float>().Slice(offset, count).CopyTo(destination);
        }
        else if (_logitsType == TensorElementType.Float16)
        {
            var half = output.GetTensorDataAsSpan<Float16>().Slice(offset, count);
            for (var i = 0; i < count; i++)
            {
                destination[i] = (float)half[i];
            }
        }
        else
        {
            throw new NotSupportedException($"logits element type {_logitsType} is not supported.");
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _session.Dispose();
        _runOptions.Dispose();
    }

    [GeneratedRegex(@"^past_key_values\.(\d+)\.key$", RegexOptions.CultureInvariant)]
    private static partial Regex PastKeyRegex();
}
