using System.CommandLine;
using System.Diagnostics;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Hosting;
using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using Microsoft.Extensions.Logging;

namespace LMCache.Bench;

/// <summary>
/// <c>lmcache bench ttft</c>: time to first token of one long prompt, cold (no cache) beside warm from the CPU tier,
/// from the disk tier (a fresh engine whose CPU tier is empty) and, with <c>--remote-url</c>, from the remote tier,
/// plus the floor: the prefill of the uncached tail alone (<c>tail_prefill_s</c>) and a plain copy of the cached KV
/// bytes (<c>kv_copy_s</c>), all measured in the same run on the in-process engine.
/// </summary>
internal static class TtftBench
{
    public static Command Create()
    {
        var json = BenchOptions.Json();
        var model = new Option<DirectoryInfo?>("--model") { Description = "Model folder (default: the built-in model named by --demo-model)." };
        var demoModel = BenchOptions.DemoModel();
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "Prompt length in tokens.", DefaultValueFactory = _ => 4000 };
        var remoteUrl = new Option<string?>("--remote-url") { Description = "Also measure warm TTFT from this remote (e.g. redis://127.0.0.1:6379)." };
        var repeat = new Option<int>("--repeat") { Description = "Measurements per case; the best is reported.", DefaultValueFactory = _ => 2 };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads (0 = one per core).", DefaultValueFactory = _ => 0 };
        var command = new Command("ttft", "Time to first token of a long prompt: cold versus warm from CPU, disk and remote.")
        {
            json, model, demoModel, promptTokens, remoteUrl, repeat, threads,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var given = parse.GetValue(model)?.FullName;
            var builtIn = BuiltInModels.Parse(parse.GetValue(demoModel)!);
            var folder = given ?? BuiltInModels.Resolve(builtIn, step => BenchOutput.Progress($"generating the demo model (first run only): {step}"));
            var output = new BenchOutput();
            try
            {
                await RunAsync(folder, given is null ? BuiltInModels.NameOf(builtIn) : null, Math.Max(2, parse.GetValue(promptTokens)), parse.GetValue(remoteUrl), Math.Max(1, parse.GetValue(repeat)),
                    parse.GetValue(threads), output, cancellationToken);
            }
            catch (LMCacheConfigurationException ex)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
            output.Print(parse.GetValue(json));
            return 0;
        });
        return command;
    }

    private static async Task RunAsync(string folder, string? servedName, int promptTokens, string? remoteUrl, int repeat, int threads, BenchOutput output, CancellationToken cancellationToken)
    {
        using var model = LanguageModel.Load(folder, servedName, threads);
        if (promptTokens >= model.ContextLength)
        {
            throw new LMCacheConfigurationException($"--prompt-tokens {promptTokens} does not fit the model's context of {model.ContextLength} tokens.");
        }
        var layout = model.Decoder.Layout;
        var prompt = MakePrompt(model, promptTokens, seed: 11);
        using var loggerFactory = ConsoleLogging.CreateLoggerFactory(LogLevel.Warning);
        var scratch = Path.Combine(Path.GetTempPath(), $"lmcache-bench-ttft-{Environment.ProcessId}");
        output.Add("model", model.Name);
        output.Add("prompt_tokens", promptTokens);
        output.Add("threads", threads == 0 ? Environment.ProcessorCount : threads);

        // The composition root that `lmcache serve` ships, without its HTTP server: the same model, cache engine
        // (built-in connectors and serdes) and inference engine.
        LMCacheHostOptions Options(bool disk, string? remote) => new()
        {
            Model = model,
            Server = null,
            Cache = new LMCacheEngineOptions
            {
                ChunkSize = 256,
                MaxLocalCpuSizeGib = 2,
                LocalDisk = disk ? scratch : null,
                MaxLocalDiskSizeGib = disk ? 4 : 0,
                RemoteUrl = remote,
            },
        };

        async Task<GenerationStats> TtftAsync(InferenceEngine engine, int[] tokens, bool bypass = false) =>
            (await engine.GenerateToEndAsync(new GenerationRequest { PromptTokens = tokens, MaxTokens = 1, IgnoreEos = true, BypassCache = bypass }, cancellationToken)).Completed.Stats;

        try
        {
            // Warm-up: JIT and ONNX Runtime's first-run allocations, on a different prompt.
            BenchOutput.Progress("warm-up");
            await using (var plain = new InferenceEngine(model, null))
            {
                await TtftAsync(plain, MakePrompt(model, Math.Min(512, promptTokens), seed: 3));
                var cold = double.MaxValue;
                for (var i = 0; i < repeat; i++)
                {
                    BenchOutput.Progress($"cold {i + 1}/{repeat}");
                    cold = Math.Min(cold, (await TtftAsync(plain, prompt)).TimeToFirstTokenSeconds);
                }
                output.Add("ttft_cold_s", cold, "s");

                // CPU: one request stores the prompt's chunks, the next ones load them.
                GenerationStats? warmCpu = null;
                await using (var host = await LMCacheHost.StartAsync(Options(disk: false, null), loggerFactory, cancellationToken))
                {
                    var engine = host.Inference;
                    await TtftAsync(engine, prompt);
                    for (var i = 0; i < repeat; i++)
                    {
                        BenchOutput.Progress($"warm from CPU {i + 1}/{repeat}");
                        var s = await TtftAsync(engine, prompt);
                        if (warmCpu is null || s.TimeToFirstTokenSeconds < warmCpu.TimeToFirstTokenSeconds)
                        {
                            warmCpu = s;
                        }
                    }
                }
                output.Add("ttft_warm_cpu_s", warmCpu!.TimeToFirstTokenSeconds, "s");
                output.Add("cached_tokens", warmCpu.CachedTokens);
                var kvBytes = warmCpu.CachedTokens * layout.BytesPerToken;
                output.Add("kv_bytes", kvBytes, "B");
                output.Add("tail_prefill_s", warmCpu.PrefillSeconds, "s");
                output.Add("retrieve_cpu_s", warmCpu.RetrieveSeconds, "s");
                var copy = MeasureCopy(kvBytes);
                output.Add("kv_copy_s", copy, "s");

                // Disk: store through one engine, then measure fresh engines whose CPU tier starts empty.
                var warmDisk = await MeasureFreshAsync(Options(disk: true, null), loggerFactory, prompt, repeat, "disk", TtftAsync, cancellationToken);
                output.Add("ttft_warm_disk_s", warmDisk, "s");
                if (remoteUrl is not null)
                {
                    var warmRemote = await MeasureFreshAsync(Options(disk: false, remoteUrl), loggerFactory, prompt, repeat, "remote", TtftAsync, cancellationToken);
                    output.Add("ttft_warm_remote_s", warmRemote, "s");
                    output.Add("speedup_remote", cold / warmRemote, "x");
                }
                output.Add("speedup_cpu", cold / warmCpu.TimeToFirstTokenSeconds, "x");
                output.Add("speedup_disk", cold / warmDisk, "x");
                output.Add("warm_cpu_floor_s", warmCpu.PrefillSeconds + copy, "s");
                output.Add("target_warm_cpu_le_0.1_cold", warmCpu.TimeToFirstTokenSeconds <= 0.1 * cold ? "met" : "missed");
                output.Add("target_warm_cpu_le_2x_floor", warmCpu.TimeToFirstTokenSeconds <= 2 * (warmCpu.PrefillSeconds + copy) ? "met" : "missed");
                output.Add("target_warm_disk_le_0.25_cold", warmDisk <= 0.25 * cold ? "met" : "missed");
            }
        }
        finally
        {
            if (Directory.Exists(scratch))
            {
                Directory.Delete(scratch, recursive: true);
            }
        }
    }

    private static async Task<double> MeasureFreshAsync(LMCacheHostOptions options, ILoggerFactory loggerFactory, int[] prompt, int repeat, string tier,
        Func<InferenceEngine, int[], bool, Task<GenerationStats>> ttft, CancellationToken cancellationToken)
    {
        await using (var host = await LMCacheHost.StartAsync(options, loggerFactory, cancellationToken))
        {
            BenchOutput.Progress($"storing the prompt for the {tier} tier");
            await ttft(host.Inference, prompt, false);
            await host.Inference.WhenIdleAsync(cancellationToken);
            await host.Cache.FlushAsync(cancellationToken);
        }
        var best = double.MaxValue;
        for (var i = 0; i < repeat; i++)
        {
            BenchOutput.Progress($"warm from {tier} {i + 1}/{repeat} (fresh engine, empty CPU tier)");
            await using var host = await LMCacheHost.StartAsync(options, loggerFactory, cancellationToken);
            var stats = await ttft(host.Inference, prompt, false);
            if (stats.CachedTokens == 0)
            {
                BenchOutput.Progress($"warning: nothing was loaded from the {tier} tier");
            }
            best = Math.Min(best, stats.TimeToFirstTokenSeconds);
        }
        return best;
    }

    /// <summary>Deterministic prompt of exactly <paramref name="tokens"/> ids, avoiding special and EOS tokens.</summary>
    internal static int[] MakePrompt(LanguageModel model, int tokens, int seed)
    {
        var random = new Random(seed);
        var limit = Math.Min(model.Decoder.VocabSize, model.Tokenizer.VocabularySize);
        var prompt = new int[tokens];
        for (var i = 0; i < tokens; i++)
        {
            int id;
            do
            {
                id = random.Next(0, limit);
            }
            while (model.Tokenizer.IsSpecial(id) || model.EosTokenIds.Contains(id));
            prompt[i] = id;
        }
        return prompt;
    }

    /// <summary>Best of 5 plain copies of <paramref name="bytes"/> between two buffers: the cost of moving the KV once.</summary>
    private static double MeasureCopy(long bytes)
    {
        if (bytes == 0)
        {
            return 0;
        }
        var source = GC.AllocateUninitializedArray<byte>((int)Math.Min(bytes, int.MaxValue));
        var destination = GC.AllocateUninitializedArray<byte>(source.Length);
        Random.Shared.NextBytes(source);
        var best = double.MaxValue;
        for (var i = 0; i < 5; i++)
        {
            var start = Stopwatch.GetTimestamp();
            source.AsSpan().CopyTo(destination);
            best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        return best;
    }
}
