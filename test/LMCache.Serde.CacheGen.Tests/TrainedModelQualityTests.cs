using System.Text.Json.Nodes;
using LMCache.Core.Memory;
using LMCache.Inference.Models;
using LMCache.Inference.Onnx;
using LMCache.Testing;

namespace LMCache.Serde.CacheGen.Tests;

/// <summary>
/// cachegen on a trained model's KV (models/lmcache-demo-coder, reference numbers in test/fixtures/lmcache-demo-coder): the prompt's prefix KV goes through a cachegen
/// round trip (default bins), is restored into a fresh sequence as a retrieve does, and the model continues. The
/// continuation must stay close to the one from uncompressed KV, so a codec that returns wrong values fails here even
/// when its bytes round-trip.
/// </summary>
public sealed class TrainedModelQualityTests : IDisposable
{
    private const int ChunkTokens = 256;
    private const int Prefix = 4 * ChunkTokens;   // within the 2,048 tokens the model was trained on
    private const int Tail = 24;
    private const int Generated = 64;

    /// <summary>
    /// Where in the reference's long prompt (held-out Python source) the 1,048-token window starts. Greedy agreement is
    /// chaotic (one near-tie early on changes every later token): on windows starting at 0, 1024, 2048 and 3072 it was
    /// 0.09, 0.69, 0.94 and 0.34 with default bins, while the teacher-forced top-1 agreement (0.95–0.98) and the mean KL
    /// (0.002–0.010 nats) stayed steady. The window is fixed; the robust measures carry the tight bounds.
    /// </summary>
    private const int WindowStart = 1024;

    private readonly NativeSlabAllocator _allocator = new(64L << 20);
    private readonly ITestOutputHelper _output;

    public TrainedModelQualityTests(ITestOutputHelper output)
    {
        _output = output;
    }

    public void Dispose()
    {
        Assert.Equal(0, _allocator.OutstandingObjects);
        _allocator.Dispose();
    }

    [Fact]
    public void A_cachegen_round_trip_keeps_the_trained_models_continuation()
    {
        // The shipped model (models/, loaded from its safetensors) with the reference numbers kept beside the tests.
        var folder = RepositoryFixtures.Folder("models", "lmcache-demo-coder");
        var reference = JsonNode.Parse(File.ReadAllText(RepositoryFixtures.File("test", "fixtures", "lmcache-demo-coder", "reference.json")))!;
        var ids = reference["prompts"]!["long"]!["input_ids"]!.AsArray().Skip(WindowStart).Take(Prefix + Tail).Select(n => (int)n!).ToArray();
        using var model = LanguageModel.Load(folder, intraOpThreads: Environment.ProcessorCount);
        var decoder = model.Decoder;
        var layout = decoder.Layout;
        Assert.Equal(KvDType.Float32, layout.DType);

        var chunks = new byte[Prefix / ChunkTokens][];
        using (var sequence = new KvSequence(layout, decoder.KvElementType))
        {
            decoder.Forward(ids.AsSpan(0, Prefix), sequence, new float[decoder.VocabSize]);
            for (var j = 0; j < chunks.Length; j++)
            {
                chunks[j] = new byte[2 * layout.NumLayers * ChunkTokens * layout.Hidden * sizeof(float)];
                sequence.CopyToChunk(j * ChunkTokens, ChunkTokens, chunks[j]);
            }
        }

        var serde = new CacheGenSerde(new CacheGenOptions { Threads = 2 });
        long rawBytes = 0, storedBytes = 0;
        var restored = chunks.Select(chunk =>
        {
            using var input = KvData.Chunk(_allocator, KvDType.Float32, layout.NumLayers, ChunkTokens, layout.Hidden, chunk);
            using var blob = serde.Serialize(input, _allocator);
            Assert.NotNull(blob);
            Assert.Equal(0, blob.Span[5]);   // coded, not the lossless fallback
            rawBytes += chunk.Length;
            storedBytes += blob.Length;
            using var back = serde.Deserialize(blob, _allocator);
            Assert.NotNull(back);
            return back.Span.ToArray();
        }).ToArray();
        Assert.False(restored.Zip(chunks).All(p => p.First.AsSpan().SequenceEqual(p.Second)), "cachegen is lossy: the KV must differ");

        var exact = Continue(decoder, ids, chunks, forced: null);
        var free = Continue(decoder, ids, restored, forced: null);
        var forced = Continue(decoder, ids, restored, forced: exact.Tokens);
        var greedy = exact.Tokens.Zip(free.Tokens).Count(p => p.First == p.Second) / (double)Generated;
        var top1 = exact.Tokens.Zip(forced.Tokens).Count(p => p.First == p.Second) / (double)Generated;
        var kl = Enumerable.Range(0, Generated).Average(i => KlDivergence(exact.LogProbs[i], forced.LogProbs[i]));
        _output.WriteLine($"ratio vs fp32 {rawBytes / (double)storedBytes:F2}; greedy agreement {greedy:F3} (identical prefix {exact.Tokens.Zip(free.Tokens).TakeWhile(p => p.First == p.Second).Count()}); teacher-forced top-1 {top1:F3}; mean KL {kl:F5} nats");

        // Measured on this window with default bins (32 everywhere for 6 layers): ratio 7.48 against fp32, greedy
        // agreement 0.688 (identical for 42 tokens), teacher-forced top-1 0.984, mean KL 0.0058 nats (docs/cachegen.md).
        // The bounds are loose against run-to-run and ONNX Runtime differences, and far from what a broken codec gives
        // (16 bins everywhere, a codec merely coarser, already has a mean KL near 0.1 on this model).
        Assert.True(rawBytes / (double)storedBytes > 6.0, $"ratio against fp32 {rawBytes / (double)storedBytes:F2}");
        Assert.True(kl < 0.05, $"mean KL {kl:F5} nats");
        Assert.True(top1 >= 0.85, $"teacher-forced top-1 agreement {top1:F3}");
        Assert.True(greedy >= 0.3, $"greedy agreement over {Generated} tokens {greedy:F3}");
    }

    private static (long[] Tokens, double[][] LogProbs) Continue(OnnxDecoder decoder, int[] ids, byte[][] chunks, long[]? forced)
    {
        using var sequence = new KvSequence(decoder.Layout, decoder.KvElementType);
        sequence.Reset(Prefix);
        for (var j = 0; j < chunks.Length; j++)
        {
            sequence.CopyFromChunk(j * ChunkTokens, ChunkTokens, ChunkTokens, chunks[j]);
        }
        var logits = new float[decoder.VocabSize];
        decoder.Forward(ids.AsSpan(Prefix), sequence, logits);
        var tokens = new long[Generated];
        var logProbs = new double[Generated][];
        for (var i = 0; i < Generated; i++)
        {
            var max = logits.Max();
            var logSum = max + Math.Log(logits.Sum(l => Math.Exp(l - max)));
            logProbs[i] = [.. logits.Select(l => l - logSum)];
            tokens[i] = Array.IndexOf(logits, max);
            if (i < Generated - 1)
            {
                decoder.Forward([(int)(forced?[i] ?? tokens[i])], sequence, logits);
            }
        }
        return (tokens, logProbs);
    }

    private static double KlDivergence(double[] logP, double[] logQ)
    {
        double kl = 0;
        for (var i = 0; i < logP.Length; i++)
        {
            kl += Math.Exp(logP[i]) * (logP[i] - logQ[i]);
        }
        return Math.Max(0, kl);
    }
}
