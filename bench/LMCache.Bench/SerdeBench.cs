using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using LMCache.Core.Memory;
using LMCache.Core.Simd;
using LMCache.Hosting;
using LMCache.Inference.Models;
using LMCache.Inference.Onnx;
using LMCache.Serde.CacheGen;

namespace LMCache.Bench;

/// <summary>
/// <c>lmcache bench serde</c>: the cachegen serde on real KV. Runs the fixture (or another model folder with a
/// <c>reference.json</c> prompt) through the serving engine's model runner (<see cref="LanguageModel"/>,
/// <see cref="OnnxDecoder"/>) over a long prompt, takes its KV as 256-token <c>KV_2LTD</c> chunks through
/// <see cref="KvSequence"/> (the adapter LMCache stores from), and measures size (per-chunk and shared tables), encode/decode throughput (one core and all cores),
/// the reconstruction error and the greedy continuation when the prompt's KV comes back through cachegen — beside the
/// naive serde (raw bytes, a copy) measured in the same run.
/// </summary>
internal static class SerdeBench
{
    private const int ChunkTokens = 256;
    private const int GeneratedTokens = 16;

    public static Command Create()
    {
        var json = BenchOptions.Json();
        var model = new Option<DirectoryInfo?>("--model")
        {
            Description = "Model folder (a Hugging Face folder: safetensors or an ONNX export); defaults to the built-in trained model lmcache-demo-coder.",
        };
        var referenceFile = new Option<FileInfo?>("--reference")
        {
            Description = "reference.json holding the prompt token ids (tiny-llama's format); defaults to the model folder's own, else the repository's test/fixtures/lmcache-demo-coder/reference.json found upward from the current folder.",
        };
        var seconds = new Option<double>("--seconds") { Description = "Minimum time per throughput measurement.", DefaultValueFactory = _ => 1.5 };
        var profileChunks = new Option<int>("--profile-chunks") { Description = "Chunks profiled for the shared table (excluded from the shared-table ratio).", DefaultValueFactory = _ => 2 };
        var sweep = new Option<string>("--bins-sweep")
        {
            Description = "Bin settings of the quality curve, comma-separated, each BINS or KEY/VALUE bins for every layer (specs like 10*32,16 are not allowed here); empty skips the curve.",
            DefaultValueFactory = _ => "64,48,32,24,16,12,8,32/16,16/32,64/32",
        };
        var entropy = new Option<bool>("--entropy") { Description = "Also measure the bits per value the quantized symbols need under richer probability models (context models for the shared-tables mode): the \"entropy\" object." };
        var command = new Command("serde", "cachegen vs naive on real KV from the fixture model: ratio, throughput, error, continuation match.")
        {
            json, model, referenceFile, seconds, profileChunks, entropy, sweep,
        };
        command.SetAction(parse =>
        {
            var folder = parse.GetValue(model)?.FullName ?? BuiltInModels.Resolve(BuiltInModel.TrainedDemo);
            var reference = parse.GetValue(referenceFile)?.FullName
                ?? (File.Exists(Path.Combine(folder, "reference.json")) ? Path.Combine(folder, "reference.json") : FindReference());
            if (reference is null)
            {
                Console.Error.WriteLine("error: no reference.json: pass --reference FILE (the trained model's lives in test/fixtures/lmcache-demo-coder of a checkout).");
                return 2;
            }
            var settings = (parse.GetValue(sweep) ?? string.Empty).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var result = Run(folder, reference, parse.GetValue(seconds), Math.Max(1, parse.GetValue(profileChunks)), parse.GetValue(entropy), settings);
            if (parse.GetValue(json))
            {
                Console.WriteLine(result.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            }
            else
            {
                foreach (var (name, value) in result)
                {
                    Console.WriteLine($"{name,-40} {value?.ToJsonString()}");
                }
            }
            return 0;
        });
        return command;
    }

    private static string? FindReference()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "test", "fixtures", "lmcache-demo-coder", "reference.json");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    private static void Progress(string text) => Console.Error.WriteLine($"bench: {text}");

