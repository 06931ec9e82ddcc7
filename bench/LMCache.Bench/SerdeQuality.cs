using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using LMCache.Core.Memory;
using LMCache.Inference.Onnx;
using LMCache.Serde.CacheGen;

namespace LMCache.Bench;

/// <summary>
/// Output quality after a KV round trip, for <c>bench serde</c>: for each prompt, the prefix's KV (whole 256-token
/// chunks) is restored from the round trip into a fresh sequence as a retrieve does, the rest of the prompt runs on top,
/// and the model continues. Reported against the uncompressed KV: greedy agreement (the free-running greedy continuation,
/// position by position, and its identical prefix) and the mean KL divergence <c>KL(P_exact ‖ P_roundtrip)</c> of the
/// next-token distributions along the exact continuation (teacher-forced, so every position compares like with like).
/// </summary>
internal sealed class SerdeQuality
{
    /// <summary>Tokens generated per prompt.</summary>
    public const int Tokens = 64;

    private readonly OnnxDecoder _decoder;
    private readonly List<PromptKv> _prompts = [];

    public SerdeQuality(OnnxDecoder decoder)
    {
        _decoder = decoder;
    }

    /// <summary>The prompts measured, with their chunks.</summary>
    public IReadOnlyList<PromptKv> Prompts => _prompts;

    /// <summary>One prompt: its ids, the prefix held in chunks, the chunks (model dtype) and the exact continuation.</summary>
    public sealed record PromptKv(string Name, int[] Ids, int Prefix, byte[][] Chunks, long[] ExactTokens, double[][] ExactLogProbs);

    /// <summary>Adds a prompt whose prefix KV is already in <paramref name="chunks"/>; computes the exact continuation.</summary>
    public PromptKv AddPrefilled(string name, int[] ids, int prefix, byte[][] chunks, int chunkTokens)
    {
        var exact = Run(ids, prefix, chunks, chunkTokens, forced: null);
        var prompt = new PromptKv(name, ids, prefix, chunks, exact.Tokens, exact.LogProbs);
        _prompts.Add(prompt);
        return prompt;
    }

    /// <summary>Prefills <paramref name="ids"/>' whole chunks, keeps their KV and the exact continuation.</summary>
    public PromptKv Add(string name, int[] ids, int chunkTokens)
    {
        var layout = _decoder.Layout;
        var prefix = (ids.Length - 1) / chunkTokens * chunkTokens;
        if (prefix == 0)
        {
            throw new InvalidOperationException($"Prompt '{name}' has {ids.Length} tokens; at least {chunkTokens + 1} are needed.");
        }
        var chunks = new byte[prefix / chunkTokens][];
        using (var sequence = new KvSequence(layout, _decoder.KvElementType))
        {
            _decoder.Forward(ids.AsSpan(0, prefix), sequence, new float[_decoder.VocabSize]);
            for (var j = 0; j < chunks.Length; j++)
            {
                chunks[j] = new byte[2 * layout.NumLayers * chunkTokens * layout.Hidden * layout.DType.ItemSize()];
                sequence.CopyToChunk(j * chunkTokens, chunkTokens, chunks[j]);
            }
        }
        var exact = Run(ids, prefix, chunks, chunkTokens, forced: null);
        var prompt = new PromptKv(name, ids, prefix, chunks, exact.Tokens, exact.LogProbs);
        _prompts.Add(prompt);
        return prompt;
    }

