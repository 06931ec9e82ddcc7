using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using LMCache.Controller.Protocol;
using LMCache.Core.Keys;
using LMCache.Engine;
using LMCache.Serde.CacheGen;
using LMCache.Storage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using NetMQ;
using NetMQ.Sockets;

namespace LMCache.Controller.Worker;

/// <summary>
/// The controller's agent inside one engine rank (the original's <c>LMCacheWorker</c>): pushes <c>RegisterMsg</c> on
/// start and <c>DeRegisterMsg</c> on dispose, heartbeats, admissions and evictions per tier, and engine/tier counters to
/// the controller's pull socket; answers control requests (clear, pin, move, compress, decompress, health, list/remove/pin
/// chunks) on its own reply socket by acting on the engine's <see cref="StorageManager"/>.
/// </summary>
/// <remarks>
/// <para>One background thread owns both ZeroMQ sockets (they are not thread-safe). Short requests run on it; long ones
/// (clear, move, compress, decompress, load, remove: everything that awaits a tier) run asynchronously on the pool while
/// this thread keeps heartbeating and reporting, and their reply is sent when they finish; nothing blocks on a task.
/// Requests are answered one at a time, as the original's single REP socket does.</para>
/// <para>The class is split by concern: this file is the transport loop (sockets, the thread, framing and sending);
/// <c>ControllerWorker.Commands.cs</c> answers the controller's requests; <c>ControllerWorker.Reporting.cs</c> pushes
/// registration, heartbeats, admissions/evictions and counters. They share the thread and its state (the outbox, what
/// was reported), which is why they are one class in three files rather than three classes.</para>
/// <para>Admissions and evictions come from an <see cref="IStorageEventSink"/> registered on the storage manager: the tiers
/// raise them as they happen, this worker queues them and pushes <c>KVAdmitMsg</c>/<c>KVEvictMsg</c> from its thread
/// (at most ~50 ms later). A snapshot of the tiers is reported once at start, and again if the queue ever overflows. Only
/// tiers that can list their entries (<see cref="IListableBackend"/>) are reported, listed and walked; the remote tier
/// cannot be listed (other writers share it), so it is not reported.</para>
/// <para>Compressed chunks: <c>/compress</c> re-encodes chunks of a tier with the cachegen serde in place (the tier then
/// holds a <c>BINARY_BUFFER</c> object under the same key); the worker sets <see cref="LMCacheEngine.CompressedChunkSerde"/>
/// so retrieves decode them, and <c>/decompress</c> turns them back into raw chunks.</para>
/// </remarks>
public sealed partial class ControllerWorker : IAsyncDisposable
{
    private const int MaxFramesPerBatch = 50;

    private readonly LMCacheEngine _engine;
    private readonly ControllerWorkerOptions _options;
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly PushSocket _push;
    private readonly ResponseSocket _reply;
    private readonly TierEventQueue _events = new();
    private readonly Dictionary<string, Dictionary<string, double>> _reported = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<CacheEngineKey, int> _compressedTokens = new();
    private readonly Lazy<CacheGenSerde> _serde;
    private readonly List<ControlMessage> _outbox = [];
    private readonly long _registeredAt;
    private readonly ManualResetEventSlim _operationFinished = new(false);
    private readonly TaskCompletionSource _threadExited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task? _running;                    // the long operation in progress (only this worker's thread touches it)
    private ControlMessage? _finishedReply;    // its reply, published before _operationFinished is set
    private volatile bool _stopping;
    private bool _sendDeregister = true;
    private int _disposed;

