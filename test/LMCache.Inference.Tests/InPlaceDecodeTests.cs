using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using LMCache.Inference.Models.Graph;
using LMCache.Inference.Models.Safetensors;
using LMCache.Inference.Onnx;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>
/// The decode path that never copies the past: a built graph that outputs only the new KV
/// (<see cref="DecoderGraphOutputs.NewOnly"/>) over a decode batch with spare columns. Checked against the
/// optimum-convention graph (present = concat(past, new)) run one sequence at a time.
/// </summary>
[IntegrationTest]
public sealed class InPlaceDecodeTests : IDisposable
{
    private const double Tolerance = 1e-4;
    private readonly OnnxDecoder _present;
    private readonly OnnxDecoder _inPlace;

    public InPlaceDecodeTests()
    {
        var config = ModelConfig.Parse(File.ReadAllText(Path.Combine(TinyLlama.Folder, "config.json")));
        _present = OnnxDecoder.Create(DecoderGraphBuilder.Build(config, SafetensorsWeights.Open(TinyLlama.Folder)), config, intraOpThreads: 2);
        _inPlace = OnnxDecoder.Create(DecoderGraphBuilder.Build(config, SafetensorsWeights.Open(TinyLlama.Folder), outputs: DecoderGraphOutputs.NewOnly),
            config, intraOpThreads: 2);
    }

