using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using LMCache.Controller.Worker;
using LMCache.Core.Configuration;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Engine.Adapters;
using LMCache.Hosting;
using NetMQ;

[assembly: AssemblyFixture(typeof(LMCache.Controller.Tests.NetMqCleanup))]

namespace LMCache.Controller.Tests;

/// <summary>Ends NetMQ's background threads after the last test.</summary>
public sealed class NetMqCleanup : IDisposable
{
    public void Dispose() => NetMQConfig.Cleanup(block: false);
}

/// <summary>One in-process engine instance (CPU tier, host-memory KV) with its controller worker.</summary>
public sealed class Instance : IAsyncDisposable
{
    public static readonly KvLayout Layout = new(NumLayers: 2, NumKvHeads: 2, HeadDim: 8, DType: KvDType.BFloat16);   // 128 B a token

    public const int ChunkSize = 256;   // 32 KiB a chunk

    private bool _abandoned;

    private Instance(string id, LMCacheEngine engine, ControllerWorker worker)
    {
        Id = id;
        Engine = engine;
        Worker = worker;
    }

    public string Id { get; }

    public LMCacheEngine Engine { get; }

    public ControllerWorker Worker { get; }

    public static Instance Start(string id, int pullPort, int cpuChunks = 64, string? diskFolder = null, string? remoteUrl = null, string? storeLocation = null, string? authToken = null)
    {
        var options = new LMCacheEngineOptions
        {
            ChunkSize = ChunkSize,
            MaxLocalCpuSizeGib = cpuChunks * Layout.BytesPerToken * ChunkSize / (1024.0 * 1024 * 1024),
            LocalDisk = diskFolder,
            MaxLocalDiskSizeGib = diskFolder is null ? 0 : 0.01,
            RemoteUrl = remoteUrl,
            StoreLocation = storeLocation,
        };
        var engine = new LMCacheEngineBuilder(options, new KeyScope("vllm", "tiny/test-model", DType: Layout.DType.ToKeyToken()), Layout).Build();
        var worker = ControllerWorker.Start(engine, new ControllerWorkerOptions
        {
            InstanceId = id,
            PullUrl = $"127.0.0.1:{pullPort}",
            BindHost = "127.0.0.1",
            AdvertisedHost = "127.0.0.1",
            HeartbeatDelay = TimeSpan.Zero,
            HeartbeatInterval = TimeSpan.FromMilliseconds(200),
            StatsInterval = TimeSpan.FromMilliseconds(200),
            AuthToken = authToken,
        });
        return new Instance(id, engine, worker);
    }

    /// <summary>Prefills <paramref name="tokens"/> (deterministic KV) and stores it, as a served prompt would.</summary>
    public StoreResult Serve(int[] tokens, int seed = 1)
    {
        var kv = new HostKvCache(Layout, tokens.Length);
        kv.FillDeterministic(0, tokens.Length, seed);
        return Engine.Store(tokens, kv);
    }

    public async Task<RetrieveResult> RetrieveAsync(int[] tokens)
    {
        var kv = new HostKvCache(Layout, tokens.Length);
        return await Engine.RetrieveAsync(tokens, kv);
    }

    /// <summary>Stops the worker without deregistering (a crashed engine).</summary>
    public async Task AbandonWorkerAsync()
    {
        _abandoned = true;
        await Worker.AbandonAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (!_abandoned)
        {
            await Worker.DisposeAsync();
        }
        await Engine.DisposeAsync();
    }
}

/// <summary>A controller on free 127.0.0.1 ports with an HTTP client, plus instances registered with it.</summary>
public sealed class Cluster : IAsyncDisposable
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    private readonly List<Instance> _instances = [];

    private Cluster(LMCacheController controller, HttpClient http)
    {
        Controller = controller;
        Http = http;
    }

    public LMCacheController Controller { get; }

    public HttpClient Http { get; }

    public static async Task<Cluster> StartAsync(TimeSpan? workerTimeout = null, string? authToken = null, TimeSpan? requestTimeout = null, Microsoft.Extensions.Logging.ILoggerFactory? loggerFactory = null)
    {
        var controller = new LMCacheController(new ControllerOptions
        {
            Host = "127.0.0.1",
            Port = 0,
            MonitorHost = "127.0.0.1",
            PullPort = 0,
            ReplyPort = 0,
            WorkerTimeout = workerTimeout ?? TimeSpan.FromSeconds(300),
            AuthToken = authToken,
            RequestTimeout = requestTimeout ?? TimeSpan.FromSeconds(30),
        }, loggerFactory);
        var address = await controller.StartAsync();
        return new Cluster(controller, new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromSeconds(60) });
    }

    public async Task<Instance> AddInstanceAsync(string id, int cpuChunks = 64, string? diskFolder = null, string? remoteUrl = null, string? storeLocation = null, string? authToken = null)
    {
        var instance = Instance.Start(id, Controller.PullPort, cpuChunks, diskFolder, remoteUrl, storeLocation, authToken);
        _instances.Add(instance);
        await WaitUntilAsync(async () =>
        {
            var infos = await PostAsync("/query_worker_info", new { instance_id = "all", worker_ids = Array.Empty<int>() });
            return infos["worker_infos"]!.AsArray().Any(w => (string?)w!["instance_id"] == id);
        }, $"instance {id} registered");
        return instance;
    }

    public static int[] Prompt(int length, int start) => [.. Enumerable.Range(start, length)];

    public async Task<JsonNode> PostAsync(string path, object body, int expectedStatus = 200)
    {
        using var response = await Http.PostAsJsonAsync(path, body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == expectedStatus, $"{path}: expected {expectedStatus}, got {(int)response.StatusCode}: {text}");
        return JsonNode.Parse(text)!;
    }

    public async Task<JsonNode> PostRawAsync(string path, string body, int expectedStatus)
    {
        using var content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
        using var response = await Http.PostAsync(path, content);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == expectedStatus, $"{path}: expected {expectedStatus}, got {(int)response.StatusCode}: {text}");
        Assert.StartsWith("application/json", response.Content.Headers.ContentType?.ToString(), StringComparison.Ordinal);
        return JsonNode.Parse(text)!;
    }

    /// <summary>The instance → [location, tokens] map of <c>/lookup</c>.</summary>
    public async Task<JsonObject> LookupAsync(int[] tokens) => (await PostAsync("/lookup", new { tokens }))["layout_info"]!.AsObject();

    /// <summary>Polls <c>/check_finish</c> until the event is no longer running; returns its last answer.</summary>
    public async Task<JsonNode> WaitFinishedAsync(string eventId)
    {
        JsonNode? last = null;
        await WaitUntilAsync(async () =>
        {
            last = await PostAsync("/check_finish", new { event_id = eventId });
            return (string?)last["status"] != "running";
        }, $"event {eventId} finished");
        return last!;
    }

    /// <summary>Polls <paramref name="condition"/> until true (worker reports are asynchronous); fails after <see cref="Patience"/>.</summary>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"Timed out waiting for: {what}");
            }
            await Task.Delay(50);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var instance in _instances)
        {
            await instance.DisposeAsync();
        }
        Http.Dispose();
        await Controller.DisposeAsync();
    }

    public static string Json(JsonNode node) => node.ToJsonString(new JsonSerializerOptions { WriteIndented = false });
}
