using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Net;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using LMCache.Controller.Protocol;
using LMCache.Core.Diagnostics;
using LMCache.Core.Keys;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using NetMQ;
using NetMQ.Sockets;

namespace LMCache.Controller;

/// <summary>
/// The LMCache controller process as a library: a ZeroMQ pull socket (worker pushes), an optional reply socket
/// (synchronous registration and heartbeats), the registry and global chunk index, request sockets to every worker,
/// and the HTTP API, Prometheus metrics and dashboard on ASP.NET Core.
/// </summary>
/// <remarks>
/// Create with <c>new</c>, then <see cref="StartAsync"/> (which returns once every socket is bound, so tests may ask
/// for port 0 and read the bound ports back); dispose to close everything.
/// </remarks>
public sealed class LMCacheController : IAsyncDisposable
{
    private readonly ControllerOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, ChunkedTokenDatabase> _tokenDatabases = new(StringComparer.Ordinal);
    private PullSocket? _pull;
    private ResponseSocket? _reply;
    private NetMQPoller? _poller;
    private readonly Queue<HistoryPoint> _history = new();
    private readonly CancellationTokenSource _lifetime = new();
    private readonly LMCacheMeterFactory? _ownedMeterFactory;
    private readonly ControllerMetrics _metrics;
    private WebApplication? _app;
    private ITimer? _sampler;

    /// <summary>Creates a controller; nothing is bound until <see cref="StartAsync"/>.</summary>
    /// <param name="options">The settings.</param>
    /// <param name="loggerFactory">Loggers; null for none.</param>
    /// <param name="timeProvider">The clock; null for the system's.</param>
    /// <param name="meterFactory">Where the <c>LMCache.Controller</c> meter comes from; null for one the controller owns.</param>
    public LMCacheController(ControllerOptions options, ILoggerFactory? loggerFactory = null, TimeProvider? timeProvider = null, IMeterFactory? meterFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger<LMCacheController>();
        State = new ClusterState(timeProvider ?? TimeProvider.System, options.WorkerTimeout);
        Events = new ControllerEvents(timeProvider ?? TimeProvider.System, options.EventHistory);
        _ownedMeterFactory = meterFactory is null ? new LMCacheMeterFactory() : null;
        meterFactory ??= _ownedMeterFactory!;
        _metrics = new ControllerMetrics(meterFactory, State);
        Exporter = new PrometheusExporter(meterFactory);
    }

    /// <summary>Writes <c>/metrics</c>: the controller's meter under the original's <c>lmcache:</c> names.</summary>
    internal PrometheusExporter Exporter { get; }

    /// <summary>The HTTP base address, e.g. <c>http://127.0.0.1:9000</c> (after <see cref="StartAsync"/>).</summary>
    public Uri? HttpAddress { get; private set; }

    /// <summary>The bound port of the pull socket (workers' <c>controller_pull_url</c>).</summary>
    public int PullPort { get; private set; }

    /// <summary>The bound port of the reply socket (workers' <c>controller_reply_url</c>); 0 when none.</summary>
    public int ReplyPort { get; private set; }

    internal ClusterState State { get; }

    /// <summary>The asynchronous operations <c>/check_finish</c> answers about.</summary>
    internal ControllerEvents Events { get; }

    /// <summary>Ends when the controller is disposed (long operations run until then, not until their HTTP caller leaves).</summary>
    internal CancellationToken Lifetime => _lifetime.Token;

    internal ControllerOptions Options => _options;