    private static JsonObject Run(string folder, string referencePath, double seconds, int profileChunks, bool entropy, string[] sweep)
    {
        var reference = JsonNode.Parse(File.ReadAllText(referencePath))!;
        var prompt = reference["prompts"]!["long"]!;
        var ids = prompt["input_ids"]!.AsArray().Select(n => (int)n!).ToArray();
        var referenceGreedy = prompt["greedy_16"]?.AsArray().Select(n => (long)n!).ToArray();

        using var model = LanguageModel.Load(folder, intraOpThreads: Environment.ProcessorCount);
        var decoder = model.Decoder;
        var layout = decoder.Layout;
        var prefix = (ids.Length - 1) / ChunkTokens * ChunkTokens;
        if (prefix == 0)
        {
            throw new InvalidOperationException($"The prompt has {ids.Length} tokens; at least {ChunkTokens + 1} are needed.");
        }
        Progress($"prefill of {prefix} tokens ({layout.NumLayers} layers, {layout.NumKvHeads} KV heads x {layout.HeadDim}, {layout.DType})");
        var chunkCount = prefix / ChunkTokens;
        var layers = layout.NumLayers;
        var hidden = layout.Hidden;
        var modelChunks = new byte[chunkCount][];
        using (var sequence = new KvSequence(layout, decoder.KvElementType))
        {
            decoder.Forward(ids.AsSpan(0, prefix), sequence, new float[decoder.VocabSize]);
            for (var j = 0; j < chunkCount; j++)
            {
                modelChunks[j] = new byte[2 * layers * ChunkTokens * hidden * layout.DType.ItemSize()];
                sequence.CopyToChunk(j * ChunkTokens, ChunkTokens, modelChunks[j]);
            }
        }
        var chunksF32 = modelChunks.Select(c => ToFloat(c, layout.DType)).ToArray();
        var chunksBf16 = new byte[chunkCount][];
        for (var j = 0; j < chunkCount; j++)
        {
            chunksBf16[j] = new byte[chunksF32[j].Length * 2];
            var bf = MemoryMarshal.Cast<byte, ushort>(chunksBf16[j].AsSpan());
            for (var i = 0; i < bf.Length; i++)
            {
                bf[i] = Bf16(chunksF32[j][i]);
            }
        }
        var rawBf16 = chunksBf16.Sum(c => (long)c.Length);
        var chunkBytes = chunksBf16[0].Length;

        using var allocator = new NativeSlabAllocator(1L << 30);
        var metaBf16 = new MemoryObjectMetadata(KvShape.Kv2Ltd(layers, ChunkTokens, hidden), KvDType.BFloat16, MemoryFormat.KV2LTD);
        var metaF32 = new MemoryObjectMetadata(KvShape.Kv2Ltd(layers, ChunkTokens, hidden), KvDType.Float32, MemoryFormat.KV2LTD);
        var inputsBf16 = chunksBf16.Select(c => Load(allocator, metaBf16, c)).ToArray();
        var inputsF32 = chunksF32.Select(c => Load(allocator, metaF32, MemoryMarshal.AsBytes(c.AsSpan()))).ToArray();
        try
        {
            var cores = Environment.ProcessorCount;
            var bins = CacheGenBins.Default(layers);
            var serde = new CacheGenSerde(new CacheGenOptions { Threads = cores });

            // Size with the original's per-chunk tables.
            var blobs = inputsBf16.Select(c => serde.Serialize(c, allocator)!).ToArray();
            var cachegenBytes = blobs.Sum(b => (long)b.Length);
            long cachegenF32 = 0;
            foreach (var chunk in inputsF32)
            {
                using var blob = serde.Serialize(chunk, allocator)!;
                cachegenF32 += blob.Length;
            }

            // Sensitivity to the bins: 16 bins everywhere (what models with 10+ layers use for most layers).
            var coarse = new CacheGenSerde(new CacheGenOptions { Threads = cores, KeyBins = "16", ValueBins = "16" });
            long coarseBytes = 0;
            foreach (var chunk in inputsBf16)
            {
                using var blob = coarse.Serialize(chunk, allocator)!;
                coarseBytes += blob.Length;
            }

            // Shared tables: profiled over the first chunks, measured on the others.
            var shared = new CacheGenSerde(new CacheGenOptions { Threads = cores, SharedTables = true, ProfileChunks = Math.Min(profileChunks, chunkCount - 1) });
            long sharedBytes = 0, perChunkSame = 0, rawSame = 0;
            var measuredShared = 0;
            long tableBytes = 0;
            for (var j = 0; j < chunkCount; j++)
            {
                using var blob = shared.Serialize(inputsBf16[j], allocator)!;
                if (CacheGenBlobInfo.TryRead(blob.Span) is { SharedTable: true } info)
                {
                    tableBytes = shared.SharedTables.TryGet(info.TableId)?.Serialized.Length ?? 0;
                    sharedBytes += blob.Length;
                    perChunkSame += blobs[j].Length;
                    rawSame += chunkBytes;
                    measuredShared++;
                }
            }

            // Where the per-chunk blobs' bytes go, and what the version-1 container (raw uint16 CDFs, scales and
            // lengths) would have taken for the same streams.
            var infos = blobs.Select(b => CacheGenBlobInfo.TryRead(b.Span) ?? throw new InvalidOperationException("the serde wrote an invalid blob")).ToArray();
            var streamBytes = infos.Sum(i => i.StreamBytes);
            var sideBytes = infos.Sum(i => i.SideBytes);
            var v1Bytes = infos.Sum(i => i.Raw ? i.TotalBytes : i.TotalBytes - i.SideBytes
                + (2L * layers * ChunkTokens * 2) + (2L * layers * hidden * (bins.MaxBinCount + 1) * 2) + (2L * layers * hidden * 2));

            // Error of the bf16 round trip, in absolute terms and in quantization half-steps of the token's scale.
            double maxError = 0, sumError = 0, maxHalfSteps = 0;
            long elements = 0;
            var restoredF32 = new float[chunkCount][];
            for (var j = 0; j < chunkCount; j++)
            {
                using var back = serde.Deserialize(blobs[j], allocator)!;
                var x = MemoryMarshal.Cast<byte, ushort>(chunksBf16[j].AsSpan());
                var y = MemoryMarshal.Cast<byte, ushort>(back.Span);
                restoredF32[j] = new float[x.Length];
                for (var row = 0; row < 2 * layers; row++)
                {
                    var levels = (bins.RowBins(row) / 2) - 1;
                    for (var t = 0; t < ChunkTokens; t++)
                    {
                        var offset = ((row * ChunkTokens) + t) * hidden;
                        var m = 0f;
                        for (var c = 0; c < hidden; c++)
                        {
                            m = Math.Max(m, Math.Abs(F32(x[offset + c])));
                        }
                        for (var c = 0; c < hidden; c++)
                        {
                            var error = Math.Abs(F32(y[offset + c]) - F32(x[offset + c]));
                            maxError = Math.Max(maxError, error);
                            sumError += error;
                            if (m > 0)
                            {
                                maxHalfSteps = Math.Max(maxHalfSteps, error / (m / (2.0 * levels)));
                            }
                            restoredF32[j][offset + c] = F32(y[offset + c]);
                        }
                    }
                }
                elements += x.Length;
            }

            JsonObject? entropyStudy = null;
            if (entropy && measuredShared > 0)
            {
                Progress("entropy of the quantized symbols under context models");
                entropyStudy = SerdeEntropy.Measure(chunksBf16, layers, ChunkTokens, hidden, bins, chunkCount - measuredShared, sharedBytes / (double)measuredShared);
            }

            // Throughput: MB (10^6 bytes) of raw bf16 KV per second, one thread and all threads, beside a plain copy.
            Progress("throughput");
            var single = new CacheGenSerde(new CacheGenOptions { Threads = 1 });
            var encode1 = Throughput(seconds, rawBf16, () => { foreach (var c in inputsBf16) { single.Serialize(c, allocator)!.Release(); } });
            var encodeN = Throughput(seconds, rawBf16, () => { foreach (var c in inputsBf16) { serde.Serialize(c, allocator)!.Release(); } });
            var decode1 = Throughput(seconds, rawBf16, () => { foreach (var b in blobs) { single.Deserialize(b, allocator)!.Release(); } });
            var decodeN = Throughput(seconds, rawBf16, () => { foreach (var b in blobs) { serde.Deserialize(b, allocator)!.Release(); } });
            var copy = new byte[chunkBytes];
            var copyMbps = Throughput(seconds, rawBf16, () => { foreach (var c in chunksBf16) { c.CopyTo(copy, 0); } }).Wall;
            var load = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "unknown";

            // Greedy continuation: the prompt's KV exact (baseline), rounded to bf16 (naive bf16), or through cachegen.
            Progress("continuation");
            var exact = Continue(decoder, ids, prefix, modelChunks);
            var viaBf16 = Continue(decoder, ids, prefix, chunksBf16.Select(c => FromFloat(MemoryMarshal.Cast<byte, ushort>(c.AsSpan()).ToArray().Select(F32).ToArray(), layout.DType)).ToArray());
            var viaCachegen = Continue(decoder, ids, prefix, restoredF32.Select(c => FromFloat(c, layout.DType)).ToArray());

            // Quality over 64 tokens and several prompts: bf16 rounding alone, the default bins, then the curve.
            Progress($"quality over {SerdeQuality.Tokens} tokens");
            var quality = new SerdeQuality(decoder);
            quality.AddPrefilled("long", ids, prefix, modelChunks, ChunkTokens);
            foreach (var (name, node) in reference["prompts"]!.AsObject())
            {
                var promptIds = node!["input_ids"]!.AsArray().Select(n => (int)n!).ToArray();
                if (name != "long" && promptIds.Length > ChunkTokens)
                {
                    quality.Add(name, promptIds, ChunkTokens);
                }
            }
            var qualityBf16 = quality.Measure(c => SerdeQuality.Bf16RoundTrip(c, layout.DType), ChunkTokens);
            var qualityDefault = quality.Measure(c => SerdeQuality.CachegenRoundTrip(serde, allocator, metaBf16, c, layout.DType), ChunkTokens);
            Progress($"quality curve over {sweep.Length} bin settings");
            var curve = quality.Sweep(sweep, allocator, ChunkTokens, profileChunks, cores);

            foreach (var b in blobs)
            {
                b.Release();
            }

            var output = new JsonObject
            {
                ["model"] = Path.GetFileName(folder.TrimEnd('/')),
                ["kv_source"] = "LMCache.Inference: OnnxDecoder.Forward over the prompt prefix, chunks read through KvSequence.CopyToChunk (the serving engine's adapter)",
                ["prompt_tokens"] = ids.Length,
                ["chunk_tokens"] = ChunkTokens,
                ["chunks"] = chunkCount,
                ["layers"] = layers,
                ["kv_heads"] = layout.NumKvHeads,
                ["head_dim"] = layout.HeadDim,
                ["raw_dtype"] = $"bfloat16 (the model's {layout.DType} KV rounded to bf16, round-to-nearest-even)",
                ["raw_bytes"] = rawBf16,
                ["cachegen_bytes"] = cachegenBytes,
                ["ratio"] = Round(rawBf16 / (double)cachegenBytes),
                ["ratio_fp32_input"] = Round(2.0 * rawBf16 / cachegenF32),
                ["bins"] = bins.ToString(),
                ["payload_bits_per_value"] = Round(8.0 * streamBytes / (rawBf16 / 2.0)),
                ["side_info_bytes"] = sideBytes,
                ["stream_bytes"] = streamBytes,
                ["ratio_v1_container"] = Round(rawBf16 / (double)v1Bytes),
                ["ratio_all_16_bins"] = Round(rawBf16 / (double)coarseBytes),
                ["ratio_shared_tables"] = measuredShared == 0 ? null : Round(rawSame / (double)sharedBytes),
                ["ratio_per_chunk_tables_same_chunks"] = measuredShared == 0 ? null : Round(rawSame / (double)perChunkSame),
                ["shared_table_chunks_measured"] = measuredShared,
                ["shared_table_profiled_chunks"] = chunkCount - measuredShared,
                ["shared_table_bytes_once"] = tableBytes,
                ["cores"] = cores,
                ["encode_mbps"] = new JsonObject { ["per_core"] = Round(encode1.Wall), ["per_core_cpu_time"] = encode1.Cpu is { } e1 ? Round(e1) : null, ["all_cores"] = Round(encodeN.Wall) },
                ["decode_mbps"] = new JsonObject { ["per_core"] = Round(decode1.Wall), ["per_core_cpu_time"] = decode1.Cpu is { } d1 ? Round(d1) : null, ["all_cores"] = Round(decodeN.Wall) },
                ["mbps_unit"] = "10^6 bytes of raw bf16 KV per second; per_core = one thread by the wall clock, per_core_cpu_time = per CPU-second of that thread, all_cores = cachegen_threads = cores by the wall clock",
                ["load_average_1m"] = load,
                ["max_abs_error"] = maxError,
                ["mean_abs_error"] = sumError / elements,
                ["max_error_in_half_steps"] = Round(maxHalfSteps),
                ["continuation_tokens"] = GeneratedTokens,
                ["continuation_match_rate"] = Round(Match(exact, viaCachegen)),
                ["continuation_identical_prefix"] = exact.Zip(viaCachegen).TakeWhile(p => p.First == p.Second).Count(),
                ["continuation_match_rate_bf16_naive"] = Round(Match(exact, viaBf16)),
                ["continuation_baseline_matches_reference"] = referenceGreedy is null ? null : Round(Match(exact, referenceGreedy)),
                ["baseline_naive"] = new JsonObject { ["ratio"] = 1.0, ["bytes"] = rawBf16, ["copy_mbps"] = Round(copyMbps) },
                ["simd_path"] = SimdPaths.Name(serde.Simd),
                ["simd_path_note"] = $"the decoder's vector path (widest the CPU has unless {SimdPaths.Variable} names a narrower one)",
                ["cpu_features"] = new JsonArray([.. SimdPaths.CpuFeatures().Select(f => JsonValue.Create(f))]),
                ["quality_prompts"] = new JsonArray([.. quality.Prompts.Select(p => new JsonObject { ["name"] = p.Name, ["tokens"] = p.Ids.Length, ["restored_prefix"] = p.Prefix })]),
                ["quality_tokens"] = SerdeQuality.Tokens,
                ["quality_note"] = "greedy_agreement: share of the 64 free-running greedy tokens equal to the uncompressed KV's, position by position (min_identical_prefix: shortest run before the first difference); mean_kl: KL(P_exact || P_roundtrip) in nats of the next-token distribution, teacher-forced along the exact continuation; teacher_forced_top1_agreement: share of those teacher-forced positions whose argmax is the exact token (one early flip does not cascade); means over the prompts",
                ["quality_bf16_naive"] = qualityBf16.ToJson(),
                ["quality_cachegen"] = qualityDefault.ToJson(),
                ["bins_sweep"] = curve,
            };
            if (entropyStudy is not null)
            {
                output["entropy"] = entropyStudy;
            }
            return output;
        }
        finally
        {
            foreach (var o in inputsBf16.Concat(inputsF32))
            {
                o.Release();
            }
        }
    }