    private ControllerWorker(LMCacheEngine engine, ControllerWorkerOptions options, ILogger logger, ILoggerFactory loggerFactory)
    {
        _engine = engine;
        _options = options;
        _logger = logger;
        WorkerId = engine.Scope.WorkerId;
        _serde = new Lazy<CacheGenSerde>(() => CacheGenSerde.Create(engine.Options, loggerFactory), LazyThreadSafetyMode.ExecutionAndPublication);
        _push = new PushSocket();
        _reply = new ResponseSocket();
        try
        {
            _push.Options.Linger = TimeSpan.FromSeconds(1);
            _reply.Options.Linger = TimeSpan.Zero;
            _push.Connect(ControllerWorkerOptions.ToTcpAddress(options.PullUrl));
            var bindHost = options.BindHost;
            Port = options.Port == 0
                ? _reply.BindRandomPort("tcp://" + bindHost)
                : BindFixed(_reply, bindHost, options.Port);
        }
        catch
        {
            _push.Dispose();
            _reply.Dispose();
            throw;
        }
        Host = options.AdvertisedHost ?? GuessHost(options.PullUrl);
        _registeredAt = Stopwatch.GetTimestamp();
        _thread = new Thread(Run) { IsBackground = true, Name = $"lmcache-worker-{options.InstanceId}-{WorkerId}" };
    }

    /// <summary>The instance this worker reports for.</summary>
    public string InstanceId => _options.InstanceId;

    /// <summary>The worker id (the engine's rank, <see cref="KeyScope.WorkerId"/>).</summary>
    public int WorkerId { get; }

    /// <summary>The IP the controller reaches this worker at.</summary>
    public string Host { get; }

    /// <summary>The port of this worker's reply socket.</summary>
    public int Port { get; }

