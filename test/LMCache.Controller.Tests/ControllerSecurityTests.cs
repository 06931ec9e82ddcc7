using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using LMCache.Controller.Protocol;
using LMCache.Core.Diagnostics;
using LMCache.Storage.LocalCpu;
using LMCache.Testing;
using Microsoft.Extensions.Logging;
using NetMQ;
using NetMQ.Sockets;

namespace LMCache.Controller.Tests;

/// <summary>
/// Issue #18 problems 1, 2, 6 and 9 on the controller: what it binds, who may change caches or register, every call to
/// a worker on a deadline, the client-error status codes, and control characters kept out of its logs.
/// </summary>
[IntegrationTest]
public sealed class ControllerSecurityTests
{
    private const string Token = "s3cret-controller-token";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Every_socket_binds_loopback_by_default_and_the_banner_says_so()
    {
        var options = new ControllerOptions { Port = 0, PullPort = 0, ReplyPort = 0 };   // nothing about hosts: the defaults
        await using var controller = new LMCacheController(options);
        await controller.StartAsync(Ct);

        // What the kernel says is listening, not what the controller reports.
        var listeners = IPGlobalProperties.GetIPGlobalProperties().GetActiveTcpListeners();
        var ports = new[] { controller.HttpAddress!.Port, controller.PullPort, controller.ReplyPort };
        foreach (var port in ports)
        {
            var bound = listeners.Where(l => l.Port == port).ToList();
            Assert.NotEmpty(bound);
            Assert.All(bound, l => Assert.True(IPAddress.IsLoopback(l.Address), $"port {port} listens on {l.Address}, not loopback"));
        }
        Assert.Equal($"http://127.0.0.1:{ports[0]}", controller.HttpEndpoint);
        Assert.Equal($"tcp://127.0.0.1:{ports[1]}", controller.PullEndpoint);
        Assert.Equal($"tcp://127.0.0.1:{ports[2]}", controller.ReplyEndpoint);
    }

