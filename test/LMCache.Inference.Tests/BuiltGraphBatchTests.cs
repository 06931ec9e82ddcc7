using LMCache.Inference.Models;
using LMCache.Inference.Models.Graph;
using LMCache.Inference.Models.Safetensors;
using LMCache.Inference.Onnx;
using LMCache.Testing;
using Microsoft.ML.OnnxRuntime;

namespace LMCache.Inference.Tests;

/// <summary>
/// The decoder graph contract the batching scheduler relies on: rows of different past lengths, padded anywhere in
/// their past, give each row exactly the logits and KV it gets alone (within 1e-4).
/// </summary>
[IntegrationTest]
public sealed class BuiltGraphBatchTests : IDisposable
{
    private readonly ModelConfig _config;
    private readonly BuiltDecoderGraph _graph;
    private readonly InferenceSession _session;
    private readonly int _layers;
    private readonly int _kvHeads;
    private readonly int _headDim;
    private readonly int _vocab;

    public BuiltGraphBatchTests()
    {
        _config = ModelConfig.Parse(File.ReadAllText(Path.Combine(TinyLlama.Folder, "config.json")));
        _graph = DecoderGraphBuilder.Build(_config, SafetensorsWeights.Open(TinyLlama.Folder));
        using var options = new SessionOptions { IntraOpNumThreads = 2 };
        OrtNativeApi.AddExternalInitializersFromFilesInMemory(options, _graph.Weights.FileNames, _graph.Weights.FileAddresses, _graph.Weights.FileLengths);
        _session = new InferenceSession(_graph.Model, options);
        (_layers, _kvHeads, _headDim, _vocab) = (_config.NumLayers, _config.NumKeyValueHeads, _config.HeadDim, _config.VocabSize);
    }

    public void Dispose()
    {
        _session.Dispose();
        _graph.Dispose();
    }

    /// <summary>KV of one row: [layer][key/value] arrays of [kvHeads, length, headDim].</summary>
    private sealed record RowKv(float[][] Keys, float[][] Values, int Length);