    public void Dispose()
    {
        _present.Dispose();
        _inPlace.Dispose();
    }

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Prefills <paramref name="tokens"/> in two chunks (so the second has a past); returns the KV and the last logits.</summary>
    private static (KvSequence Kv, float[] Logits) Prefill(OnnxDecoder decoder, int[] tokens)
    {
        var kv = new KvSequence(decoder.Layout, decoder.KvElementType);
        var logits = new float[decoder.VocabSize];
        var split = Math.Max(1, tokens.Length / 2);
        decoder.Forward(tokens.AsSpan(0, split), kv, logits);
        if (split < tokens.Length)
        {
            decoder.Forward(tokens.AsSpan(split), kv, logits);
        }
        return (kv, logits);
    }

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }
        return best;
    }

    private static double MaxDifference(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        var worst = 0.0;
        for (var i = 0; i < expected.Length; i++)
        {
            worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        }
        return worst;
    }

    private static void AssertSameKv(KvSequence expected, KvSequence actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var layer = 0; layer < expected.Layout.NumLayers; layer++)
        {
            foreach (var value in new[] { false, true })
            {
                var worst = MaxDifference(expected.Tensor(layer, value).GetTensorDataAsSpan<float>(), actual.Tensor(layer, value).GetTensorDataAsSpan<float>());
                Assert.True(worst <= Tolerance, $"{what}: layer {layer} {(value ? "values" : "keys")} differ by {worst:E3}");
            }
        }
    }

    [Fact]
    public void A_graph_that_outputs_only_the_new_kv_prefills_exactly_as_the_present_graph()
    {
        var ids = TinyLlama.Reference.Prompt("long").InputIds[..300];
        var (expectedKv, expectedLogits) = Prefill(_present, ids);
        var (kv, logits) = Prefill(_inPlace, ids);
        using (expectedKv)
        using (kv)
        {
            Assert.True(_inPlace.DecodesInPlace);
            Assert.False(_present.DecodesInPlace);
            var worst = MaxDifference(expectedLogits, logits);
            Assert.True(worst <= Tolerance, $"max |Δlogit| = {worst:E3}");
            AssertSameKv(expectedKv, kv, "prefill");
        }
    }

    [Fact]
    public void Rows_decoded_in_place_give_what_they_give_alone_across_buffer_growth_and_rows_joining_and_leaving()
    {
        var ids = TinyLlama.Reference.Prompt("long").InputIds;
        int[][] prompts = [ids[..37], ids[100..111], ids[200..290]];
        // Steps: all three rows 8 steps, row 1 leaves for 6 steps, then joins again for 6 more.
        (int[] Rows, int Steps)[] phases = [([0, 1, 2], 8), ([0, 2], 6), ([0, 1, 2], 6)];
        var stepsOf = new int[prompts.Length];
        foreach (var (rows, steps) in phases)
        {
            foreach (var r in rows)
            {
                stepsOf[r] += steps;
            }
        }

        // The reference: each row alone, through the optimum-convention graph, greedy.
        var vocab = _present.VocabSize;
        var fed = new int[prompts.Length][];
        var expected = new float[prompts.Length][][];
        var expectedKv = new KvSequence[prompts.Length];
        for (var r = 0; r < prompts.Length; r++)
        {
            var (kv, logits) = Prefill(_present, prompts[r]);
            expectedKv[r] = kv;
            fed[r] = new int[stepsOf[r]];
            expected[r] = new float[stepsOf[r]][];
            for (var s = 0; s < stepsOf[r]; s++)
            {
                fed[r][s] = ArgMax(logits);
                _present.Forward([fed[r][s]], kv, logits);
                expected[r][s] = (float[])logits.Clone();
            }
        }

        var sequences = prompts.Select(p => Prefill(_inPlace, p).Kv).ToArray();
        try
        {
            var done = new int[prompts.Length];
            var grew = 0;
            foreach (var (rows, steps) in phases)
            {
                // Growth every 3 columns: the buffer runs out and is grown several times within each phase.
                using var batch = DecodeBatch.Gather([.. rows.Select(r => sequences[r])], _inPlace.KvElementType, inPlace: true, growthColumns: 3);
                var capacity = batch.Capacity;
                var logits = new float[rows.Length * vocab];
                var tokens = new int[rows.Length];
                for (var s = 0; s < steps; s++)
                {
                    for (var b = 0; b < rows.Length; b++)
                    {
                        tokens[b] = fed[rows[b]][done[rows[b]]];
                    }
                    _inPlace.ForwardBatch(batch, tokens, logits);
                    for (var b = 0; b < rows.Length; b++)
                    {
                        var r = rows[b];
                        var worst = MaxDifference(expected[r][done[r]], logits.AsSpan(b * vocab, vocab));
                        Assert.True(worst <= Tolerance, $"row {r} step {done[r]} (batch of {rows.Length}): max |Δlogit| = {worst:E3}");
                        done[r]++;
                    }
                }
                if (batch.Capacity > capacity)
                {
                    grew++;
                }
                for (var b = 0; b < rows.Length; b++)
                {
                    Assert.Equal(0, sequences[rows[b]].Length);   // the batch owned the KV
                    batch.Scatter(b, sequences[rows[b]]);
                }
            }
            Assert.Equal(phases.Length, grew);
            for (var r = 0; r < prompts.Length; r++)
            {
                AssertSameKv(expectedKv[r], sequences[r], $"row {r} after scatter");
            }
        }
        finally
        {
            foreach (var kv in sequences.Concat(expectedKv))
            {
                kv.Dispose();
            }
        }
    }

    [Fact]
    public void A_batch_stepping_in_place_writes_each_step_into_its_own_buffer_and_grows_by_whole_steps()
    {
        var ids = TinyLlama.Reference.Prompt("long").InputIds;
        var a = Prefill(_inPlace, ids[..20]).Kv;
        var b = Prefill(_inPlace, ids[50..55]).Kv;
        using (a)
        using (b)
        {
            using var batch = DecodeBatch.Gather([a, b], _inPlace.KvElementType, inPlace: true, growthColumns: 4);
            Assert.Equal((20, 24), (batch.Columns, batch.Capacity));
            var key0 = batch.Tensor(0);
            var logits = new float[2 * _inPlace.VocabSize];
            for (var s = 0; s < 4; s++)
            {
                _inPlace.ForwardBatch(batch, [1, 2], logits);
            }
            // Four steps fit the spare columns: the same native buffer was fed and written every step.
            Assert.Same(key0, batch.Tensor(0));
            Assert.Equal((24, 24, 24, 9), (batch.Columns, batch.Capacity, batch.Length(0), batch.Length(1)));
            _inPlace.ForwardBatch(batch, [1, 2], logits);
            Assert.NotSame(key0, batch.Tensor(0));
            Assert.Equal((25, 28), (batch.Columns, batch.Capacity));
            // Row 1's padding (columns 5..19) stays masked; the step's own column is the last.
            var mask = batch.Mask;
            var width = batch.Capacity + 1;
            Assert.Equal(10, mask.Slice(width, 25).ToArray().Count(m => m == 1));
            Assert.Equal(0, mask[width + 10]);
            Assert.Equal(1, mask[width + 24]);
            Assert.Equal(1, mask[width + 28]);
            Assert.Equal(0, mask[width + 25]);
        }
    }

    [Fact]
    public void A_batch_gathered_for_the_other_kind_of_graph_is_refused()
    {
        var a = Prefill(_inPlace, [5, 6, 7]).Kv;
        using (a)
        {
            var logits = new float[_inPlace.VocabSize];
            using (var padded = DecodeBatch.Gather([a], _inPlace.KvElementType))
            {
                Assert.Throws<InvalidOperationException>(() => _inPlace.ForwardBatch(padded, [1], logits));
                padded.Scatter(0, a);
            }
            using var inPlace = DecodeBatch.Gather([a], _present.KvElementType, inPlace: true);
            Assert.Throws<InvalidOperationException>(() => _present.ForwardBatch(inPlace, [1], logits));
        }
    }

    [Fact]
    public async Task The_engine_on_a_built_graph_gives_every_sequence_what_it_gives_alone_past_a_buffer_growth()
    {
        using var model = LanguageModel.Load(TinyLlama.Folder, new ModelLoadOptions { IntraOpThreads = 2, GraphSource = ModelGraphSource.Built });
        Assert.True(model.Decoder.DecodesInPlace);
        var ids = TinyLlama.Reference.Prompt("long").InputIds;
        // The longest decodes past DecodeBatch.GrowthColumns after the last one joined, so its buffer grows mid-generation.
        int[][] prompts = [ids[..40], ids[300..303], ids[500..620], ids[..1]];
        var requests = prompts.Select((p, i) => new GenerationRequest
        {
            PromptTokens = p,
            MaxTokens = i == 0 ? DecodeBatch.GrowthColumns + 60 : 30 + (7 * i),
            IgnoreEos = true,
            LogProbs = true,
        }).ToArray();

        var alone = new GenerationResult[requests.Length];
        await using (var engine = new InferenceEngine(model, cache: null, new InferenceEngineOptions { MaxNumSeqs = 1 }))
        {
            for (var i = 0; i < requests.Length; i++)
            {
                alone[i] = await engine.GenerateToEndAsync(requests[i], Ct);
            }
        }

        await using (var engine = new InferenceEngine(model, cache: null, new InferenceEngineOptions { MaxNumSeqs = 4 }))
        {
            var maxRows = 0;
            engine.StepCompleted += s => maxRows = Math.Max(maxRows, s.DecodeRows);
            var together = await Task.WhenAll(requests.Select(r => engine.GenerateToEndAsync(r, Ct)));
            Assert.True(maxRows >= 3, $"at most {maxRows} sequences were decoded together");
            for (var i = 0; i < requests.Length; i++)
            {
                Assert.Equal(alone[i].TokenIds, together[i].TokenIds);
                var worst = alone[i].Tokens.Zip(together[i].Tokens).Max(p => Math.Abs(p.First.LogProb!.Value - p.Second.LogProb!.Value));
                Assert.True(worst <= Tolerance, $"request {i}: max |Δlogprob| = {worst:E3}");
            }
        }
    }
}
