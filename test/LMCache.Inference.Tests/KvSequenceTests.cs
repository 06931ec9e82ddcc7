using System.Runtime.InteropServices;
using LMCache.Inference.Onnx;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>The adapter between ONNX Runtime's head-major KV and LMCache's KV_2LTD chunks.</summary>
[IntegrationTest]
public sealed class KvSequenceTests : IClassFixture<TinyLlamaModel>
{
    private readonly TinyLlamaModel _fixture;

    public KvSequenceTests(TinyLlamaModel fixture) => _fixture = fixture;

    [Fact]
    public void Chunks_are_kv2ltd_and_round_trip_through_a_fresh_sequence()
    {
        var decoder = _fixture.Model.Decoder;
        var layout = decoder.Layout;
        var ids = TinyLlama.Reference.Prompt("long").InputIds[..300];
        using var source = new KvSequence(layout, decoder.KvElementType);
        decoder.Forward(ids, source, new float[decoder.VocabSize]);

        // Tokens [44, 44 + 200) as one chunk: element [kv, l, t, h*hd + j] == tensor(kv, l)[0, h, 44 + t, j].
        const int start = 44, count = 200;
        var chunk = new byte[2 * layout.NumLayers * count * layout.Hidden * sizeof(float)];
        source.CopyToChunk(start, count, chunk);
        var floats = MemoryMarshal.Cast<byte, float>(chunk);
        for (var kv = 0; kv < 2; kv++)
        {
            for (var l = 0; l < layout.NumLayers; l++)
            {
                var tensor = source.Tensor(l, kv == 1).GetTensorDataAsSpan<float>();
                foreach (var (t, h, j) in new[] { (0, 0, 0), (7, 1, 31), (199, 1, 5), (123, 0, 17) })
                {
                    var expected = tensor[(((h * source.Length) + start + t) * layout.HeadDim) + j];
                    var actual = floats[(((((kv * layout.NumLayers) + l) * count) + t) * layout.Hidden) + (h * layout.HeadDim) + j];
                    Assert.Equal(expected, actual);
                }
            }
        }

        // Copy the first 150 of the chunk's 200 tokens into a fresh sequence at the same positions.
        using var destination = new KvSequence(layout, decoder.KvElementType);
        destination.Reset(start + 150);
        destination.CopyFromChunk(start, count, 150, chunk);
        destination.Truncate(start + 120);
        Assert.Equal(start + 120, destination.Length);
        for (var i = 0; i < 2 * layout.NumLayers; i++)
        {
            var a = source.Tensor(i % layout.NumLayers, i >= layout.NumLayers).GetTensorDataAsSpan<float>();
            var b = destination.Tensor(i % layout.NumLayers, i >= layout.NumLayers).GetTensorDataAsSpan<float>();
            for (var h = 0; h < layout.NumKvHeads; h++)
            {
                var expected = a.Slice(((h * source.Length) + start) * layout.HeadDim, 120 * layout.HeadDim);
                var actual = b.Slice(((h * destination.Length) + start) * layout.HeadDim, 120 * layout.HeadDim);
                Assert.True(expected.SequenceEqual(actual));
            }
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => destination.CopyFromChunk(start, count, 150, chunk));
        Assert.Throws<ArgumentOutOfRangeException>(() => source.CopyToChunk(250, 100, chunk));
    }
}
