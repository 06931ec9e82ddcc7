using System.Buffers.Binary;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Google.Protobuf;
using LMCache.Core.Simd;
using LMCache.Inference.Demo;
using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using Microsoft.ML.OnnxRuntime;
using Onnx;

namespace LMCache.Bench;

/// <summary>
/// <c>lmcache bench engine</c>: what the inference engine does with a model folder — load time, resident memory,
/// prefill and decode speed — each beside the physical bound measured in the same run: reading the folder's files
/// once, the weights' bytes in their compute form plus the KV, the machine's memcpy bandwidth and a plain fp32 GEMM of
/// the model's prefill shape on ONNX Runtime with the same thread count. The ratios the issue's targets name are
/// printed beside them (<c>target_*</c>: met or missed).
/// </summary>
/// <remarks>
/// Order of a run, and why: (1) the folder's files are read twice with sequential FileStream reads — the first pass
/// brings them into the page cache, the second is the timed baseline; (2) the model is loaded from the same, now
/// cached, files (so load and read see the same page-cache state: warm); (3) prefill and decode run through the
/// serving engine (<see cref="InferenceEngine"/>, no LMCache tier, the engine's own prefill steps); (4) RSS and the
/// high-water mark are read before (5) the memcpy and GEMM baselines allocate their own buffers.
/// </remarks>
internal static class EngineBench
{
    // The built graph's MatMulNBits block (WeightQuantizer.BlockSize): one fp32 scale per 32 weights.
    private const int QuantBlock = 32;

