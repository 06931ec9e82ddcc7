using System.Runtime.InteropServices;
using LMCache.Controller.Worker;
using LMCache.Core.Configuration;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Engine.Adapters;
using Microsoft.Extensions.Logging;

namespace LMCache.Hosting;

/// <summary>
/// In-process demo engine instances for the controller's dashboard (<c>lmcache controller --demo-instances N</c>):
/// each is a small cache engine (4 layers, 4 KV heads of 64, bf16: 1 MiB a chunk; 64 chunks of CPU tier) with a
/// controller worker registered at the controller's pull port, and every second each serves a synthetic prompt — a new
/// one or a repeat of an earlier one (a hit) — so the dashboard shows admissions, hits and evictions.
/// </summary>
public sealed class ControllerDemoInstances : IAsyncDisposable
{
    private readonly List<(LMCacheEngine Engine, ControllerWorker Worker)> _instances;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _traffic;

    private ControllerDemoInstances(List<(LMCacheEngine, ControllerWorker)> instances)
    {
        _instances = instances;
        _traffic = instances.Count > 0 ? RunTrafficAsync(_stop.Token) : Task.CompletedTask;
    }

    /// <summary>The instance ids: <c>demo-instance-1</c> … <c>demo-instance-N</c>.</summary>
    public IReadOnlyList<string> InstanceIds => [.. _instances.Select(i => i.Worker.InstanceId)];

    /// <summary>
    /// Starts <paramref name="count"/> instances whose workers register at <c>127.0.0.1:<paramref name="pullPort"/></c>,
    /// and their traffic. With <paramref name="authToken"/> (the controller's token) the workers authenticate as real
    /// ones configured with <c>extra_config.controller_auth_token</c> do.
    /// </summary>
    public static async Task<ControllerDemoInstances> StartAsync(int count, int pullPort, ILoggerFactory loggerFactory, string? authToken = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        var instances = new List<(LMCacheEngine, ControllerWorker)>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                instances.Add(await StartInstanceAsync($"demo-instance-{i + 1}", pullPort, authToken, loggerFactory).ConfigureAwait(false));
            }
        }
        catch
        {
            foreach (var (engine, worker) in instances)
            {
                await worker.DisposeAsync().ConfigureAwait(false);
                await engine.DisposeAsync().ConfigureAwait(false);
            }
            throw;
        }
        return new ControllerDemoInstances(instances);
    }

    /// <summary>Stops the traffic, then each worker (it deregisters) and its engine.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _traffic.ConfigureAwait(false);
        foreach (var (engine, worker) in _instances)
        {
            await worker.DisposeAsync().ConfigureAwait(false);
            await engine.DisposeAsync().ConfigureAwait(false);
        }
        _instances.Clear();
        _stop.Dispose();
    }

    private static async Task<(LMCacheEngine, ControllerWorker)> StartInstanceAsync(string id, int pullPort, string? authToken, ILoggerFactory loggerFactory)
    {
        var layout = new KvLayout(NumLayers: 4, NumKvHeads: 4, HeadDim: 64, DType: KvDType.BFloat16);   // 4 KiB a token, 1 MiB a chunk
        var options = new LMCacheEngineOptions { MaxLocalCpuSizeGib = 0.0625 };                         // 64 chunks
        var engine = new LMCacheEngineBuilder(options, new KeyScope("vllm", "demo/tiny", DType: layout.DType.ToKeyToken()), layout)
            .WithLoggerFactory(loggerFactory)
            .Build();
        try
        {
            var worker = ControllerWorker.Start(engine, new ControllerWorkerOptions
            {
                InstanceId = id,
                PullUrl = $"127.0.0.1:{pullPort}",
                BindHost = "127.0.0.1",
                HeartbeatDelay = TimeSpan.Zero,
                HeartbeatInterval = TimeSpan.FromSeconds(5),
                AuthToken = authToken,
            }, loggerFactory);
            return (engine, worker);
        }
        catch
        {
            await engine.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Every second each instance serves a prompt: a new one, or a repeat of an earlier one (a hit).</summary>
    private async Task RunTrafficAsync(CancellationToken cancellationToken)
    {
        var random = new Random(7);
        var prompts = new List<int[]>();
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                foreach (var (engine, _) in _instances)
                {
                    var tokens = prompts.Count > 0 && random.NextDouble() < 0.5
                        ? prompts[random.Next(prompts.Count)]
                        : [.. Enumerable.Range(random.Next(1_000_000), 256 * random.Next(1, 5))];
                    prompts.Add(tokens);
                    var kv = new HostKvCache(engine.Layout, tokens.Length);
                    var hit = await engine.RetrieveAsync(tokens, kv, cancellationToken: cancellationToken).ConfigureAwait(false);
                    FillSmooth(kv, hit.LoadedTokens, tokens.Length - hit.LoadedTokens, seed: tokens[0]);
                    engine.Store(tokens, kv, skipLeadingTokens: hit.LoadedTokens);
                }
                await Task.Delay(1000, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>
    /// Fills tokens <c>[start, start+count)</c> with finite bf16 values that vary smoothly along each channel, like a
    /// model's KV (random bits would be mostly NaN, which cachegen stores uncompressed), so <c>/compress</c> shows real ratios.
    /// </summary>
    private static void FillSmooth(HostKvCache kv, int start, int count, int seed)
    {
        var layout = kv.Layout;
        for (var layer = 0; layer < layout.NumLayers; layer++)
        {
            for (var k = 0; k < 2; k++)
            {
                var plane = MemoryMarshal.Cast<byte, ushort>(kv.Plane(layer, k));
                for (var head = 0; head < layout.NumKvHeads; head++)
                {
                    for (var token = start; token < start + count; token++)
                    {
                        var row = plane.Slice(((head * kv.CapacityTokens) + token) * layout.HeadDim, layout.HeadDim);
                        for (var d = 0; d < row.Length; d++)
                        {
                            var value = (float)(Math.Sin((token * 0.05) + (d * 0.7) + seed + layer + k) * (1 + ((d + head) % 5)));
                            row[d] = (ushort)(BitConverter.SingleToUInt32Bits(value) >> 16);
                        }
                    }
                }
            }
        }
    }
}
