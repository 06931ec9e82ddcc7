using System.CommandLine;
using System.Diagnostics;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Engine.Adapters;
using Microsoft.Extensions.Logging;

namespace LMCache.Cli.Commands;

/// <summary>
/// <c>lmcache demo</c>: store → lookup → retrieve through the tiers with a synthetic model's KV cache, printing what
/// happened and checking every byte that comes back.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var configOption = CommonOptions.Config();
        var tokensOption = new Option<int>("--prompt-tokens") { Description = "Prompt length in tokens.", DefaultValueFactory = _ => 1000 };
        var keepOption = new Option<bool>("--keep") { Description = "Keep the demo's disk folder instead of deleting it." };
        var command = new Command("demo", "Run a short end-to-end demo: store a prompt's KV chunks, look them up, retrieve them from CPU, then from disk after a restart.")
        {
            configOption, tokensOption, keepOption,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            try
            {
                return await RunAsync(parse.GetValue(configOption), parse.GetValue(tokensOption), parse.GetValue(keepOption), cancellationToken);
            }
            catch (LMCacheConfigurationException ex)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
        });
        return command;
    }

    private static async Task<int> RunAsync(FileInfo? configFile, int promptTokens, bool keep, CancellationToken cancellationToken)
    {
        // A model with the KV geometry of a small Llama (8 layers, 8 KV heads of 64, bf16): 16 KiB of KV per token, 4 MiB per 256-token chunk.
        var layout = new KvLayout(NumLayers: 8, NumKvHeads: 8, HeadDim: 64, DType: KvDType.BFloat16);
        var demoFolder = Path.Combine(Path.GetTempPath(), $"lmcache-demo-{Environment.ProcessId}");
        var loaded = CommonOptions.LoadConfiguration(configFile, quiet: true);
        var overrides = new Dictionary<string, object?>();
        if (loaded.Entries.First(e => e.Key == "local_disk").Source == ConfigSource.Default)
        {
            overrides["local_disk"] = demoFolder;
            overrides["max_local_disk_size"] = 1.0;
        }
        if (loaded.Entries.First(e => e.Key == "max_local_cpu_size").Source == ConfigSource.Default)
        {
            overrides["max_local_cpu_size"] = 0.25;
        }
        loaded = CommonOptions.LoadConfiguration(configFile, overrides);
        var options = loaded.Options;
        var scope = new KeyScope("lmcache-demo", "demo/llama-8x8x64", DType: layout.DType.ToKeyToken());
        using var loggerFactory = CommonOptions.CreateLoggerFactory(LogLevel.Warning);
        var services = Hosting.CreateServices(loggerFactory);

        var tokens = new int[promptTokens];
        var random = new Random(2024);
        for (var i = 0; i < tokens.Length; i++)
        {
            tokens[i] = random.Next(0, 128_000);
        }
        var chunkBytes = layout.BytesPerToken * options.ChunkSize;
        Console.WriteLine($"LMCache.NET demo — a synthetic model with {layout.NumLayers} layers, {layout.NumKvHeads} KV heads of {layout.HeadDim}, {layout.DType}");
        Console.WriteLine($"  chunk_size {options.ChunkSize} tokens = {chunkBytes / 1024.0 / 1024:0.##} MiB of KV per chunk; prompt of {promptTokens} tokens");
        Console.WriteLine($"  tiers: CPU {options.MaxLocalCpuSizeGib:0.###} GiB" +
            (options.LocalDisk is not null && options.MaxLocalDiskSizeGib > 0 ? $", disk {options.MaxLocalDiskSizeGib:0.###} GiB at {options.LocalDisk}" : "") +
            (options.RemoteUrl is not null ? $", remote {options.RemoteUrl} (serde {options.RemoteSerde})" : ""));
        Console.WriteLine();

        var prefill = new HostKvCache(layout, promptTokens);
        prefill.FillDeterministic(0, promptTokens, seed: 7);
        var failures = 0;
        try
        {
            await using (var engine = LMCacheEngine.Create(options, scope, layout, services))
            {
                Step(1, $"lookup before anything is stored: {await engine.LookupAsync(tokens, cancellationToken: cancellationToken)} tokens cached");

                var watch = Stopwatch.StartNew();
                var stored = engine.Store(tokens, prefill);
                Step(2, $"store: {stored.StoredChunks} chunks = {stored.StoredTokens} tokens into CPU in {watch.Elapsed.TotalMilliseconds:0.0} ms" +
                    (options.SaveUnfullChunk ? "" : $" (the last {promptTokens % options.ChunkSize} tokens are a partial chunk; save_unfull_chunk is false)"));
                watch.Restart();
                await engine.FlushAsync(cancellationToken);
                Step(3, $"disk/remote writes finished in the background ({watch.Elapsed.TotalMilliseconds:0.0} ms)");

                var hit = await engine.LookupAsync(tokens, cancellationToken: cancellationToken);
                Step(4, $"lookup: {hit} of {promptTokens} tokens cached");

                failures += await RetrieveAndCheckAsync(engine, tokens, prefill, 5, "from CPU", cancellationToken);

                var cleared = await engine.Storage.ClearAsync(["LocalCPUBackend"], cancellationToken);
                Step(6, $"cleared the CPU tier ({cleared} chunks)");
                failures += await RetrieveAndCheckAsync(engine, tokens, prefill, 7, "with CPU empty (lower tiers; hits are promoted back to CPU)", cancellationToken);

                var shared = (int[])tokens.Clone();
                for (var i = promptTokens / 2; i < shared.Length; i++)
                {
                    shared[i] = (shared[i] + 1) % 128_000;
                }
                Step(8, $"a different prompt sharing the first {promptTokens / 2} tokens: {await engine.LookupAsync(shared, cancellationToken: cancellationToken)} tokens cached (whole shared chunks)");
                Step(9, $"the same prompt under cache salt 'tenant-b': {await engine.LookupAsync(tokens, "tenant-b", cancellationToken)} tokens cached (tenants never share)");
                PrintTiers(engine);
            }

            if (options.LocalDisk is not null && options.MaxLocalDiskSizeGib > 0)
            {
                await using var restarted = LMCacheEngine.Create(options, scope, layout, services);
                var hit = await restarted.LookupAsync(tokens, cancellationToken: cancellationToken);
                Step(10, $"after a restart (new engine, same folder): {hit} tokens cached — the disk index was rebuilt from its files");
                failures += await RetrieveAndCheckAsync(restarted, tokens, prefill, 11, "after the restart", cancellationToken);
            }
        }
        finally
        {
            if (!keep && Directory.Exists(demoFolder))
            {
                Directory.Delete(demoFolder, recursive: true);
            }
        }
        Console.WriteLine();
        Console.WriteLine(failures == 0 ? "demo: every retrieved byte matched the stored KV." : $"demo: {failures} retrieve(s) returned wrong bytes.");
        return failures == 0 ? 0 : 1;
    }

    private static async Task<int> RetrieveAndCheckAsync(LMCacheEngine engine, int[] tokens, HostKvCache expected, int step, string label, CancellationToken cancellationToken)
    {
        var target = new HostKvCache(engine.Layout, tokens.Length);
        var watch = Stopwatch.StartNew();
        var result = await engine.RetrieveAsync(tokens, target, cancellationToken: cancellationToken);
        var elapsed = watch.Elapsed.TotalMilliseconds;
        var same = expected.SameTokens(target, 0, result.LoadedTokens);
        Step(step, $"retrieve {label}: {result.LoadedTokens} tokens in {elapsed:0.0} ms " +
            $"(chunks from CPU {result.Tiers.Cpu}, disk {result.Tiers.Disk}, remote {result.Tiers.Remote}); bytes {(same ? "match" : "DIFFER")}");
        return same ? 0 : 1;
    }

    private static void PrintTiers(LMCacheEngine engine)
    {
        Console.WriteLine();
        Console.WriteLine("  tier statistics:");
        foreach (var tier in engine.Storage.Backends)
        {
            Console.WriteLine($"    {tier.Statistics}");
        }
        Console.WriteLine();
    }

    private static void Step(int number, string text) => Console.WriteLine($"{number,3}. {text}");
}