    [Theory]
    [InlineData("0.0.0.0", null)]
    [InlineData("127.0.0.1", "*")]
    [InlineData("127.0.0.1", "0.0.0.0")]
    public async Task Binding_beyond_loopback_without_a_token_is_refused(string host, string? monitorHost)
    {
        await using var controller = new LMCacheController(new ControllerOptions { Host = host, MonitorHost = monitorHost, Port = 0, PullPort = 0, ReplyPort = 0 });
        var error = await Assert.ThrowsAsync<LMCacheConfigurationException>(() => controller.StartAsync(Ct));
        Assert.Contains("auth token", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Binding_beyond_loopback_with_a_token_starts_and_reports_the_real_address()
    {
        await using var controller = new LMCacheController(new ControllerOptions { Host = "0.0.0.0", AuthToken = Token, Port = 0, PullPort = 0, ReplyPort = null });
        var address = await controller.StartAsync(Ct);
        Assert.Equal($"http://0.0.0.0:{address.Port}", controller.HttpEndpoint);
        Assert.Equal($"tcp://0.0.0.0:{controller.PullPort}", controller.PullEndpoint);
        Assert.Equal("127.0.0.1", address.Host);   // the address handed back is one a local client can use
    }

    [Fact]
    public async Task Mutating_calls_need_the_token_and_reads_do_not()
    {
        await using var cluster = await Cluster.StartAsync(authToken: Token);
        var instance = await cluster.AddInstanceAsync("secured", authToken: Token);
        var prompt = Cluster.Prompt(512, start: 70_000);
        instance.Serve(prompt);
        await Cluster.WaitUntilAsync(async () => (await cluster.LookupAsync(prompt)).ContainsKey("secured"), "the stored prompt indexed");

        var clear = new { instance_id = "secured", location = LocalCpuBackend.BackendName };
        await cluster.PostAsync("/clear", clear, expectedStatus: 401);
        using (var wrong = new HttpRequestMessage(HttpMethod.Post, "/clear") { Content = JsonContent(clear) })
        {
            wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Token + "x");
            using var response = await cluster.Http.SendAsync(wrong, Ct);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        }
        await cluster.PostAsync("/delete_chunks", new { instance_id = "secured", keys = new[] { "k" } }, expectedStatus: 401);
        await cluster.PostAsync("/CLEAR/", clear, expectedStatus: 401);   // routing matches other spellings too
        var retrieved = await instance.RetrieveAsync(prompt);
        Assert.Equal(512, retrieved.HitTokens);   // nothing was cleared

        using (var right = new HttpRequestMessage(HttpMethod.Post, "/clear") { Content = JsonContent(clear) })
        {
            right.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Token);
            using var response = await cluster.Http.SendAsync(right, Ct);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        Assert.Equal(0, (await instance.RetrieveAsync(prompt)).HitTokens);

        // Reads stay open (and prove the worker, which sends the token, is registered and answers the controller).
        await cluster.PostAsync("/health", new { instance_id = "secured" });
        await cluster.PostAsync("/query_worker_info", new { instance_id = "all" });
    }

    [Fact]
    public async Task A_forged_registration_or_deregistration_without_the_token_is_dropped()
    {
        await using var cluster = await Cluster.StartAsync(authToken: Token);
        await cluster.AddInstanceAsync("real", authToken: Token);
        using (var push = new PushSocket())
        {
            push.Options.Linger = TimeSpan.FromSeconds(5);
            push.Connect($"tcp://127.0.0.1:{cluster.Controller.PullPort}");
            push.SendFrame(ControlMessageCodec.Encode(Registration("forged-none", "10.9.9.1")));
            push.SendFrame(ControlMessageCodec.Encode(Registration("forged-wrong", "10.9.9.2").With("auth_token", "guess")));
            push.SendFrame(ControlMessageCodec.Encode(new ControlMessage(MessageTypes.DeRegister)
                .With("instance_id", "real").With("worker_id", 0).With("ip", "127.0.0.1").With("port", 1)));
            // Same socket, so delivered after the forgeries: once this one shows, the forgeries have been handled.
            push.SendFrame(ControlMessageCodec.Encode(Registration("authentic", "10.9.9.3").With("auth_token", Token)));
            await Cluster.WaitUntilAsync(async () => (await QueryInstanceAsync(cluster, "10.9.9.3")) == "authentic", "the authenticated registration");
        }
        Assert.Null(await QueryInstanceAsync(cluster, "10.9.9.1"));
        Assert.Null(await QueryInstanceAsync(cluster, "10.9.9.2"));
        var infos = (await cluster.PostAsync("/query_worker_info", new { instance_id = "all" }))["worker_infos"]!.AsArray();
        var ids = infos.Select(w => (string?)w!["instance_id"]).ToList();
        Assert.Contains("real", ids);                      // the forged DeRegister did not remove it
        Assert.DoesNotContain("forged-none", ids);
        Assert.DoesNotContain("forged-wrong", ids);
    }

    [Fact]
    public async Task A_worker_with_a_token_refuses_requests_without_it()
    {
        await using var cluster = await Cluster.StartAsync();   // a controller without a token: its requests carry none
        var instance = await cluster.AddInstanceAsync("guarded", authToken: Token);
        var prompt = Cluster.Prompt(256, start: 90_000);
        instance.Serve(prompt);

        var refused = await cluster.PostAsync("/clear", new { instance_id = "guarded", location = LocalCpuBackend.BackendName }, expectedStatus: 400);
        Assert.Contains("Unauthorized", (string?)refused["detail"], StringComparison.Ordinal);
        Assert.Equal(256, (await instance.RetrieveAsync(prompt)).HitTokens);
    }

    [Fact]
    public async Task The_reply_socket_answers_an_unauthenticated_registration_with_an_error()
    {
        await using var cluster = await Cluster.StartAsync(authToken: Token);
        using var request = new RequestSocket();
        request.Options.Linger = TimeSpan.Zero;
        request.Connect($"tcp://127.0.0.1:{cluster.Controller.ReplyPort}");
        Assert.True(request.TrySendFrame(TimeSpan.FromSeconds(10), ControlMessageCodec.Encode(Registration("forged-sync", "10.9.9.4"))));
        Assert.True(request.TryReceiveFrameBytes(TimeSpan.FromSeconds(10), out var frame));
        var reply = ControlMessageCodec.Decode(frame);
        Assert.Equal(MessageTypes.Error, reply.Type);
        Assert.Contains("Unauthorized", reply.GetString("error"), StringComparison.Ordinal);
        Assert.Null(await QueryInstanceAsync(cluster, "10.9.9.4"));
    }

    [Fact]
    public async Task Every_call_to_an_unreachable_worker_answers504_within_its_deadline_and_marks_it_unresponsive()
    {
        var deadline = TimeSpan.FromSeconds(1);
        await using var cluster = await Cluster.StartAsync(requestTimeout: deadline);
        await cluster.AddInstanceAsync("healthy");
        // A worker that registers and then never answers: its reply port accepts TCP connections and says nothing.
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var silentPort = ((IPEndPoint)silent.LocalEndpoint).Port;
        using (var push = new PushSocket())
        {
            push.Options.Linger = TimeSpan.FromSeconds(5);
            push.Connect($"tcp://127.0.0.1:{cluster.Controller.PullPort}");
            push.SendFrame(ControlMessageCodec.Encode(Registration("stuck", "127.0.0.1", silentPort)));
            await Cluster.WaitUntilAsync(async () => (await cluster.PostAsync("/query_worker_info", new { instance_id = "all" }))["worker_infos"]!
                .AsArray().Any(w => (string?)w!["instance_id"] == "stuck"), "the stuck worker registered");
        }

        // Six callers at once (a dashboard polling): each one answers 504 near its own deadline (queued behind the others, the sixth would take 6 s; before the fix none answered at all).
        var calls = Enumerable.Range(0, 6).Select(async _ =>
        {
            var watch = Stopwatch.StartNew();
            using var response = await cluster.Http.PostAsync("/health", JsonContent(new { instance_id = "stuck" }), Ct);
            return (response.StatusCode, watch.Elapsed);
        }).ToList();
        var results = await Task.WhenAll(calls);
        Assert.All(results, r =>
        {
            Assert.Equal(HttpStatusCode.GatewayTimeout, r.StatusCode);
            Assert.True(r.Elapsed < deadline * 4, $"504 after {r.Elapsed.TotalSeconds:F1} s; the deadline is {deadline.TotalSeconds} s");
        });

        var instances = JsonNode.Parse(await cluster.Http.GetStringAsync("/instances", Ct))!["instances"]!.AsArray();
        Assert.Equal("unresponsive", (string?)instances.Single(i => (string?)i!["instance_id"] == "stuck")!["status"]);
        Assert.Equal("active", (string?)instances.Single(i => (string?)i!["instance_id"] == "healthy")!["status"]);
        var stuck = (await cluster.PostAsync("/query_worker_info", new { instance_id = "stuck" }))["worker_infos"]!.AsArray().Single()!;
        Assert.Equal("unresponsive", (string?)stuck["status"]);
        // The healthy instance still answers (retried: on a loaded machine its first answer may miss a 1 s deadline).
        await Cluster.WaitUntilAsync(async () =>
        {
            using var response = await cluster.Http.PostAsync("/health", JsonContent(new { instance_id = "healthy" }), Ct);
            return response.StatusCode == HttpStatusCode.OK;
        }, "the healthy instance answers /health");
    }

    [Fact]
    public async Task A_long_operation_on_an_unreachable_worker_fails_at_the_request_deadline_not_the_operation_timeout()
    {
        var deadline = TimeSpan.FromSeconds(1);
        await using var cluster = await Cluster.StartAsync(requestTimeout: deadline);
        using (var push = new PushSocket())
        {
            push.Options.Linger = TimeSpan.FromSeconds(5);
            push.Connect($"tcp://127.0.0.1:{cluster.Controller.PullPort}");
            push.SendFrame(ControlMessageCodec.Encode(Registration("gone", "127.0.0.1", port: 1)));   // nothing listens on port 1
            await Cluster.WaitUntilAsync(async () => (await QueryInstanceAsync(cluster, "127.0.0.1")) == "gone", "the gone worker registered");
        }
        var watch = Stopwatch.StartNew();
        using var response = await cluster.Http.PostAsync("/clear", JsonContent(new { instance_id = "gone", location = LocalCpuBackend.BackendName }), Ct);
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        Assert.True(watch.Elapsed < deadline * 5, $"504 after {watch.Elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public async Task An_oversized_body_is413_and_a_wrong_method_is405()
    {
        await using var controller = new LMCacheController(new ControllerOptions { Port = 0, PullPort = 0, ReplyPort = null, MaxRequestBodyBytes = 64 * 1024 });
        using var http = new HttpClient { BaseAddress = await controller.StartAsync(Ct) };

        var big = "{\"tokens\":[" + string.Join(',', Enumerable.Repeat("12345", 20_000)) + "]}";   // ~120 KB
        using (var response = await http.PostAsync("/lookup", new StringContent(big, System.Text.Encoding.UTF8, "application/json"), Ct))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        }
        using (var chunked = new StreamContent(new MemoryStream(System.Text.Encoding.UTF8.GetBytes(big))))   // no Content-Length
        {
            chunked.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            using var response = await http.PostAsync("/lookup", chunked, Ct);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        }
        using (var response = await http.GetAsync("/clear", Ct))
        {
            Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
            Assert.Contains("POST", response.Content.Headers.Allow);
        }
        using (var response = await http.PostAsync("/instances", JsonContent(new { }), Ct))
        {
            Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        }
        using (var response = await http.PostAsync("/lookup", new StringContent("{\"tokens\": [1,", System.Text.Encoding.UTF8, "application/json"), Ct))
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        }
        using (var response = await http.GetAsync("/no-such-path", Ct))
        {
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        }
    }

    [Fact]
    public async Task Control_characters_from_workers_never_reach_the_log()
    {
        var logs = new CapturingLoggerProvider();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Trace));
        await using var cluster = await Cluster.StartAsync(loggerFactory: loggerFactory);
        const string hostile = "evil\u001B[31m\nFAKE LOG LINE\u0000";
        using (var push = new PushSocket())
        {
            push.Options.Linger = TimeSpan.FromSeconds(5);
            push.Connect($"tcp://127.0.0.1:{cluster.Controller.PullPort}");
            push.SendFrame(ControlMessageCodec.Encode(Registration(hostile, "10.9.9.5")));
            push.SendFrame(ControlMessageCodec.Encode(new ControlMessage(hostile).With("instance_id", "x")));   // a hostile type and no worker_id: a bad message
            await Cluster.WaitUntilAsync(() => Task.FromResult(logs.Entries.Any(e => e.EventId == 7001) && logs.Entries.Any(e => e.EventId == 7003)), "the registration and the bad message logged");
        }
        var lines = logs.Entries.Where(e => e.EventId is 7001 or 7003).Select(e => e.Message).ToList();
        const string escaped = "evil\\u001B[31m\\nFAKE LOG LINE\\u0000";
        Assert.Contains(escaped, logs.Entries.Single(e => e.EventId == 7001).Message, StringComparison.Ordinal);
        Assert.Contains(escaped, logs.Entries.First(e => e.EventId == 7003).Message, StringComparison.Ordinal);
        Assert.All(lines, l => Assert.DoesNotContain(l, c => char.IsControl(c)));
    }

    [Fact]
    public async Task Control_characters_in_a_request_to_a_worker_never_reach_its_log()
    {
        var logs = new CapturingLoggerProvider();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Trace));
        await using var cluster = await Cluster.StartAsync();
        var options = new LMCache.Core.Configuration.LMCacheEngineOptions { ChunkSize = Instance.ChunkSize, MaxLocalCpuSizeGib = 0.001 };
        await using var engine = LMCache.Engine.LMCacheEngine.Create(options, new LMCache.Core.Keys.KeyScope("vllm", "tiny/test-model"), Instance.Layout);
        await using var worker = LMCache.Controller.Worker.ControllerWorker.Start(engine, new LMCache.Controller.Worker.ControllerWorkerOptions
        {
            InstanceId = "logged",
            PullUrl = $"127.0.0.1:{cluster.Controller.PullPort}",
            BindHost = "127.0.0.1",
            AdvertisedHost = "127.0.0.1",
            HeartbeatDelay = TimeSpan.Zero,
            AuthToken = Token,
        }, loggerFactory);

        using var request = new RequestSocket();
        request.Options.Linger = TimeSpan.Zero;
        request.Connect($"tcp://127.0.0.1:{worker.Port}");
        const string hostile = "Clear\u001B]0;pwned\u0007\r\nFAKE";
        Assert.True(request.TrySendFrame(TimeSpan.FromSeconds(10), ControlMessageCodec.Encode(new ControlMessage(hostile))));   // no token: refused and logged
        Assert.True(request.TryReceiveFrameBytes(TimeSpan.FromSeconds(10), out var frame));
        Assert.Equal(MessageTypes.Error, ControlMessageCodec.Decode(frame).Type);

        var line = Assert.Single(logs.Entries, e => e.EventId == 7103).Message;
        Assert.Contains("Clear\\u001B]0;pwned\\u0007\\r\\nFAKE", line, StringComparison.Ordinal);
        Assert.DoesNotContain(line, c => char.IsControl(c));
    }

    private static ControlMessage Registration(string instanceId, string ip, int port = 5555) =>
        new ControlMessage(MessageTypes.Register)
            .With("instance_id", instanceId).With("worker_id", 0).With("ip", ip).With("port", port)
            .With("distributed_url", "").With("registration_info", new Dictionary<string, object?> { ["model_name"] = "forged/model" });

    private static async Task<string?> QueryInstanceAsync(Cluster cluster, string ip)
    {
        using var response = await cluster.Http.PostAsync("/query_instance", JsonContent(new { ip }), Ct);
        return response.StatusCode == HttpStatusCode.NotFound ? null : (string?)JsonNode.Parse(await response.Content.ReadAsStringAsync())!["res"];
    }

    private static StringContent JsonContent(object body) =>
        new(System.Text.Json.JsonSerializer.Serialize(body), System.Text.Encoding.UTF8, "application/json");

    /// <summary>Keeps every formatted log line with its event id.</summary>
    private sealed class CapturingLoggerProvider : ILoggerProvider
    {
        public ConcurrentQueue<(int EventId, string Message)> Entries { get; } = new();

        public ILogger CreateLogger(string categoryName) => new Logger(this);

        public void Dispose()
        {
        }

        private sealed class Logger(CapturingLoggerProvider owner) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                owner.Entries.Enqueue((eventId.Id, formatter(state, exception)));
        }
    }
}
