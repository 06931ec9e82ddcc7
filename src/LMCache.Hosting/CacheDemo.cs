using System.Diagnostics;
using LMCache.Core.Configuration;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Engine.Adapters;
using Microsoft.Extensions.Logging;

namespace LMCache.Hosting;

/// <summary>
/// The walk through the cache of <c>lmcache demo</c>: store → lookup → retrieve through the tiers with a synthetic
/// model's KV cache (8 layers, 8 KV heads of 64, bf16: 16 KiB a token), clear the CPU tier and retrieve from the lower
/// tiers, show prefix sharing and cache-salt isolation, then restart the engine over the same disk folder — checking
/// every byte that comes back and printing each step to a writer.
/// </summary>
public static class CacheDemo
{
    /// <summary>
    /// Runs the demo over the configuration loaded from <paramref name="configFile"/> (or <c>LMCACHE_CONFIG_FILE</c>)
    /// and the <c>LMCACHE_*</c> environment; where it leaves <c>local_disk</c> or <c>max_local_cpu_size</c> at their
    /// defaults, the demo uses a 1 GiB disk tier in a temporary folder (deleted at the end unless
    /// <paramref name="keepFolder"/>) and a 0.25 GiB CPU tier.
    /// </summary>
    /// <returns>The number of retrieves that returned bytes different from the stored KV (0 on success).</returns>
    /// <exception cref="Core.Diagnostics.LMCacheConfigurationException">The configuration is invalid.</exception>
    public static async Task<int> RunAsync(string? configFile, int promptTokens, bool keepFolder, TextWriter output, ILoggerFactory loggerFactory, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(promptTokens);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        // A model with the KV geometry of a small Llama (8 layers, 8 KV heads of 64, bf16): 16 KiB of KV per token, 4 MiB per 256-token chunk.
        var layout = new KvLayout(NumLayers: 8, NumKvHeads: 8, HeadDim: 64, DType: KvDType.BFloat16);
        var demoFolder = Path.Combine(Path.GetTempPath(), $"lmcache-demo-{Environment.ProcessId}");
        var loaded = LMCacheConfigLoader.LoadFromProcess(configFile);
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
        loaded = LMCacheConfigLoader.LoadFromProcess(configFile, overrides);
        var logger = loggerFactory.CreateLogger(typeof(CacheDemo));
        foreach (var warning in loaded.Warnings)
        {
            HostingLog.ConfigurationWarning(logger, warning);
        }
        var options = loaded.Options;
        var scope = new KeyScope("lmcache-demo", "demo/llama-8x8x64", DType: layout.DType.ToKeyToken());
        var builder = new LMCacheEngineBuilder(options, scope, layout).WithLoggerFactory(loggerFactory);

        var tokens = new int[promptTokens];
        var random = new Random(2024);
        for (var i = 0; i < tokens.Length; i++)
        {
            tokens[i] = random.Next(0, 128_000);
        }
        var chunkBytes = layout.BytesPerToken * options.ChunkSize;
        await output.WriteLineAsync($"LMCache.NET demo — a synthetic model with {layout.NumLayers} layers, {layout.NumKvHeads} KV heads of {layout.HeadDim}, {layout.DType}").ConfigureAwait(false);
        await output.WriteLineAsync($"  chunk_size {options.ChunkSize} tokens = {chunkBytes / 1024.0 / 1024:0.##} MiB of KV per chunk; prompt of {promptTokens} tokens").ConfigureAwait(false);
        await output.WriteLineAsync($"  tiers: CPU {options.MaxLocalCpuSizeGib:0.###} GiB" +
            (options.LocalDisk is not null && options.MaxLocalDiskSizeGib > 0 ? $", disk {options.MaxLocalDiskSizeGib:0.###} GiB at {options.LocalDisk}" : "") +
            (options.RemoteUrl is not null ? $", remote {options.RemoteUrl} (serde {options.RemoteSerde})" : "")).ConfigureAwait(false);
        await output.WriteLineAsync().ConfigureAwait(false);

        var prefill = new HostKvCache(layout, promptTokens);
        prefill.FillDeterministic(0, promptTokens, seed: 7);
        var failures = 0;
        try
        {
            var engine = builder.Build();
            await using (engine.ConfigureAwait(false))
            {
                await StepAsync(output, 1, $"lookup before anything is stored: {await engine.LookupAsync(tokens, cancellationToken: cancellationToken).ConfigureAwait(false)} tokens cached").ConfigureAwait(false);

                var watch = Stopwatch.StartNew();
                var stored = engine.Store(tokens, prefill);
                await StepAsync(output, 2, $"store: {stored.StoredChunks} chunks = {stored.StoredTokens} tokens into CPU in {watch.Elapsed.TotalMilliseconds:0.0} ms" +
                    (options.SaveUnfullChunk ? "" : $" (the last {promptTokens % options.ChunkSize} tokens are a partial chunk; save_unfull_chunk is false)")).ConfigureAwait(false);
                watch.Restart();
                await engine.FlushAsync(cancellationToken).ConfigureAwait(false);
                await StepAsync(output, 3, $"disk/remote writes finished in the background ({watch.Elapsed.TotalMilliseconds:0.0} ms)").ConfigureAwait(false);

                var hit = await engine.LookupAsync(tokens, cancellationToken: cancellationToken).ConfigureAwait(false);
                await StepAsync(output, 4, $"lookup: {hit} of {promptTokens} tokens cached").ConfigureAwait(false);

                failures += await RetrieveAndCheckAsync(output, engine, tokens, prefill, 5, "from CPU", cancellationToken).ConfigureAwait(false);

                var cleared = await engine.Storage.ClearAsync(["LocalCPUBackend"], cancellationToken).ConfigureAwait(false);
                await StepAsync(output, 6, $"cleared the CPU tier ({cleared} chunks)").ConfigureAwait(false);
                failures += await RetrieveAndCheckAsync(output, engine, tokens, prefill, 7, "with CPU empty (lower tiers; hits are promoted back to CPU)", cancellationToken).ConfigureAwait(false);

                var shared = (int[])tokens.Clone();
                for (var i = promptTokens / 2; i < shared.Length; i++)
                {
                    shared[i] = (shared[i] + 1) % 128_000;
                }
                await StepAsync(output, 8, $"a different prompt sharing the first {promptTokens / 2} tokens: {await engine.LookupAsync(shared, cancellationToken: cancellationToken).ConfigureAwait(false)} tokens cached (whole shared chunks)").ConfigureAwait(false);
                await StepAsync(output, 9, $"the same prompt under cache salt 'tenant-b': {await engine.LookupAsync(tokens, "tenant-b", cancellationToken).ConfigureAwait(false)} tokens cached (tenants never share)").ConfigureAwait(false);
                await PrintTiersAsync(output, engine).ConfigureAwait(false);
            }

            if (options.LocalDisk is not null && options.MaxLocalDiskSizeGib > 0)
            {
                var restarted = builder.Build();
                await using var restartedScope = restarted.ConfigureAwait(false);
                var hit = await restarted.LookupAsync(tokens, cancellationToken: cancellationToken).ConfigureAwait(false);
                await StepAsync(output, 10, $"after a restart (new engine, same folder): {hit} tokens cached — the disk index was rebuilt from its files").ConfigureAwait(false);
                failures += await RetrieveAndCheckAsync(output, restarted, tokens, prefill, 11, "after the restart", cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            if (!keepFolder && Directory.Exists(demoFolder))
            {
                Directory.Delete(demoFolder, recursive: true);
            }
        }
        await output.WriteLineAsync().ConfigureAwait(false);
        await output.WriteLineAsync(failures == 0 ? "demo: every retrieved byte matched the stored KV." : $"demo: {failures} retrieve(s) returned wrong bytes.").ConfigureAwait(false);
        return failures;
    }

    private static async Task<int> RetrieveAndCheckAsync(TextWriter output, LMCacheEngine engine, int[] tokens, HostKvCache expected, int step, string label, CancellationToken cancellationToken)
    {
        var target = new HostKvCache(engine.Layout, tokens.Length);
        var watch = Stopwatch.StartNew();
        var result = await engine.RetrieveAsync(tokens, target, cancellationToken: cancellationToken).ConfigureAwait(false);
        var elapsed = watch.Elapsed.TotalMilliseconds;
        var same = expected.SameTokens(target, 0, result.LoadedTokens);
        await StepAsync(output, step, $"retrieve {label}: {result.LoadedTokens} tokens in {elapsed:0.0} ms " +
            $"(chunks from CPU {result.Tiers.Cpu}, disk {result.Tiers.Disk}, remote {result.Tiers.Remote}); bytes {(same ? "match" : "DIFFER")}").ConfigureAwait(false);
        return same ? 0 : 1;
    }

    private static async Task PrintTiersAsync(TextWriter output, LMCacheEngine engine)
    {
        await output.WriteLineAsync().ConfigureAwait(false);
        await output.WriteLineAsync("  tier statistics:").ConfigureAwait(false);
        foreach (var tier in engine.Storage.Backends)
        {
            await output.WriteLineAsync($"    {tier.Statistics}").ConfigureAwait(false);
        }
        await output.WriteLineAsync().ConfigureAwait(false);
    }

    private static Task StepAsync(TextWriter output, int number, string text) => output.WriteLineAsync($"{number,3}. {text}");
}