    /// <summary>
    /// Quality of every prompt's KV after <paramref name="roundTrip"/> (model-dtype chunk in, model-dtype chunk out; null
    /// for a chunk the serde refused, which then counts as a failure).
    /// </summary>
    public Result Measure(Func<byte[], byte[]?> roundTrip, int chunkTokens)
    {
        double agreement = 0, forcedAgreement = 0, kl = 0, klMax = 0;
        var identical = new List<int>();
        var perPrompt = new JsonArray();
        foreach (var prompt in _prompts)
        {
            var restored = prompt.Chunks.Select(c => roundTrip(c) ?? throw new InvalidOperationException("the serde refused a chunk")).ToArray();
            var free = Run(prompt.Ids, prompt.Prefix, restored, chunkTokens, forced: null);
            var forced = Run(prompt.Ids, prompt.Prefix, restored, chunkTokens, forced: prompt.ExactTokens);
            var matches = prompt.ExactTokens.Zip(free.Tokens).Count(p => p.First == p.Second) / (double)Tokens;
            var same = prompt.ExactTokens.Zip(free.Tokens).TakeWhile(p => p.First == p.Second).Count();
            var forcedMatches = prompt.ExactTokens.Zip(forced.Tokens).Count(p => p.First == p.Second) / (double)Tokens;
            forcedAgreement += forcedMatches;
            double promptKl = 0;
            for (var i = 0; i < Tokens; i++)
            {
                var d = KlDivergence(prompt.ExactLogProbs[i], forced.LogProbs[i]);
                promptKl += d;
                klMax = Math.Max(klMax, d);
            }
            promptKl /= Tokens;
            agreement += matches;
            kl += promptKl;
            identical.Add(same);
            perPrompt.Add(new JsonObject
            {
                ["prompt"] = prompt.Name,
                ["greedy_agreement"] = Math.Round(matches, 4),
                ["identical_prefix"] = same,
                ["teacher_forced_top1_agreement"] = Math.Round(forcedMatches, 4),
                ["mean_kl"] = Math.Round(promptKl, 6),
            });
        }
        return new Result(agreement / _prompts.Count, forcedAgreement / _prompts.Count, kl / _prompts.Count, klMax, identical.Min(), perPrompt);
    }

    /// <summary>
    /// Means over prompts of the greedy agreement, the teacher-forced top-1 agreement (same history, same argmax) and the
    /// mean KL (nats); the largest single KL; the shortest identical prefix.
    /// </summary>
    public sealed record Result(double GreedyAgreement, double TeacherForcedAgreement, double MeanKl, double MaxKl, int MinIdenticalPrefix, JsonArray PerPrompt)
    {
        public JsonObject ToJson() => new()
        {
            ["greedy_agreement"] = Math.Round(GreedyAgreement, 4),
            ["teacher_forced_top1_agreement"] = Math.Round(TeacherForcedAgreement, 4),
            ["mean_kl"] = Math.Round(MeanKl, 6),
            ["max_kl"] = Math.Round(MaxKl, 6),
            ["min_identical_prefix"] = MinIdenticalPrefix,
            ["per_prompt"] = PerPrompt.DeepClone(),
        };
    }

    /// <summary>
    /// Restores <paramref name="chunks"/> as the prompt's prefix, runs the tail, then takes <see cref="Tokens"/> steps:
    /// greedy, or feeding <paramref name="forced"/>; returns the argmax tokens and log-probabilities of every step.
    /// </summary>
    private (long[] Tokens, double[][] LogProbs) Run(int[] ids, int prefix, byte[][] chunks, int chunkTokens, long[]? forced)
    {
        using var sequence = new KvSequence(_decoder.Layout, _decoder.KvElementType);
        sequence.Reset(prefix);
        for (var j = 0; j < chunks.Length; j++)
        {
            sequence.CopyFromChunk(j * chunkTokens, chunkTokens, chunkTokens, chunks[j]);
        }
        var logits = new float[_decoder.VocabSize];
        _decoder.Forward(ids.AsSpan(prefix), sequence, logits);
        var tokens = new long[Tokens];
        var logProbs = new double[Tokens][];
        for (var i = 0; i < Tokens; i++)
        {
            logProbs[i] = LogSoftmax(logits);
            tokens[i] = ArgMax(logits);
            if (i == Tokens - 1)
            {
                break;
            }
            _decoder.Forward([(int)(forced?[i] ?? tokens[i])], sequence, logits);
        }
        return (tokens, logProbs);
    }