    public static Command Create()
    {
        var json = BenchOptions.Json();
        var model = new Option<DirectoryInfo?>("--model") { Description = "Model folder (default: the built-in demo model)." };
        var quantize = new Option<string>("--quantize") { Description = "Weight quantization of the built graph: none, int8 or int4.", DefaultValueFactory = _ => "none" };
        quantize.AcceptOnlyFromAmong("none", "int8", "int4");
        var compareOnnx = new Option<bool>("--compare-onnx")
        {
            Description = "Also run prefill and decode on the folder's optimum export (onnx/model.onnx) and print built ÷ export; needs both an export and safetensors.",
        };
        var graph = new Option<string>("--graph")
        {
            Description = "Decoder graph measured: auto (the export when the folder has one, else built; built with --compare-onnx or --quantize), onnx or built.",
            DefaultValueFactory = _ => "auto",
        };
        graph.AcceptOnlyFromAmong("auto", "onnx", "built");
        var prefill = new Option<string>("--prefill-tokens") { Description = "Prompt lengths to prefill, comma-separated (capped by the model's context).", DefaultValueFactory = _ => "512,2048,4096" };
        var decodePrompt = new Option<int>("--decode-prompt") { Description = "Prompt length before the decode measurement.", DefaultValueFactory = _ => 512 };
        var decodeTokens = new Option<int>("--decode-tokens") { Description = "Tokens generated in the decode measurement.", DefaultValueFactory = _ => 64 };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads for the model and the GEMM baseline (0 = one per core).", DefaultValueFactory = _ => 0 };
        var command = new Command("engine", "Model load, RSS, prefill and decode speed beside file reads, memcpy bandwidth and a plain GEMM measured in the same run.")
        {
            json, model, quantize, graph, compareOnnx, prefill, decodePrompt, decodeTokens, threads,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var given = parse.GetValue(model)?.FullName;
            var folder = given ?? DemoModel.EnsureCreated(progress: step => BenchOutput.Progress($"generating the demo model (first run only): {step}"));
            var lengths = new List<int>();
            foreach (var item in parse.GetValue(prefill)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (!int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < 1)
                {
                    Console.Error.WriteLine($"error: --prefill-tokens: '{item}' is not a positive integer.");
                    return 2;
                }
                lengths.Add(n);
            }
            var settings = new Settings(folder, given is null ? "lmcache-demo-llama" : null,
                parse.GetValue(quantize) switch { "int8" => WeightQuantization.Int8, "int4" => WeightQuantization.Int4, _ => WeightQuantization.None },
                parse.GetValue(graph) switch { "onnx" => ModelGraphSource.OnnxExport, "built" => ModelGraphSource.Built, _ => ModelGraphSource.Auto },
                parse.GetValue(compareOnnx), lengths, Math.Max(1, parse.GetValue(decodePrompt)), Math.Max(2, parse.GetValue(decodeTokens)), Math.Max(0, parse.GetValue(threads)));
            var output = new BenchOutput();
            try
            {
                await RunAsync(settings, output, cancellationToken);
            }
            catch (Exception ex) when (ex is InvalidDataException or FileNotFoundException or NotSupportedException or ArgumentException)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
            output.Print(parse.GetValue(json));
            return 0;
        });
        return command;
    }

    private sealed record Settings(string Folder, string? ServedName, WeightQuantization Quantization, ModelGraphSource Graph, bool CompareOnnx, IReadOnlyList<int> PrefillLengths,
        int DecodePrompt, int DecodeTokens, int Threads);

    private static async Task RunAsync(Settings settings, BenchOutput output, CancellationToken cancellationToken)
    {
        var hasExport = File.Exists(Path.Combine(settings.Folder, "onnx", "model.onnx")) || File.Exists(Path.Combine(settings.Folder, "model.onnx"));
        var inventory = WeightInventory.Scan(settings.Folder);
        if (settings.CompareOnnx && (!hasExport || inventory.Files.Count == 0))
        {
            throw new ArgumentException($"--compare-onnx needs a folder with both onnx/model.onnx and safetensors weights; '{settings.Folder}' has {(hasExport ? "no safetensors" : "no ONNX export")}.");
        }
        // The graph measured: built from safetensors when asked to compare or quantize, or when there is no export.
        var source = settings.Graph != ModelGraphSource.Auto ? settings.Graph
            : settings.CompareOnnx || settings.Quantization != WeightQuantization.None || !hasExport ? ModelGraphSource.Built : ModelGraphSource.OnnxExport;
        if (settings.CompareOnnx && source != ModelGraphSource.Built)
        {
            throw new ArgumentException("--compare-onnx measures the built graph against the export; leave --graph at auto or built.");
        }
        var threads = settings.Threads == 0 ? Environment.ProcessorCount : settings.Threads;
        output.Add("folder", settings.Folder);
        output.Add("graph_source", source == ModelGraphSource.Built ? "built" : "onnx_export");
        output.Add("quantization", settings.Quantization.ToString().ToLowerInvariant());
        output.Add("cores", Environment.ProcessorCount);
        output.Add("threads", threads);
        output.Add("cpu_features", string.Join(' ', SimdPaths.CpuFeatures()));
        output.Add("load_average", ReadLoadAverage());

        // (1) The baseline of load: read the files the load reads, once, sequentially.
        var files = source == ModelGraphSource.Built ? TopLevelFiles(settings.Folder) : [.. TopLevelFiles(settings.Folder), .. ExportFiles(settings.Folder)];
        var fileBytes = files.Sum(f => new FileInfo(f).Length);
        BenchOutput.Progress($"reading the {files.Count} files the load reads ({fileBytes / 1e9:0.###} GB), twice");
        var firstRead = ReadAll(files);
        var read = ReadAll(files);
        output.Add("files_bytes", fileBytes, "B");
        output.Add("read_first_pass_s", firstRead, "s");
        output.Add("read_s", read, "s");
        output.Add("read_gbps", fileBytes / read / 1e9, "GB/s");
        output.Add("page_cache", "warm for read_s and load_s (the untimed-for-targets first pass brings the files in)");

        // (2) Load.
        var rssBefore = ProcessMemory.Read();
        BenchOutput.Progress($"loading ({source}, quantization {settings.Quantization})");
        var watch = Stopwatch.StartNew();
        using var model = LanguageModel.Load(settings.Folder, new ModelLoadOptions
        {
            ServedName = settings.ServedName,
            IntraOpThreads = settings.Threads,
            Quantization = settings.Quantization,
            GraphSource = source,
            Progress = line => BenchOutput.Progress($"load: {line}"),
        });
        var load = watch.Elapsed.TotalSeconds;
        var rssLoaded = ProcessMemory.Read();
        output.Add("model", model.Name);
        output.Add("load_s", load, "s");
        output.Add("load_vs_read", load / read, "x");
        output.Add("rss_before_load_bytes", rssBefore.Rss, "B");
        output.Add("rss_after_load_bytes", rssLoaded.Rss, "B");
        output.Add("hwm_after_load_bytes", rssLoaded.HighWaterMark, "B");

        if (inventory.Files.Count == 0)
        {
            // An export without safetensors (the random demo model): its ONNX files are fp32 weights; take the
            // embedding and an untied LM head as vocab × hidden each and the rest as linear layers.
            var exportBytes = ExportFiles(settings.Folder).Sum(f => new FileInfo(f).Length);
            var table = (long)model.Config.VocabSize * model.Config.HiddenSize;
            inventory = inventory with { Embedding = table, LmHead = table, Linear = Math.Max(0, (exportBytes / 4) - (2 * table)), Approximate = true };
        }
        var weights = inventory.ComputeForm(settings.Quantization, model.Config.VocabSize, model.Config.HiddenSize);
        output.Add("parameters", inventory.Parameters);
        output.Add("weights_compute_bytes", weights.ComputeBytes, "B");
        output.Add("weights_read_per_token_bytes", weights.ReadPerToken, "B");
        output.Add("weights_accounting", (settings.Quantization == WeightQuantization.None
            ? "fp32: 4 bytes per stored parameter (tied embeddings once)"
            : settings.Quantization == WeightQuantization.Int8
                ? $"linear layers and the LM head at 1 byte per weight + one fp32 scale per {QuantBlock}; embeddings and norms fp32"
                : $"linear layers at 4 bits + one fp32 scale and a 4-bit zero point per {QuantBlock}, the LM head at 8 bits + scales; embeddings and norms fp32")
            + (inventory.Approximate ? "; approximate: no safetensors, sizes from the ONNX files" : ""));

        // (3) Prefill and decode through the serving engine.
        var lengths = settings.PrefillLengths.Where(n => n < model.ContextLength).Distinct().ToList();
        if (lengths.Count < settings.PrefillLengths.Count)
        {
            output.Add("prefill_capped_by_context", model.ContextLength);
        }
        var decodePrompt = Math.Min(settings.DecodePrompt, model.ContextLength - settings.DecodeTokens - 1);
        var built = await MeasureAsync(model, lengths, decodePrompt, settings.DecodeTokens, cancellationToken);
        var kvMax = (long)(lengths.Count == 0 ? decodePrompt + settings.DecodeTokens : Math.Max(lengths.Max(), decodePrompt + settings.DecodeTokens)) * model.Decoder.Layout.BytesPerToken;
        var rssRuns = ProcessMemory.Read();
        output.Add("rss_after_runs_bytes", rssRuns.Rss, "B");
        output.Add("hwm_after_runs_bytes", rssRuns.HighWaterMark, "B");
        output.Add("kv_bytes_longest", kvMax, "B");
        output.Add("prefill_step_tokens", new InferenceEngineOptions().PrefillStepTokens);

        // --compare-onnx: the export of the same weights, measured in alternating rounds (built, export, built,
        // export) and the best of each kept, so a change of the box's load between the two halves does not decide.
        LanguageModel? export = null;
        Speeds? onnx = null;
        if (settings.CompareOnnx)
        {
            BenchOutput.Progress("loading the optimum export for --compare-onnx");
            watch.Restart();
            export = LanguageModel.Load(settings.Folder, new ModelLoadOptions { ServedName = settings.ServedName, IntraOpThreads = settings.Threads, GraphSource = ModelGraphSource.OnnxExport });
            output.Add("onnx_load_s", watch.Elapsed.TotalSeconds, "s");
            onnx = await MeasureAsync(export, lengths, decodePrompt, settings.DecodeTokens, cancellationToken);
            built = Speeds.Best(built, await MeasureAsync(model, lengths, decodePrompt, settings.DecodeTokens, cancellationToken));
            onnx = Speeds.Best(onnx, await MeasureAsync(export, lengths, decodePrompt, settings.DecodeTokens, cancellationToken));
            output.Add("compare_rounds", 2);
        }
        using var exportModel = export;

        // (4) Physical baselines, after the memory readings.
        BenchOutput.Progress("memcpy baseline");
        var memcpyOne = MemcpyBandwidth(1);
        var memcpyAll = MemcpyBandwidth(Environment.ProcessorCount);
        output.Add("memcpy_1_thread_gbps", memcpyOne / 1e9, "GB/s");
        output.Add("memcpy_all_cores_gbps", memcpyAll / 1e9, "GB/s");
        var (m, k, n) = (512, model.Config.HiddenSize, inventory.LargestLinearRows(model.Config.HiddenSize));
        BenchOutput.Progress($"GEMM baseline {m}x{k} @ {k}x{n}");
        var gemm = GemmFlops(m, k, n, settings.Threads);
        output.Add("gemm_shape", $"{m}x{k} @ {k}x{n} fp32, ONNX Runtime MatMul, {threads} threads");
        output.Add("gemm_gflops", gemm / 1e9, "GFLOP/s");

        // Results beside their bounds.
        foreach (var (tokens, seconds) in built.Prefill)
        {
            var flops = inventory.PrefillFlops(tokens, model.Config, new InferenceEngineOptions().PrefillStepTokens);
            output.Add($"prefill_{tokens}_s", seconds, "s");
            output.Add($"prefill_{tokens}_tokens_per_s", tokens / seconds, "tok/s");
            output.Add($"prefill_{tokens}_gflops", flops / seconds / 1e9, "GFLOP/s");
            output.Add($"prefill_{tokens}_vs_gemm", flops / seconds / gemm, "x");
            output.Add($"target_prefill_{tokens}_ge_0.4_gemm", flops / seconds >= 0.4 * gemm ? "met" : "missed");
        }
        output.Add("decode_prompt_tokens", decodePrompt);
        output.Add("decode_tokens", settings.DecodeTokens);
        output.Add("decode_tokens_per_s", built.DecodeTokensPerSecond, "tok/s");
        var decodeBound = memcpyAll / weights.ReadPerToken;
        output.Add("decode_memcpy_bound_tokens_per_s", decodeBound, "tok/s");
        output.Add("decode_vs_memcpy_bound", built.DecodeTokensPerSecond / decodeBound, "x");
        output.Add("target_decode_ge_0.5_memcpy_bound", built.DecodeTokensPerSecond >= 0.5 * decodeBound ? "met" : "missed");
        // The same against one thread's copy bandwidth: on a shared box the all-cores copy can fall below it.
        output.Add("decode_vs_memcpy_1_thread_bound", built.DecodeTokensPerSecond / (memcpyOne / weights.ReadPerToken), "x");
        var memoryBound = weights.ComputeBytes + kvMax;
        output.Add("hwm_vs_weights_plus_kv", rssRuns.HighWaterMark / (double)memoryBound, "x");
        output.Add("rss_after_load_vs_weights", rssLoaded.Rss / (double)weights.ComputeBytes, "x");
        output.Add("target_rss_le_1.25_weights_plus_kv", rssRuns.HighWaterMark <= 1.25 * memoryBound ? "met" : "missed");
        output.Add("target_load_le_2_read", load <= 2 * read ? "met" : "missed");

        if (onnx is not null)
        {
            foreach (var ((tokens, builtSeconds), (_, onnxSeconds)) in built.Prefill.Zip(onnx.Prefill))
            {
                output.Add($"onnx_prefill_{tokens}_tokens_per_s", tokens / onnxSeconds, "tok/s");
                output.Add($"built_vs_onnx_prefill_{tokens}", onnxSeconds / builtSeconds, "x");
                output.Add($"target_built_ge_onnx_prefill_{tokens}", builtSeconds <= onnxSeconds ? "met" : "missed");
            }
            output.Add("onnx_decode_tokens_per_s", onnx.DecodeTokensPerSecond, "tok/s");
            output.Add("built_vs_onnx_decode", built.DecodeTokensPerSecond / onnx.DecodeTokensPerSecond, "x");
            output.Add("target_built_ge_onnx_decode", built.DecodeTokensPerSecond >= onnx.DecodeTokensPerSecond ? "met" : "missed");
        }
    }

    private sealed record Speeds(IReadOnlyList<(int Tokens, double Seconds)> Prefill, double DecodeTokensPerSecond)
    {
        /// <summary>The faster of two measurements of the same lengths, per length and for decode.</summary>
        public static Speeds Best(Speeds a, Speeds b) =>
            new([.. a.Prefill.Zip(b.Prefill, (x, y) => (x.Tokens, Math.Min(x.Seconds, y.Seconds)))], Math.Max(a.DecodeTokensPerSecond, b.DecodeTokensPerSecond));
    }

    /// <summary>Prefill of each length (a fresh sequence each, best of 2 below 1,024 tokens) and decode of <paramref name="decodeTokens"/> after a prompt.</summary>
    private static async Task<Speeds> MeasureAsync(LanguageModel model, IReadOnlyList<int> lengths, int decodePrompt, int decodeTokens, CancellationToken cancellationToken)
    {
        await using var engine = new InferenceEngine(model, null);
        async Task<GenerationStats> RunAsync(int promptTokens, int maxTokens, int seed) =>
            (await engine.GenerateToEndAsync(new GenerationRequest { PromptTokens = TtftBench.MakePrompt(model, promptTokens, seed), MaxTokens = maxTokens, IgnoreEos = true },
                cancellationToken)).Completed.Stats;

        BenchOutput.Progress("warm-up (JIT, ONNX Runtime's first-run allocations)");
        await RunAsync(Math.Min(64, model.ContextLength - 3), 2, seed: 1);
        var prefill = new List<(int, double)>();
        foreach (var tokens in lengths)
        {
            var best = double.MaxValue;
            for (var i = 0; i < (tokens < 1024 ? 2 : 1); i++)
            {
                BenchOutput.Progress($"prefill {tokens} tokens ({i + 1})");
                best = Math.Min(best, (await RunAsync(tokens, 1, seed: 100 + tokens + i)).PrefillSeconds);
            }
            prefill.Add((tokens, best));
        }
        BenchOutput.Progress($"decode {decodeTokens} tokens after {decodePrompt}");
        var decode = await RunAsync(decodePrompt, decodeTokens, seed: 7);
        // The first token comes from the prefill; the other decodeTokens - 1 are decode steps.
        var decodeSeconds = decode.TotalSeconds - decode.TimeToFirstTokenSeconds;
        return new Speeds(prefill, (decode.CompletionTokens - 1) / decodeSeconds);
    }

    /// <summary>Seconds to read <paramref name="files"/> once, sequentially, with 1 MiB FileStream reads.</summary>
    private static double ReadAll(IReadOnlyList<string> files)
    {
        var buffer = GC.AllocateUninitializedArray<byte>(1 << 20);
        var watch = Stopwatch.StartNew();
        foreach (var file in files)
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan);
            while (stream.Read(buffer) > 0)
            {
            }
        }
        return watch.Elapsed.TotalSeconds;
    }

    private static List<string> TopLevelFiles(string folder) => [.. Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal)];

    private static List<string> ExportFiles(string folder) =>
        Directory.Exists(Path.Combine(folder, "onnx")) ? [.. Directory.EnumerateFiles(Path.Combine(folder, "onnx")).Order(StringComparer.Ordinal)] : [];

    /// <summary>
    /// Bytes copied per second between two 256 MiB buffers (far beyond the last-level cache), best of 5, by
    /// <paramref name="threads"/> threads each copying its own slice: one thread shows a core's bandwidth, all cores
    /// the machine's — the one decode, running on all cores, can use.
    /// </summary>
    private static double MemcpyBandwidth(int threads)
    {
        const int Bytes = 256 << 20;
        var source = GC.AllocateUninitializedArray<byte>(Bytes);
        var destination = GC.AllocateUninitializedArray<byte>(Bytes);
        source.AsSpan().Fill(1);
        destination.AsSpan().Clear();   // touch every page before timing
        var slice = Bytes / threads;
        var best = double.MaxValue;
        for (var pass = 0; pass < 5; pass++)
        {
            var watch = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                source.AsSpan(t * slice, slice).CopyTo(destination.AsSpan(t * slice, slice)));
            best = Math.Min(best, watch.Elapsed.TotalSeconds);
        }
        return (double)slice * threads / best;
    }

    /// <summary>FLOP/s of one fp32 ONNX Runtime MatMul [m, k] × [k, n] (weights as an initializer, as in the model), best of 3 after a warm-up.</summary>
    private static double GemmFlops(int m, int k, int n, int intraOpThreads)
    {
        var random = new Random(5);
        var weights = new float[(long)k * n];
        for (var i = 0; i < weights.Length; i++)
        {
            weights[i] = (float)(random.NextDouble() - 0.5);
        }
        var graph = new GraphProto { Name = "gemm" };
        graph.Input.Add(ValueInfo("a", m, k));
        graph.Output.Add(ValueInfo("y", m, n));
        var b = new TensorProto { Name = "b", DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes<float>(weights)) };
        b.Dims.Add(k);
        b.Dims.Add(n);
        graph.Initializer.Add(b);
        graph.Node.Add(new NodeProto { OpType = "MatMul", Input = { "a", "b" }, Output = { "y" } });
        var proto = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 17 } } };
        using var options = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            IntraOpNumThreads = intraOpThreads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
        };
        using var session = new InferenceSession(proto.ToByteArray(), options);
        var a = new float[(long)m * k];
        for (var i = 0; i < a.Length; i++)
        {
            a[i] = (float)(random.NextDouble() - 0.5);
        }
        using var input = OrtValue.CreateTensorValueFromMemory(a, [m, k]);
        using var run = new RunOptions();
        var best = double.MaxValue;
        for (var pass = 0; pass < 4; pass++)
        {
            var watch = Stopwatch.StartNew();
            using var results = session.Run(run, ["a"], [input], ["y"]);
            var elapsed = watch.Elapsed.TotalSeconds;
            if (pass > 0)
            {
                best = Math.Min(best, elapsed);
            }
        }
        return 2.0 * m * k * n / best;

        static ValueInfoProto ValueInfo(string name, long rows, long columns) => new()
        {
            Name = name,
            Type = new TypeProto
            {
                TensorType = new TypeProto.Types.Tensor
                {
                    ElemType = (int)TensorProto.Types.DataType.Float,
                    Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = rows }, new TensorShapeProto.Types.Dimension { DimValue = columns } } },
                },
            },
        };
    }

    private static string ReadLoadAverage()
    {
        try
        {
            return File.ReadAllText("/proc/loadavg").Trim();
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    /// <summary>VmRSS and VmHWM of this process from /proc/self/status, in bytes (Environment.WorkingSet elsewhere).</summary>
    private readonly record struct ProcessMemory(long Rss, long HighWaterMark)
    {
        public static ProcessMemory Read()
        {
            long rss = 0, hwm = 0;
            if (File.Exists("/proc/self/status"))
            {
                foreach (var line in File.ReadLines("/proc/self/status"))
                {
                    if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    {
                        rss = Kilobytes(line);
                    }
                    else if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    {
                        hwm = Kilobytes(line);
                    }
                }
                return new ProcessMemory(rss, hwm);
            }
            return new ProcessMemory(Environment.WorkingSet, Environment.WorkingSet);

            static long Kilobytes(string line) =>
                long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), NumberStyles.None, CultureInfo.InvariantCulture) * 1024;
        }
    }

    /// <summary>
    /// The weights of a folder by role, from the safetensors headers (names, dtypes and shapes only): embeddings,
    /// the LM head, 2-D linear weights of the layers, and the rest (norms, biases).
    /// </summary>
    private sealed record WeightInventory(IReadOnlyList<string> Files, long Embedding, long LmHead, long Linear, long Other, long LargestLinearOutput)
    {
        /// <summary>True when the sizes are estimated from ONNX file sizes (no safetensors in the folder).</summary>
        public bool Approximate { get; init; }

        public long Parameters => Embedding + LmHead + Linear + Other;

        public static WeightInventory Scan(string folder)
        {
            var files = Directory.EnumerateFiles(folder, "*.safetensors").Order(StringComparer.Ordinal).ToList();
            long embedding = 0, lmHead = 0, linear = 0, other = 0, largest = 0;
            var prefix = new byte[8];
            foreach (var file in files)
            {
                using var stream = File.OpenRead(file);
                stream.ReadExactly(prefix);
                var length = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
                if (length > 100_000_000 || (long)length > stream.Length - 8)
                {
                    throw new InvalidDataException($"{file}: the header length {length} is not plausible.");
                }
                var header = new byte[length];
                stream.ReadExactly(header);
                using var document = JsonDocument.Parse(header);
                foreach (var tensor in document.RootElement.EnumerateObject())
                {
                    if (tensor.Name == "__metadata__")
                    {
                        continue;
                    }
                    var shape = tensor.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
                    var elements = shape.Aggregate(1L, (a, b) => a * b);
                    if (tensor.Name.EndsWith("embed_tokens.weight", StringComparison.Ordinal))
                    {
                        embedding += elements;
                    }
                    else if (tensor.Name.StartsWith("lm_head.", StringComparison.Ordinal))
                    {
                        lmHead += elements;
                    }
                    else if (shape.Length == 2)
                    {
                        linear += elements;
                        largest = Math.Max(largest, shape[0]);
                    }
                    else
                    {
                        other += elements;
                    }
                }
            }
            return new WeightInventory(files, embedding, lmHead, linear, other, largest);
        }

        /// <summary>The widest linear output (rows of an HF [out, in] weight): the MLP's inner size in a Llama.</summary>
        public int LargestLinearRows(int hidden) => (int)Math.Max(hidden, LargestLinearOutput == 0 ? 4L * hidden : LargestLinearOutput);

        /// <summary>Bytes of the weights as the graph computes with them, and bytes read per decoded token.</summary>
        public (long ComputeBytes, long ReadPerToken) ComputeForm(WeightQuantization quantization, int vocab, int hidden)
        {
            // The LM head is a vocab × hidden matrix read every token, whether its own tensor or the tied embedding.
            var head = LmHead > 0 ? LmHead : (long)vocab * hidden;
            if (quantization == WeightQuantization.None)
            {
                return (4 * Parameters, 4 * (Linear + head + Other));
            }
            // MatMulNBits blocks: 8 or 4 bits per weight + one fp32 scale per block; int4 adds a 4-bit zero point per
            // block, and keeps the output head at 8 bits (the built graph's choice: its error lands on the logits).
            const double Int8PerWeight = 1.0 + (4.0 / QuantBlock);
            const double Int4PerWeight = 0.5 + (4.0 / QuantBlock) + (0.5 / QuantBlock);
            var quantized = quantization == WeightQuantization.Int8
                ? (long)((Linear + head) * Int8PerWeight)
                : (long)((Linear * Int4PerWeight) + (head * Int8PerWeight));
            return ((4 * (Embedding + Other)) + quantized, quantized + (4 * Other));
        }

        /// <summary>
        /// Useful FLOPs of a prefill of <paramref name="tokens"/>: 2 per weight per token in the layers' linear maps,
        /// the causal half of attention (QKᵀ and PV), and the LM head once per engine step (last position only).
        /// </summary>
        public double PrefillFlops(int tokens, ModelConfig config, int step)
        {
            var linear = 2.0 * tokens * Linear;
            var attention = 4.0 * config.NumLayers * config.NumAttentionHeads * config.HeadDim * (tokens * (tokens + 1.0) / 2);
            var steps = (tokens + step - 1) / step;
            var head = 2.0 * config.VocabSize * config.HiddenSize * steps;
            return linear + attention + head;
        }
    }
}