    /// <summary>
    /// Binds the sockets, starts the HTTP server and returns its address (a loopback address when the server listens on
    /// every interface, so that the result is always one a local client can use).
    /// </summary>
    /// <exception cref="LMCacheConfigurationException">A socket would bind a non-loopback address and no <see cref="ControllerOptions.AuthToken"/> is set.</exception>
    public async Task<Uri> StartAsync(CancellationToken cancellationToken = default)
    {
        var httpAddress = ParseHttpHost(_options.Host);
        var monitorHost = ZeroMqHost(_options.MonitorHost ?? _options.Host);
        if (string.IsNullOrEmpty(_options.AuthToken) && (!IPAddress.IsLoopback(httpAddress) || !IsLoopbackZeroMqHost(monitorHost)))
        {
            throw new LMCacheConfigurationException(
                $"The controller would listen beyond loopback (HTTP on {_options.Host}, worker sockets on {_options.MonitorHost ?? _options.Host}) without an auth token: " +
                "set --auth-token (or LMCACHE_CONTROLLER_TOKEN), or bind 127.0.0.1.");
        }

        _pull = new PullSocket();
        _pull.Options.Linger = TimeSpan.Zero;
        PullPort = _options.PullPort == 0 ? _pull.BindRandomPort("tcp://" + monitorHost) : Bind(_pull, monitorHost, _options.PullPort);
        PullEndpoint = _pull.Options.LastEndpoint ?? $"tcp://{monitorHost}:{PullPort}";
        _pull.ReceiveReady += (_, e) => OnPull(e.Socket);
        _poller = [_pull];
        if (_options.ReplyPort is int replyPort)
        {
            _reply = new ResponseSocket();
            _reply.Options.Linger = TimeSpan.Zero;
            ReplyPort = replyPort == 0 ? _reply.BindRandomPort("tcp://" + monitorHost) : Bind(_reply, monitorHost, replyPort);
            ReplyEndpoint = _reply.Options.LastEndpoint ?? $"tcp://{monitorHost}:{ReplyPort}";
            _reply.ReceiveReady += (_, e) => OnReply(e.Socket);
            _poller.Add(_reply);
        }
        _poller.RunAsync("lmcache-controller-sockets", isBackgroundThread: true);
        _sampler = TimeProvider.System.CreateTimer(_ => Sample(), null, TimeSpan.Zero, _options.HistoryInterval);

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(_loggerFactory);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxRequestBodySize = _options.MaxRequestBodyBytes;
            kestrel.Listen(httpAddress, _options.Port);
        });
        builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.TypeInfoResolverChain.Insert(0, ControllerJsonContext.Default));
        _app = builder.Build();
        HttpApi.Map(_app, this);
        await _app.StartAsync(cancellationToken).ConfigureAwait(false);
        var bound = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        HttpEndpoint = bound;
        var uri = new Uri(bound.Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal).Replace("[::]", "[::1]", StringComparison.Ordinal));
        HttpAddress = uri;
        ControllerLog.Started(_logger, HttpEndpoint, PullEndpoint, ReplyEndpoint ?? "none", string.IsNullOrEmpty(_options.AuthToken) ? "off" : "on");
        return uri;
    }

    /// <summary>What the HTTP server really listens on, e.g. <c>http://127.0.0.1:9000</c> or <c>http://0.0.0.0:9000</c> (after <see cref="StartAsync"/>).</summary>
    public string HttpEndpoint { get; private set; } = string.Empty;

    /// <summary>What the pull socket really listens on, e.g. <c>tcp://127.0.0.1:8300</c> (after <see cref="StartAsync"/>).</summary>
    public string PullEndpoint { get; private set; } = string.Empty;

    /// <summary>What the reply socket really listens on; null when none.</summary>
    public string? ReplyEndpoint { get; private set; }

    private static IPAddress ParseHttpHost(string host) => host switch
    {
        "0.0.0.0" or "*" => IPAddress.Any,
        "::" => IPAddress.IPv6Any,
        "localhost" => IPAddress.Loopback,
        _ => IPAddress.TryParse(host, out var ip) ? ip : throw new LMCacheConfigurationException($"Controller host '{host}' is not an IP address (or localhost, 0.0.0.0, *)."),
    };

    /// <summary>The ZeroMQ spelling of a bind address: <c>*</c> for every interface, an IP otherwise.</summary>
    private static string ZeroMqHost(string host) => host switch
    {
        "0.0.0.0" or "*" or "::" => "*",
        "localhost" => "127.0.0.1",
        _ => IPAddress.TryParse(host, out _) ? host : throw new LMCacheConfigurationException($"Controller monitor host '{host}' is not an IP address (or localhost, 0.0.0.0, *)."),
    };

    private static bool IsLoopbackZeroMqHost(string host) => host != "*" && IPAddress.Parse(host) is var ip && IPAddress.IsLoopback(ip);

    /// <summary>Waits until the HTTP server stops (the CLI runs until Ctrl+C).</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken) =>
        _app?.WaitForShutdownAsync(cancellationToken) ?? Task.CompletedTask;

    /// <summary>Stops the HTTP server and closes every socket.</summary>
    public async ValueTask DisposeAsync()
    {
        await _lifetime.CancelAsync().ConfigureAwait(false);
        if (_sampler is not null)
        {
            await _sampler.DisposeAsync().ConfigureAwait(false);
            _sampler = null;
        }
        if (_app is not null)
        {
            await _app.StopAsync().ConfigureAwait(false);
            await _app.DisposeAsync().ConfigureAwait(false);
            _app = null;
        }
        if (_poller is not null)
        {
            _poller.Stop();
            _poller.Dispose();
            _poller = null;
        }
        _pull?.Dispose();
        _reply?.Dispose();
        foreach (var worker in State.Workers())
        {
            worker.Client?.Dispose();
        }
        _lifetime.Dispose();
        Exporter.Dispose();
        _metrics.Dispose();
        _ownedMeterFactory?.Dispose();
    }

    private void OnPull(NetMQSocket socket)
    {
        var frames = new List<byte[]>();
        while (socket.TryReceiveMultipartBytes(TimeSpan.Zero, ref frames))
        {
            foreach (var frame in frames)
            {
                Ingest(frame);
            }
        }
    }

    private void OnReply(NetMQSocket socket)
    {
        while (socket.TryReceiveFrameBytes(TimeSpan.Zero, out var frame))
        {
            var (message, rejection) = Ingest(frame);
            var reply = message?.Type switch
            {
                _ when rejection is not null => new ControlMessage(MessageTypes.Error).With("error", rejection),
                MessageTypes.Register => new ControlMessage(MessageTypes.RegisterRet),
                MessageTypes.Heartbeat => new ControlMessage(MessageTypes.HeartbeatRet),
                null => new ControlMessage(MessageTypes.Error).With("error", "Bad message."),
                _ => new ControlMessage(MessageTypes.Error).With("error", $"'{message.Type}' is not a reply-socket request."),
            };
            socket.SendFrame(ControlMessageCodec.Encode(reply));
        }
    }

    /// <summary>Decodes, authenticates and applies one worker message; returns it, or why it was dropped.</summary>
    private (ControlMessage? Message, string? Rejection) Ingest(byte[] frame)
    {
        try
        {
            var message = ControlMessageCodec.Decode(frame);
            var token = message.GetStringOrNull(AuthTokenField);
            message.Fields.Remove(AuthTokenField);   // never kept (a worker's stats message is stored as it came)
            if (!TokenMatches(token))
            {
                ControllerLog.Unauthenticated(_logger, message.Type, message.GetStringOrNull("instance_id"), token is null ? "no" : "a wrong");
                return (null, "Unauthorized: this controller requires the auth token (extra_config.controller_auth_token) in every worker message.");
            }
            var (added, removed) = State.Apply(message);
            if (added is not null)
            {
                added.Client?.Dispose();
                added.Client = new WorkerClient($"tcp://{added.Ip}:{added.Port}", _options.AuthToken);
                added.Unresponsive = false;
                ControllerLog.Registered(_logger, added.InstanceId, added.WorkerId, added.Ip, added.Port);
            }
            if (removed is not null)
            {
                removed.Client?.Dispose();
                ControllerLog.Deregistered(_logger, removed.InstanceId, removed.WorkerId);
            }
            return (message, null);
        }
        catch (Exception ex)
        {
            // A bad frame from one worker must not stop the socket thread that serves all of them.
            ControllerLog.BadMessage(_logger, ex.Message);
            return (null, null);
        }
    }

    /// <summary>The field of a worker message (and of a controller request) that carries the shared token.</summary>
    public const string AuthTokenField = "auth_token";

    /// <summary>Whether <paramref name="presented"/> is the configured token (in constant time); always true when none is configured.</summary>
    internal bool TokenMatches(string? presented)
    {
        if (string.IsNullOrEmpty(_options.AuthToken))
        {
            return true;
        }
        if (presented is null)
        {
            return false;
        }
        var expected = SHA256.HashData(Encoding.UTF8.GetBytes(_options.AuthToken));
        var actual = SHA256.HashData(Encoding.UTF8.GetBytes(presented));
        return CryptographicOperations.FixedTimeEquals(expected, actual);
    }

    /// <summary>Whether HTTP callers must present the token for mutating calls.</summary>
    internal bool RequiresToken => !string.IsNullOrEmpty(_options.AuthToken);

    /// <summary>The recent samples of the cluster's cumulative token counters (for the dashboard's charts), oldest first.</summary>
    internal List<HistoryPoint> History()
    {
        lock (_history)
        {
            return [.. _history];
        }
    }

    private void Sample()
    {
        long stored = 0, hit = 0, requested = 0;
        foreach (var worker in State.Workers())
        {
            stored += worker.Stats?.GetInt64OrDefault("num_stored_tokens", 0) ?? 0;
            hit += worker.Stats?.GetInt64OrDefault("num_hit_tokens", 0) ?? 0;
            requested += worker.Stats?.GetInt64OrDefault("num_requested_tokens", 0) ?? 0;
        }
        lock (_history)
        {
            _history.Enqueue(new HistoryPoint(State.Now, stored, hit, requested));
            while (_history.Count > _options.HistoryLength)
            {
                _history.Dequeue();
            }
        }
    }

    // ---- operations behind the HTTP API ---------------------------------------------------------------------------

    internal static string NewEventId(string operation) => operation + Guid.NewGuid().ToString("N");

    /// <summary>For each instance, the longest cached prefix of <paramref name="tokens"/>: (tier of its last chunk, tokens).</summary>
    internal Dictionary<string, JsonArray> Lookup(int[] tokens)
    {
        var result = new Dictionary<string, JsonArray>(StringComparer.Ordinal);
        foreach (var group in State.Workers().Where(State.IsActive).GroupBy(w => w.InstanceId, StringComparer.Ordinal))
        {
            var matched = int.MaxValue;
            string? location = null;
            foreach (var worker in group)
            {
                var database = _tokenDatabases.GetOrAdd(
                    $"{worker.ChunkSize}|{worker.SaveUnfullChunk}|{worker.HashSeed}",
                    _ => new ChunkedTokenDatabase(worker.ChunkSize, worker.SaveUnfullChunk, new Sha256CborChunkHasher(worker.HashSeed)));
                var scope = worker.Scope;
                var workerMatched = 0;
                string? workerLocation = null;
                foreach (var chunk in database.GetChunks(tokens))
                {
                    var where = State.Locate(scope.MakeKey(chunk.Hash).ToString(), worker.InstanceId, worker.WorkerId);
                    if (where is null)
                    {
                        break;
                    }
                    workerMatched = chunk.End;
                    workerLocation = where;
                }
                if (workerMatched < matched)
                {
                    matched = workerMatched;
                    location = workerLocation;
                }
            }
            if (matched > 0 && matched != int.MaxValue)
            {
                result[group.Key] = [location, matched];
            }
        }
        return result;
    }

    /// <summary>The workers of <paramref name="instanceId"/> that answer requests; 404 when there are none.</summary>
    internal List<WorkerRecord> ActiveWorkersOf(string? instanceId)
    {
        if (string.IsNullOrWhiteSpace(instanceId))
        {
            throw ControllerApiException.BadRequest("instance_id is required.");
        }
        var workers = State.Workers(instanceId);
        if (workers.Count == 0)
        {
            throw ControllerApiException.NotFound($"Unknown instance '{instanceId}': no worker of it is registered.");
        }
        var active = workers.Where(State.IsActive).ToList();
        return active.Count > 0
            ? active
            : throw new ControllerApiException(StatusCodes.Status503ServiceUnavailable, $"Instance '{instanceId}' has no active worker (none heard from within {_options.WorkerTimeout.TotalSeconds} s).");
    }

    /// <summary>Sends one request to each worker of the instance concurrently; every reply must be of <paramref name="replyType"/>.</summary>
    internal Task<List<(WorkerRecord Worker, ControlMessage Reply)>> FanOutAsync(
        string? instanceId, Func<WorkerRecord, ControlMessage> build, string replyType, CancellationToken cancellationToken, bool longOperation = false) =>
        FanOutAsync(ActiveWorkersOf(instanceId), build, replyType, cancellationToken, longOperation);

    /// <summary>Sends one request to each of <paramref name="workers"/> concurrently (long operations wait up to <see cref="ControllerOptions.OperationTimeout"/>).</summary>
    internal async Task<List<(WorkerRecord Worker, ControlMessage Reply)>> FanOutAsync(
        List<WorkerRecord> workers, Func<WorkerRecord, ControlMessage> build, string replyType, CancellationToken cancellationToken, bool longOperation = false)
    {
        var timeout = longOperation ? _options.OperationTimeout : _options.RequestTimeout;
        var replies = await Task.WhenAll(workers.Select(async worker =>
        {
            var client = worker.Client ?? throw new ControllerApiException(StatusCodes.Status503ServiceUnavailable, $"Worker {worker.InstanceId}/{worker.WorkerId} has no connection.");
            var request = build(worker);
            var reply = await client.RequestAsync(request, _options.RequestTimeout, timeout, cancellationToken).ConfigureAwait(false);
            if (reply is null)
            {
                worker.Unresponsive = true;
                ControllerLog.WorkerTimeout(_logger, worker.InstanceId, worker.WorkerId, request.Type, timeout.TotalMilliseconds);
                throw new ControllerApiException(StatusCodes.Status504GatewayTimeout,
                    $"Worker {worker.InstanceId}/{worker.WorkerId} did not answer {request.Type} in time ({_options.RequestTimeout.TotalSeconds} s to take the request" +
                    (longOperation ? $", {timeout.TotalSeconds} s to finish it" : "") + "); it is marked unresponsive until it answers.");
            }
            worker.Unresponsive = false;
            if (reply.Type == MessageTypes.Error)
            {
                throw ControllerApiException.BadRequest($"Worker {worker.InstanceId}/{worker.WorkerId}: {reply.GetStringOrNull("error")}");
            }
            if (reply.Type != replyType)
            {
                throw new ControllerApiException(StatusCodes.Status502BadGateway, $"Worker {worker.InstanceId}/{worker.WorkerId} answered {reply.Type}, expected {replyType}.");
            }
            return (worker, reply);
        })).ConfigureAwait(false);
        return [.. replies];
    }

    /// <summary>The workers' common <c>num_tokens</c> (the original asserts they agree); the smallest when they differ.</summary>
    internal static long AgreedTokens(List<(WorkerRecord Worker, ControlMessage Reply)> replies) =>
        replies.Count == 0 ? 0 : replies.Min(r => r.Reply.GetInt64("num_tokens"));

    internal static string? ReadEmbedded(string path, out string contentType)
    {
        contentType = Path.GetExtension(path) switch
        {
            ".html" => "text/html; charset=utf-8",
            ".js" => "text/javascript; charset=utf-8",
            ".css" => "text/css; charset=utf-8",
            ".svg" => "image/svg+xml",
            _ => "application/octet-stream",
        };
        using var stream = typeof(LMCacheController).Assembly.GetManifestResourceStream("wwwroot/" + path);
        if (stream is null)
        {
            return null;
        }
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    internal static string Version =>
        typeof(LMCacheController).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    private static int Bind(NetMQSocket socket, string host, int port)
    {
        socket.Bind($"tcp://{host}:{port}");
        return port;
    }
}