    /// <summary>
    /// The quality curve: for each bin setting (<c>K</c> or <c>K/V</c>, bins for every layer's keys and values), the ratio
    /// against bf16 with per-chunk tables and with a shared table (profiled on the first prompt's first
    /// <paramref name="profileChunks"/> chunks, measured on its others), bits per value of the streams, the mean absolute
    /// error, and <see cref="Measure"/>'s quality over every prompt.
    /// </summary>
    public JsonArray Sweep(IEnumerable<string> settings, IMemoryAllocator allocator, int chunkTokens, int profileChunks, int threads)
    {
        var layout = _decoder.Layout;
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(layout.NumLayers, chunkTokens, layout.Hidden), KvDType.BFloat16, MemoryFormat.KV2LTD);
        var first = _prompts[0];
        var bf16Chunks = first.Chunks.Select(c => ToBf16(c, layout.DType)).ToArray();
        var rawBytes = bf16Chunks.Sum(c => (long)c.Length);
        var result = new JsonArray();
        foreach (var setting in settings)
        {
            var parts = setting.Split('/');
            var options = new CacheGenOptions { Threads = threads, KeyBins = parts[0], ValueBins = parts.Length > 1 ? parts[1] : parts[0] };
            var serde = new CacheGenSerde(options);
            long bytes = 0, streamBytes = 0;
            double errorSum = 0;
            long values = 0;
            foreach (var chunk in bf16Chunks)
            {
                var input = Allocate(allocator, metadata, chunk);
                try
                {
                    using var blob = serde.Serialize(input, allocator) ?? throw new InvalidOperationException("the serde refused a chunk");
                    bytes += blob.Length;
                    streamBytes += CacheGenBlobInfo.TryRead(blob.Span)?.StreamBytes ?? 0;
                    using var back = serde.Deserialize(blob, allocator) ?? throw new InvalidOperationException("the serde could not read its blob");
                    var x = MemoryMarshal.Cast<byte, ushort>(chunk.AsSpan());
                    var y = MemoryMarshal.Cast<byte, ushort>(back.Span);
                    for (var i = 0; i < x.Length; i++)
                    {
                        errorSum += Math.Abs(BitConverter.UInt32BitsToSingle((uint)y[i] << 16) - BitConverter.UInt32BitsToSingle((uint)x[i] << 16));
                    }
                    values += x.Length;
                }
                finally
                {
                    input.Release();
                }
            }

            var shared = new CacheGenSerde(new CacheGenOptions { Threads = threads, KeyBins = options.KeyBins, ValueBins = options.ValueBins, SharedTables = true, ProfileChunks = Math.Min(profileChunks, bf16Chunks.Length - 1) });
            long sharedBytes = 0, sharedRaw = 0;
            foreach (var chunk in bf16Chunks)
            {
                var input = Allocate(allocator, metadata, chunk);
                try
                {
                    using var blob = shared.Serialize(input, allocator) ?? throw new InvalidOperationException("the serde refused a chunk");
                    if (CacheGenBlobInfo.TryRead(blob.Span) is { SharedTable: true })
                    {
                        sharedBytes += blob.Length;
                        sharedRaw += chunk.Length;
                    }
                }
                finally
                {
                    input.Release();
                }
            }

            var quality = Measure(c => CachegenRoundTrip(serde, allocator, metadata, c, layout.DType), chunkTokens);
            var entry = new JsonObject
            {
                ["key_bins"] = options.KeyBins,
                ["value_bins"] = options.ValueBins,
                ["ratio"] = Math.Round(rawBytes / (double)bytes, 3),
                ["ratio_shared_tables"] = sharedBytes == 0 ? null : Math.Round(sharedRaw / (double)sharedBytes, 3),
                ["payload_bits_per_value"] = Math.Round(8.0 * streamBytes / (rawBytes / 2.0), 3),
                ["mean_abs_error"] = Math.Round(errorSum / values, 6),
            };
            foreach (var (name, value) in quality.ToJson())
            {
                entry[name] = value?.DeepClone();
            }
            result.Add(entry);
        }
        return result;
    }

    private static MemoryObject Allocate(IMemoryAllocator allocator, MemoryObjectMetadata metadata, ReadOnlySpan<byte> bytes)
    {
        if (!allocator.TryAllocate(metadata, out var chunk))
        {
            throw new InvalidOperationException("bench allocator is full");
        }
        bytes.CopyTo(chunk.Span);
        return chunk;
    }

    /// <summary>A round trip of a model-dtype chunk through bf16 and <paramref name="serde"/>, back to the model dtype.</summary>
    public static byte[]? CachegenRoundTrip(CacheGenSerde serde, IMemoryAllocator allocator, MemoryObjectMetadata bf16Metadata, byte[] chunk, KvDType modelDType)
    {
        var input = Allocate(allocator, bf16Metadata, ToBf16(chunk, modelDType));
        try
        {
            using var blob = serde.Serialize(input, allocator);
            if (blob is null)
            {
                return null;
            }
            using var back = serde.Deserialize(blob, allocator);
            return back is null ? null : FromBf16(back.Span, modelDType);
        }
        finally
        {
            input.Release();
        }
    }

    /// <summary>Only the bf16 rounding (the naive serde of a bf16 engine): the floor under any bf16 codec.</summary>
    public static byte[] Bf16RoundTrip(byte[] chunk, KvDType modelDType) => FromBf16(ToBf16(chunk, modelDType), modelDType);

    private static byte[] ToBf16(byte[] chunk, KvDType dtype)
    {
        var values = dtype switch
        {
            KvDType.Float32 => MemoryMarshal.Cast<byte, float>(chunk.AsSpan()).ToArray(),
            KvDType.Float16 => [.. MemoryMarshal.Cast<byte, Half>(chunk.AsSpan()).ToArray().Select(h => (float)h)],
            KvDType.BFloat16 => [.. MemoryMarshal.Cast<byte, ushort>(chunk.AsSpan()).ToArray().Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16))],
            _ => throw new NotSupportedException($"KV dtype {dtype} is not supported by the bench."),
        };
        var result = new byte[values.Length * 2];
        var bf = MemoryMarshal.Cast<byte, ushort>(result.AsSpan());
        for (var i = 0; i < values.Length; i++)
        {
            var bits = BitConverter.SingleToUInt32Bits(values[i]);
            bf[i] = (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
        }
        return result;
    }

    private static byte[] FromBf16(ReadOnlySpan<byte> bf16, KvDType dtype)
    {
        var source = MemoryMarshal.Cast<byte, ushort>(bf16);
        switch (dtype)
        {
            case KvDType.BFloat16:
                return bf16.ToArray();
            case KvDType.Float32:
                {
                    var result = new float[source.Length];
                    for (var i = 0; i < source.Length; i++)
                    {
                        result[i] = BitConverter.UInt32BitsToSingle((uint)source[i] << 16);
                    }
                    return MemoryMarshal.AsBytes(result.AsSpan()).ToArray();
                }
            case KvDType.Float16:
                {
                    var result = new Half[source.Length];
                    for (var i = 0; i < source.Length; i++)
                    {
                        result[i] = (Half)BitConverter.UInt32BitsToSingle((uint)source[i] << 16);
                    }
                    return MemoryMarshal.AsBytes(result.AsSpan()).ToArray();
                }
            default:
                throw new NotSupportedException($"KV dtype {dtype} is not supported by the bench.");
        }
    }

    private static double[] LogSoftmax(ReadOnlySpan<float> logits)
    {
        var max = double.NegativeInfinity;
        foreach (var l in logits)
        {
            max = Math.Max(max, l);
        }
        double sum = 0;
        foreach (var l in logits)
        {
            sum += Math.Exp(l - max);
        }
        var logSum = max + Math.Log(sum);
        var result = new double[logits.Length];
        for (var i = 0; i < logits.Length; i++)
        {
            result[i] = logits[i] - logSum;
        }
        return result;
    }

    /// <summary>KL(P ‖ Q) in nats from log-probabilities.</summary>
    private static double KlDivergence(double[] logP, double[] logQ)
    {
        double kl = 0;
        for (var i = 0; i < logP.Length; i++)
        {
            var p = Math.Exp(logP[i]);
            if (p > 0)
            {
                kl += p * (logP[i] - logQ[i]);
            }
        }
        return Math.Max(0, kl);
    }

    private static long ArgMax(ReadOnlySpan<float> values)
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
}