    /// <summary>Runs one batch; returns logits [rows, vocab] and presents [layer] ([rows, kv, total, hd]).</summary>
    private (float[] Logits, float[][] Keys, float[][] Values) Run(long[] ids, int rows, int seq, long[] mask, long[] positions, float[][] pastKeys, float[][] pastValues, int past)
    {
        var inputs = new Dictionary<string, OrtValue>
        {
            ["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids, [rows, seq]),
            ["attention_mask"] = OrtValue.CreateTensorValueFromMemory(mask, [rows, past + seq]),
            ["position_ids"] = OrtValue.CreateTensorValueFromMemory(positions, [rows, seq]),
        };
        for (var l = 0; l < _layers; l++)
        {
            inputs[$"past_key_values.{l}.key"] = OrtValue.CreateTensorValueFromMemory(pastKeys[l], [rows, _kvHeads, past, _headDim]);
            inputs[$"past_key_values.{l}.value"] = OrtValue.CreateTensorValueFromMemory(pastValues[l], [rows, _kvHeads, past, _headDim]);
        }
        try
        {
            var names = new List<string> { "logits" };
            for (var l = 0; l < _layers; l++)
            {
                names.Add($"present.{l}.key");
                names.Add($"present.{l}.value");
            }
            using var runOptions = new RunOptions();
            using var outputs = _session.Run(runOptions, inputs.Keys.ToList(), inputs.Values.ToList(), names);
            var logits = outputs[0].GetTensorDataAsSpan<float>().ToArray();
            Assert.Equal(rows * _vocab, logits.Length);
            var keys = new float[_layers][];
            var values = new float[_layers][];
            for (var l = 0; l < _layers; l++)
            {
                keys[l] = outputs[1 + (2 * l)].GetTensorDataAsSpan<float>().ToArray();
                values[l] = outputs[2 + (2 * l)].GetTensorDataAsSpan<float>().ToArray();
            }
            return (logits, keys, values);
        }
        finally
        {
            foreach (var value in inputs.Values)
            {
                value.Dispose();
            }
        }
    }

    /// <summary>Runs <paramref name="tokens"/> alone after <paramref name="past"/> (or from scratch); returns last logits and the row's KV.</summary>
    private (float[] Logits, RowKv Kv) Alone(int[] tokens, RowKv? past)
    {
        var pastLength = past?.Length ?? 0;
        var mask = Enumerable.Repeat(1L, pastLength + tokens.Length).ToArray();
        var positions = Enumerable.Range(pastLength, tokens.Length).Select(p => (long)p).ToArray();
        var keys = past?.Keys ?? Enumerable.Range(0, _layers).Select(_ => Array.Empty<float>()).ToArray();
        var values = past?.Values ?? Enumerable.Range(0, _layers).Select(_ => Array.Empty<float>()).ToArray();
        var (logits, k, v) = Run(tokens.Select(t => (long)t).ToArray(), 1, tokens.Length, mask, positions, keys, values, pastLength);
        return (logits, new RowKv(k, v, pastLength + tokens.Length));
    }

    /// <summary>
    /// Lays out rows' pasts in a [rows, kv, width, hd] batch: row r's real columns go where <paramref name="place"/>
    /// says (column index for each of its tokens); every other column is padding filled with large garbage, which the
    /// mask must hide.
    /// </summary>
    private (float[][] Keys, float[][] Values, long[] PastMask) Pad(RowKv[] rows, int width, Func<int, int, int> place)
    {
        var keys = new float[_layers][];
        var values = new float[_layers][];
        var mask = new long[rows.Length * width];
        for (var l = 0; l < _layers; l++)
        {
            keys[l] = new float[rows.Length * _kvHeads * width * _headDim];
            values[l] = new float[keys[l].Length];
            Array.Fill(keys[l], 1e3f);
            Array.Fill(values[l], -1e3f);
            for (var r = 0; r < rows.Length; r++)
            {
                for (var h = 0; h < _kvHeads; h++)
                {
                    for (var t = 0; t < rows[r].Length; t++)
                    {
                        var column = place(r, t);
                        var source = ((h * rows[r].Length) + t) * _headDim;
                        var destination = ((((r * _kvHeads) + h) * width) + column) * _headDim;
                        Array.Copy(rows[r].Keys[l], source, keys[l], destination, _headDim);
                        Array.Copy(rows[r].Values[l], source, values[l], destination, _headDim);
                        mask[(r * width) + column] = 1;
                    }
                }
            }
        }
        return (keys, values, mask);
    }

    private static void AssertRowClose(float[] expected, float[] batch, int row, string what)
    {
        var vocab = expected.Length;
        var worst = 0.0;
        for (var i = 0; i < vocab; i++)
        {
            worst = Math.Max(worst, Math.Abs(expected[i] - batch[(row * vocab) + i]));
        }
        Assert.True(worst <= 1e-4, $"{what}: max |Δlogit| = {worst:E3} exceeds 1e-4");
    }

    private (RowKv A, RowKv B, int[] NewA, int[] NewB) TwoRows(int newTokens)
    {
        var ids = TinyLlama.Reference.Prompt("long").InputIds;
        var a = Alone(ids[..37], null).Kv;
        var b = Alone(ids[100..111], null).Kv;
        return (a, b, ids[37..(37 + newTokens)], ids[111..(111 + newTokens)]);
    }

    [Theory]
    [InlineData(1, "right")]
    [InlineData(3, "right")]
    [InlineData(1, "left")]
    [InlineData(2, "middle")]
    public void Padded_batch_rows_get_the_logits_they_get_alone(int newTokens, string padding)
    {
        var (a, b, newA, newB) = TwoRows(newTokens);
        var (aloneA, kvA) = Alone(newA, a);
        var (aloneB, kvB) = Alone(newB, b);

        // Row 0 (37 real) is full width; row 1 (11 real) is padded on the right, left or in the middle of its past.
        var width = a.Length;
        var gap = width - b.Length;
        Func<int, int, int> place = padding switch
        {
            "right" => (r, t) => t,
            "left" => (r, t) => r == 0 ? t : gap + t,
            _ => (r, t) => r == 0 || t < 5 ? t : gap + t,
        };
        var (keys, values, pastMask) = Pad([a, b], width, place);
        var total = width + newTokens;
        var mask = new long[2 * total];
        var positions = new long[2 * newTokens];
        var ids = new long[2 * newTokens];
        for (var r = 0; r < 2; r++)
        {
            pastMask.AsSpan(r * width, width).CopyTo(mask.AsSpan(r * total));
            for (var t = 0; t < newTokens; t++)
            {
                mask[(r * total) + width + t] = 1;
                positions[(r * newTokens) + t] = (r == 0 ? a.Length : b.Length) + t;
                ids[(r * newTokens) + t] = r == 0 ? newA[t] : newB[t];
            }
        }
        var (logits, presentKeys, _) = Run(ids, 2, newTokens, mask, positions, keys, values, width);
        AssertRowClose(aloneA, logits, 0, $"row 0 ({padding} padding, {newTokens} new)");
        AssertRowClose(aloneB, logits, 1, $"row 1 ({padding} padding, {newTokens} new)");

        // The new KV columns of the padded row equal its alone KV at the same positions (RoPE by position, not index).
        for (var l = 0; l < _layers; l++)
        {
            for (var h = 0; h < _kvHeads; h++)
            {
                for (var t = 0; t < newTokens; t++)
                {
                    var batched = presentKeys[l].AsSpan(((((_kvHeads) + h) * total) + width + t) * _headDim, _headDim);
                    var alone = kvB.Keys[l].AsSpan(((h * kvB.Length) + b.Length + t) * _headDim, _headDim);
                    for (var d = 0; d < _headDim; d++)
                    {
                        Assert.True(Math.Abs(batched[d] - alone[d]) <= 1e-5, $"layer {l} head {h} new token {t}: batched key differs from alone");
                    }
                }
            }
        }
        Assert.Equal(a.Length + newTokens, kvA.Length);
    }
}