    /// <summary>
    /// Starts a worker for <paramref name="engine"/>; it registers at once, hooks the engine's tiers for admissions and
    /// evictions and, unless the host set one, gives the engine a cachegen decoder for compressed chunks. Dispose it
    /// before the engine.
    /// </summary>
    public static ControllerWorker Start(LMCacheEngine engine, ControllerWorkerOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrWhiteSpace(options.PullUrl))
        {
            throw new ArgumentException("PullUrl is required (the controller's pull endpoint, host:port).", nameof(options));
        }
        loggerFactory ??= NullLoggerFactory.Instance;
        var worker = new ControllerWorker(engine, options, loggerFactory.CreateLogger<ControllerWorker>(), loggerFactory);
        engine.CompressedChunkSerde ??= worker._serde.Value;
        engine.Storage.AddEventSink(worker._events);
        worker._thread.Start();
        WorkerLog.Started(worker._logger, options.InstanceId, worker.WorkerId, $"{worker.Host}:{worker.Port}", options.PullUrl);
        return worker;
    }

    /// <summary>
    /// Starts a worker when the engine's configuration says <c>enable_controller: true</c>, with the settings from
    /// <see cref="ControllerWorkerOptions.FromEngineOptions"/>; null otherwise.
    /// </summary>
    public static ControllerWorker? StartIfEnabled(LMCacheEngine engine, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        return engine.Options.EnableController
            ? Start(engine, ControllerWorkerOptions.FromEngineOptions(engine.Options, engine.Scope.WorkerId), loggerFactory)
            : null;
    }

    /// <summary>Deregisters, unhooks the tiers and closes the sockets (after a running long operation finished).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _stopping = true;
            await _threadExited.Task.ConfigureAwait(false);   // the thread finishes a running long operation first
            _engine.Storage.RemoveEventSink(_events);
            _push.Dispose();
            _reply.Dispose();
            _operationFinished.Dispose();
        }
    }

    /// <summary>Stops without deregistering, as a crashed engine would (tests of heartbeat timeouts).</summary>
    internal ValueTask AbandonAsync()
    {
        _sendDeregister = false;
        return DisposeAsync();
    }

    private void Run()
    {
        try
        {
            RunLoop();
        }
        finally
        {
            _threadExited.TrySetResult();
        }
    }

    private void RunLoop()
    {
        var nextStats = 0L;
        var nextHeartbeat = _options.HeartbeatInterval is null ? long.MaxValue : Stopwatch.GetTimestamp() + ToTicks(_options.HeartbeatDelay);
        Enqueue(Identity(MessageTypes.Register).With("registration_info", RegistrationInfo()));
        Resync();
        while (!_stopping || _running is not null)
        {
            try
            {
                if (_running is null)
                {
                    if (!_stopping && _reply.TryReceiveFrameBytes(TimeSpan.FromMilliseconds(50), out var request))
                    {
                        var answer = Handle(request);
                        if (answer is not null)
                        {
                            Reply(answer);
                        }
                    }
                }
                else if (_operationFinished.Wait(50))
                {
                    // The operation catches everything: its reply is an answer or an ErrorMsg, never missing.
                    _operationFinished.Reset();
                    _running = null;
                    Reply(Interlocked.Exchange(ref _finishedReply, null)!);
                }
                ReportEvents();
                var now = Stopwatch.GetTimestamp();
                if (now >= nextStats)
                {
                    Enqueue(Stats());
                    nextStats = now + ToTicks(_options.StatsInterval);
                }
                if (now >= nextHeartbeat)
                {
                    Enqueue(Identity(MessageTypes.Heartbeat).With("registration_info", RegistrationInfo()));
                    nextHeartbeat = now + ToTicks(_options.HeartbeatInterval!.Value);
                }
                Flush();
            }
            catch (Exception ex)
            {
                // Never let the reporting thread take the engine's process down; try again on the next round.
                WorkerLog.LoopError(_logger, ex.Message);
                Thread.Sleep(100);
            }
        }
        if (_sendDeregister)
        {
            Enqueue(new ControlMessage(MessageTypes.DeRegister)
                .With("instance_id", InstanceId).With("worker_id", WorkerId).With("ip", Host).With("port", Port));
            Flush();
        }
    }

    /// <summary>The field of every message (both ways) that carries the shared token, when one is configured.</summary>
    internal const string AuthTokenField = "auth_token";

    /// <summary>Sends a reply after pushing what the operation changed, so the controller sees the changes first.</summary>
    private void Reply(ControlMessage answer)
    {
        ReportEvents();
        Flush();
        _reply.SendFrame(ControlMessageCodec.Encode(answer));
    }

    private void Enqueue(ControlMessage message) => _outbox.Add(message);

    private void Flush()
    {
        var offset = 0;
        while (offset < _outbox.Count)
        {
            var count = Math.Min(MaxFramesPerBatch, _outbox.Count - offset);
            var frames = new NetMQMessage(count);
            for (var i = 0; i < count; i++)
            {
                var message = _outbox[offset + i];
                if (!string.IsNullOrEmpty(_options.AuthToken))
                {
                    message[AuthTokenField] = _options.AuthToken;
                }
                frames.Append(ControlMessageCodec.Encode(message));
            }
            if (!_push.TrySendMultipartMessage(TimeSpan.FromSeconds(1), frames))
            {
                break;   // controller unreachable and the queue full: keep the rest for the next round
            }
            offset += count;
        }
        _outbox.RemoveRange(0, offset);
        if (_outbox.Count > 10_000)
        {
            _outbox.RemoveRange(0, _outbox.Count - 10_000);   // bounded while the controller is away
        }
    }

    private static int BindFixed(ResponseSocket socket, string host, int port)
    {
        socket.Bind($"tcp://{host}:{port}");
        return port;
    }

    private static string GuessHost(string pullUrl)
    {
        if (ControllerWorkerOptions.IsLoopback(pullUrl))
        {
            return "127.0.0.1";
        }
        foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
        {
            if (nic.OperationalStatus != OperationalStatus.Up || nic.NetworkInterfaceType == NetworkInterfaceType.Loopback)
            {
                continue;
            }
            foreach (var unicast in nic.GetIPProperties().UnicastAddresses)
            {
                if (unicast.Address.AddressFamily == AddressFamily.InterNetwork)
                {
                    return unicast.Address.ToString();
                }
            }
        }
        return "127.0.0.1";
    }

    private static long ToTicks(TimeSpan span) => (long)(span.TotalSeconds * Stopwatch.Frequency);
}