    private static double Round(double value) => Math.Round(value, 3);


    private static double Match(long[] expected, long[] actual) => expected.Zip(actual).Count(p => p.First == p.Second) / (double)expected.Length;

    private static ushort Bf16(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    private static float F32(ushort bf16) => BitConverter.UInt32BitsToSingle((uint)bf16 << 16);

    private static MemoryObject Load(IMemoryAllocator allocator, MemoryObjectMetadata metadata, ReadOnlySpan<byte> bytes)
    {
        if (!allocator.TryAllocate(metadata, out var chunk))
        {
            throw new InvalidOperationException("bench allocator is full");
        }
        bytes.CopyTo(chunk.Span);
        return chunk;
    }

    /// <summary>MB/s by the wall clock, and MB per CPU-second of the calling thread (Linux; null elsewhere).</summary>
    private static (double Wall, double? Cpu) Throughput(double seconds, long bytesPerPass, Action pass)
    {
        pass(); // warm-up (JIT, pools)
        var cpuStart = ThreadCpuSeconds();
        var watch = Stopwatch.StartNew();
        var passes = 0;
        while (watch.Elapsed.TotalSeconds < seconds || passes < 3)
        {
            pass();
            passes++;
        }
        var wall = watch.Elapsed.TotalSeconds;
        var cpuEnd = ThreadCpuSeconds();
        var bytes = bytesPerPass * (double)passes / 1e6;
        return (bytes / wall, cpuStart is { } a && cpuEnd is { } b && b > a ? bytes / (b - a) : null);
    }

    /// <summary>CPU time of the calling OS thread from <c>/proc/thread-self/schedstat</c> (nanoseconds on the CPU).</summary>
    private static double? ThreadCpuSeconds()
    {
        try
        {
            var text = File.ReadAllText("/proc/thread-self/schedstat");
            return long.Parse(text.AsSpan(0, text.IndexOf(' ', StringComparison.Ordinal)), System.Globalization.CultureInfo.InvariantCulture) / 1e9;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// Loads <paramref name="chunks"/> (the prompt's first <paramref name="prefix"/> tokens of KV, model dtype,
    /// <c>KV_2LTD</c>) into a fresh sequence through <see cref="KvSequence.CopyFromChunk"/>, as a retrieve does, runs the
    /// rest of the prompt on top and generates <see cref="GeneratedTokens"/> tokens greedily.
    /// </summary>
    private static long[] Continue(OnnxDecoder decoder, int[] ids, int prefix, byte[][] chunks)
    {
        using var sequence = new KvSequence(decoder.Layout, decoder.KvElementType);
        sequence.Reset(prefix);
        for (var j = 0; j < chunks.Length; j++)
        {
            sequence.CopyFromChunk(j * ChunkTokens, ChunkTokens, ChunkTokens, chunks[j]);
        }
        var logits = new float[decoder.VocabSize];
        decoder.Forward(ids.AsSpan(prefix), sequence, logits);
        var generated = new long[GeneratedTokens];
        for (var i = 0; i < GeneratedTokens; i++)
        {
            generated[i] = ArgMax(logits);
            if (i == GeneratedTokens - 1)
            {
                break;
            }
            decoder.Forward([(int)generated[i]], sequence, logits);
        }
        return generated;
    }

    /// <summary>A chunk of the model's KV dtype as float32 values.</summary>
    private static float[] ToFloat(byte[] chunk, KvDType dtype) => dtype switch
    {
        KvDType.Float32 => MemoryMarshal.Cast<byte, float>(chunk.AsSpan()).ToArray(),
        KvDType.BFloat16 => MemoryMarshal.Cast<byte, ushort>(chunk.AsSpan()).ToArray().Select(F32).ToArray(),
        KvDType.Float16 => MemoryMarshal.Cast<byte, Half>(chunk.AsSpan()).ToArray().Select(h => (float)h).ToArray(),
        _ => throw new NotSupportedException($"KV dtype {dtype} is not supported by the bench."),
    };

    /// <summary>The inverse of <see cref="ToFloat"/> (round to nearest even).</summary>
    private static byte[] FromFloat(float[] values, KvDType dtype) => dtype switch
    {
        KvDType.Float32 => MemoryMarshal.AsBytes(values.AsSpan()).ToArray(),
        KvDType.BFloat16 => MemoryMarshal.AsBytes(values.Select(Bf16).ToArray().AsSpan()).ToArray(),
        KvDType.Float16 => MemoryMarshal.AsBytes(values.Select(v => (Half)v).ToArray().AsSpan()).ToArray(),
        _ => throw new NotSupportedException($"KV dtype {dtype} is not supported by the bench."),
    };

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
