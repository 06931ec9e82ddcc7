using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using LMCache.Controller;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Server;
using LMCache.Serving;
using LMCache.Testing;
using LMCache.Testing.Redis;
using Microsoft.Extensions.Logging;

namespace LMCache.Hosting.Tests;

/// <summary>
/// <see cref="LMCacheHost"/> over the tiny-llama fixture: it builds model → cache engine → controller worker →
/// inference engine → HTTP server, serves a request through all of them, and disposes all in the reverse order — also
/// when building fails half-way. Real parts: an lm:// server as the remote tier, a controller the worker registers
/// with, HTTP over loopback.
/// </summary>
[Trait("Category", "Integration")]
public sealed class LMCacheHostTests
{
    private static readonly string[] s_everyComponent = ["OpenAI server", "inference engine", "controller worker", "cache engine", "model"];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task The_host_serves_through_every_component_and_disposes_them_all_in_reverse_order()
    {
        await using var remote = new LmServer(new LmServerOptions { Host = "127.0.0.1", Port = 0, CapacityBytes = 64L << 20 });
        var remotePort = (await remote.StartAsync(Ct)).Port;
        await using var controller = new LMCacheController(new ControllerOptions { Host = "127.0.0.1", Port = 0, MonitorHost = "127.0.0.1", PullPort = 0, ReplyPort = 0 });
        using var controllerHttp = new HttpClient { BaseAddress = await controller.StartAsync(Ct) };
        using var meters = new DisposalTrackingMeterFactory();
        var logs = new HostLogRecorder();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));

        var host = await LMCacheHost.StartAsync(new LMCacheHostOptions
        {
            ModelFolder = RepositoryFixtures.TinyLlama,
            IntraOpThreads = 2,
            Cache = new LMCacheEngineOptions
            {
                ChunkSize = 256,
                MaxLocalCpuSizeGib = 0.25,
                RemoteUrl = $"lm://127.0.0.1:{remotePort}",
                EnableController = true,
                ControllerPullUrl = $"127.0.0.1:{controller.PullPort}",
                LMCacheInstanceId = "hosting-test",
                LMCacheWorkerHeartbeatDelayTime = 0,
            },
            Server = new OpenAiServerOptions { Host = "127.0.0.1", Port = 0 },
            MeterFactory = meters,
        }, loggerFactory, Ct);
        Uri address;
        await using (host)
        {
            address = host.Server!.Address;
            Assert.NotNull(host.ControllerWorker);
            Assert.Equal(["LMCache.Engine", "LMCache.Storage"], meters.CreatedNames);

            // One request through HTTP → inference engine → cache engine → lm:// remote.
            using var http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromMinutes(5) };
            using var response = await http.PostAsJsonAsync("/v1/completions",
                new { model = host.Model.Name, prompt = string.Concat(Enumerable.Repeat("the cache keeps every chunk ", 60)), max_tokens = 2, temperature = 0 }, Ct);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            await host.Inference.WhenIdleAsync(Ct);
            await host.Cache.FlushAsync(Ct);
            Assert.True(remote.GetStatistics().Keys > 0, "the request's chunks did not reach the lm:// remote");
            Assert.True(remote.GetStatistics().ActiveConnections > 0);
            await WaitForWorkerCountAsync(controllerHttp, 1, "the controller worker registers");
        }

        // What each disposal does, then the order the host reports.
        await Assert.ThrowsAnyAsync<HttpRequestException>(async () =>
        {
            using var http = new HttpClient { BaseAddress = address };
            await http.GetAsync("/health", Ct);
        });
        Assert.Empty(meters.Undisposed);                                                                      // the cache engine
        await Eventually.TrueAsync(() => remote.GetStatistics().ActiveConnections == 0, "the remote connector closes its connections");
        await WaitForWorkerCountAsync(controllerHttp, 0, "the controller worker deregisters");
        Assert.Equal(s_everyComponent, logs.Disposed);
        Assert.Throws<ObjectDisposedException>(() => host.Cache);
    }

    [Fact]
    public async Task A_failure_after_the_cache_engine_is_built_disposes_the_engine_and_the_model()
    {
        using var meters = new DisposalTrackingMeterFactory();
        var logs = new HostLogRecorder();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));

        // enable_controller without controller_pull_url fails when the worker starts, after the model and the cache engine.
        var error = await Assert.ThrowsAsync<LMCacheConfigurationException>(() => LMCacheHost.StartAsync(new LMCacheHostOptions
        {
            ModelFolder = RepositoryFixtures.TinyLlama,
            IntraOpThreads = 1,
            Cache = new LMCacheEngineOptions { ChunkSize = 256, MaxLocalCpuSizeGib = 0.25, EnableController = true },
            Server = new OpenAiServerOptions { Host = "127.0.0.1", Port = 0 },
            MeterFactory = meters,
        }, loggerFactory, Ct));

        Assert.Contains("controller_pull_url", error.Message, StringComparison.Ordinal);
        Assert.Equal(["LMCache.Engine", "LMCache.Storage"], meters.CreatedNames);
        Assert.Empty(meters.Undisposed);
        Assert.Equal(["cache engine", "model"], logs.Disposed);
    }

    [Fact]
    public async Task A_port_in_use_fails_the_start_and_disposes_everything_built_before_the_server()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port;
        using var meters = new DisposalTrackingMeterFactory();
        var logs = new HostLogRecorder();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));

        await Assert.ThrowsAnyAsync<IOException>(() => LMCacheHost.StartAsync(new LMCacheHostOptions
        {
            ModelFolder = RepositoryFixtures.TinyLlama,
            IntraOpThreads = 1,
            Cache = new LMCacheEngineOptions { ChunkSize = 256, MaxLocalCpuSizeGib = 0.25 },
            Server = new OpenAiServerOptions { Host = "127.0.0.1", Port = port },
            MeterFactory = meters,
        }, loggerFactory, Ct));

        Assert.Equal(["LMCache.Engine", "LMCache.Storage"], meters.CreatedNames);
        Assert.Empty(meters.Undisposed);
        Assert.Equal(["inference engine", "cache engine", "model"], logs.Disposed);
    }

    [Fact]
    public async Task From_arguments_the_host_reads_the_configuration_file_and_serves_on_the_given_port()
    {
        using var folder = new TempFolder();
        var configFile = Path.Combine(folder.Path, "lmcache.yaml");
        await File.WriteAllTextAsync(configFile, "chunk_size: 128\nmax_local_cpu_size: 0.125\nnot_a_key: 1\n", Ct);
        var logs = new HostLogRecorder();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(logs));
        var port = RedisProcess.FreePort();

        await using var host = await LMCacheHost.StartAsync(new LMCacheServeArguments
        {
            ModelFolder = RepositoryFixtures.TinyLlama,
            ConfigFile = configFile,
            Host = "127.0.0.1",
            Port = port,
            ServedModelName = "served-by-arguments",
            Threads = 1,
        }, loggerFactory, Ct);

        Assert.Equal(128, host.Cache.Options.ChunkSize);
        Assert.Equal(0.125, host.Cache.Options.MaxLocalCpuSizeGib);
        Assert.Null(host.ControllerWorker);
        Assert.Contains(logs.Messages, m => m.Contains("not_a_key", StringComparison.Ordinal));   // configuration warnings are logged
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
        var models = await http.GetFromJsonAsync<JsonObject>("/v1/models", Ct);
        Assert.Equal("served-by-arguments", models!["data"]![0]!["id"]!.GetValue<string>());
    }

    [Fact]
    public async Task Quantize_from_arguments_serves_the_graph_built_from_safetensors_and_logs_its_progress()
    {
        var logs = new HostLogRecorder();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(logs));
        await using var host = await LMCacheHost.StartAsync(new LMCacheServeArguments
        {
            ModelFolder = RepositoryFixtures.TinyLlama,
            Host = "127.0.0.1",
            Port = 0,
            Threads = 1,
            Quantize = Inference.Models.WeightQuantization.Int8,
        }, loggerFactory, Ct);

        Assert.True(host.Model.IsBuiltGraph);
        Assert.Equal(Inference.Models.WeightQuantization.Int8, host.Model.Quantization);
        Assert.Contains(logs.Messages, m => m.Contains("loading weights: layer 4/4", StringComparison.Ordinal));
        using var http = new HttpClient { BaseAddress = host.Server!.Address, Timeout = TimeSpan.FromMinutes(5) };
        using var response = await http.PostAsJsonAsync("/v1/completions",
            new { model = host.Model.Name, prompt = "the cache keeps every chunk", max_tokens = 4, temperature = 0 }, Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonObject>(Ct);
        Assert.Equal(4, body!["usage"]!["completion_tokens"]!.GetValue<int>());
    }

    [Fact]
    public async Task An_unsupported_architecture_fails_the_start_with_the_folder_and_the_supported_list()
    {
        using var folder = new TempFolder();
        foreach (var file in Directory.EnumerateFiles(RepositoryFixtures.TinyLlama))
        {
            File.Copy(file, Path.Combine(folder.Path, Path.GetFileName(file)));
        }
        var config = JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(folder.Path, "config.json"), Ct))!.AsObject();
        config["architectures"] = new JsonArray("FalconForCausalLM");
        await File.WriteAllTextAsync(Path.Combine(folder.Path, "config.json"), config.ToJsonString(), Ct);
        using var loggerFactory = LoggerFactory.Create(_ => { });
        var error = await Assert.ThrowsAsync<LMCacheException>(async () => await LMCacheHost.StartAsync(
            new LMCacheServeArguments { ModelFolder = folder.Path, Host = "127.0.0.1", Port = 0, Threads = 1 }, loggerFactory, Ct));
        Assert.Contains(folder.Path, error.Message, StringComparison.Ordinal);
        Assert.Contains("FalconForCausalLM", error.Message, StringComparison.Ordinal);
        Assert.Contains("Qwen3ForCausalLM", error.Message, StringComparison.Ordinal);
    }

    private static async Task WaitForWorkerCountAsync(HttpClient controller, int expected, string what)
    {
        var deadline = DateTime.UtcNow + Eventually.DefaultDeadline;
        var count = -1;
        while (DateTime.UtcNow < deadline)
        {
            using var response = await controller.PostAsJsonAsync("/query_worker_info", new { instance_id = "all" }, Ct);
            var info = JsonNode.Parse(await response.Content.ReadAsStringAsync(Ct));
            count = info?["worker_infos"]?.AsArray().Count ?? 0;
            if (count == expected)
            {
                return;
            }
            await Task.Delay(100, Ct);
        }
        Assert.Fail($"{what}: the controller lists {count} workers, expected {expected}");
    }
}
