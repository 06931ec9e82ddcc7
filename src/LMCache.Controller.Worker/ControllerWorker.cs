using System.Diagnostics;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using LMCache.Core.Keys;
using LMCache.Engine;
using LMCache.Storage;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.LocalDisk;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using NetMQ;
using NetMQ.Sockets;

namespace LMCache.Controller.Worker;

/// <summary>
/// The controller's agent inside one engine rank (the original's <c>LMCacheWorker</c>): pushes <c>RegisterMsg</c> on
/// start and <c>DeRegisterMsg</c> on dispose, heartbeats, admissions and evictions per tier, and engine/tier counters to
/// the controller's pull socket; answers control requests (clear, pin, health, list/remove/pin chunks) on its own
/// reply socket by acting on the engine's <see cref="StorageManager"/>.
/// </summary>
/// <remarks>
/// <para>One background thread owns both ZeroMQ sockets (they are not thread-safe); control operations run on it one at
/// a time, as the original's single REP socket does.</para>
/// <para>Admissions and evictions are found by comparing each tier's snapshot with the previous one every
/// <see cref="ControllerWorkerOptions.ScanInterval"/> (and right after every control operation): the tiers have no
/// notification hook. The remote tier cannot be listed, so it is not reported.</para>
/// </remarks>
public sealed class ControllerWorker : IAsyncDisposable
{
    private const int MaxFramesPerBatch = 50;

    private readonly LMCacheEngine _engine;
    private readonly ControllerWorkerOptions _options;
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly PushSocket _push;
    private readonly ResponseSocket _reply;
    private readonly Dictionary<string, Dictionary<string, SeenChunk>> _reported = new(StringComparer.Ordinal);
    private readonly List<ControlMessage> _outbox = [];
    private readonly long _registeredAt;
    private volatile bool _stopping;
    private bool _sendDeregister = true;
    private int _disposed;

    private ControllerWorker(LMCacheEngine engine, ControllerWorkerOptions options, ILogger logger)
    {
        _engine = engine;
        _options = options;
        _logger = logger;
        WorkerId = engine.Scope.WorkerId;
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

    /// <summary>Starts a worker for <paramref name="engine"/>; it registers at once. Dispose it before the engine.</summary>
    public static ControllerWorker Start(LMCacheEngine engine, ControllerWorkerOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrWhiteSpace(options.PullUrl))
        {
            throw new ArgumentException("PullUrl is required (the controller's pull endpoint, host:port).", nameof(options));
        }
        var worker = new ControllerWorker(engine, options, (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger<ControllerWorker>());
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

    /// <summary>Deregisters and closes the sockets.</summary>
    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _stopping = true;
            _thread.Join();
            _push.Dispose();
            _reply.Dispose();
        }
        return ValueTask.CompletedTask;
    }

    /// <summary>Stops without deregistering, as a crashed engine would (tests of heartbeat timeouts).</summary>
    internal ValueTask AbandonAsync()
    {
        _sendDeregister = false;
        return DisposeAsync();
    }

    private void Run()
    {
        var nextScan = 0L;
        var nextStats = 0L;
        var nextHeartbeat = _options.HeartbeatInterval is null ? long.MaxValue : Stopwatch.GetTimestamp() + ToTicks(_options.HeartbeatDelay);
        Enqueue(Identity(MessageTypes.Register).With("registration_info", RegistrationInfo()));
        while (!_stopping)
        {
            try
            {
                if (_reply.TryReceiveFrameBytes(TimeSpan.FromMilliseconds(50), out var request))
                {
                    var answer = Handle(request);
                    _reply.SendFrame(ControlMessageCodec.Encode(answer));
                }
                var now = Stopwatch.GetTimestamp();
                if (now >= nextScan)
                {
                    Scan();
                    nextScan = now + ToTicks(_options.ScanInterval);
                }
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

    private ControlMessage Handle(byte[] frame)
    {
        ControlMessage request;
        try
        {
            request = ControlMessageCodec.Decode(frame);
        }
        catch (FormatException ex)
        {
            return Error(ex.Message);
        }
        try
        {
            var reply = request.Type switch
            {
                MessageTypes.ClearWorker => Clear(request),
                MessageTypes.PinWorker => PinTokens(request),
                MessageTypes.MoveWorker => Move(request),
                MessageTypes.HealthWorker => Health(),
                MessageTypes.ListChunksWorker => ListChunks(request),
                MessageTypes.RemoveChunksWorker => RemoveChunks(request),
                MessageTypes.PinChunksWorker => PinChunks(request),
                _ => Error($"Unknown request type '{request.Type}'."),
            };
            Scan();   // report what the operation changed before the controller acts on the reply
            Flush();
            return reply;
        }
        catch (Exception ex)
        {
            // Every request gets a reply (a REP socket that does not answer is stuck), and a failure is an ErrorMsg.
            WorkerLog.RequestFailed(_logger, request.Type, ex.Message);
            return Error(ex.Message);
        }
    }

    private ControlMessage Clear(ControlMessage request)
    {
        var locations = TargetTiers(request.GetStringOrNull("location"));
        var tokens = 0L;
        foreach (var tier in locations)
        {
            foreach (var (key, bytes, pinned) in Snapshot(tier))
            {
                if (!pinned)
                {
                    tokens += TokensOf(tier, key, bytes);
                }
            }
        }
        _engine.Storage.ClearAsync([.. locations.Select(t => t.Name)]).AsTask().GetAwaiter().GetResult();
        return new ControlMessage(MessageTypes.ClearWorkerRet).With("num_tokens", tokens);
    }

    private ControlMessage PinTokens(ControlMessage request)
    {
        var tiers = TargetTiers(request.GetStringOrNull("location"));
        var tokens = request.GetInt32Array("tokens");
        var pinnedTokens = 0;
        foreach (var (chunk, key) in _engine.GetChunkKeys(tokens))
        {
            var pinnedAny = false;
            foreach (var tier in tiers)
            {
                pinnedAny |= tier.Pin(key);
            }
            if (!pinnedAny)
            {
                break;
            }
            pinnedTokens = chunk.End;
        }
        return new ControlMessage(MessageTypes.PinWorkerRet).With("num_tokens", pinnedTokens);
    }

    /// <summary>
    /// Moves (or copies) chunks between two tiers of this instance: the cached prefix of <c>tokens</c>, or every chunk
    /// of the source tier when <c>tokens</c> is empty. <c>new_position</c> is <c>[distributed_url, location]</c> as in
    /// the original; a different <c>distributed_url</c> (another instance) needs a P2P transport this worker lacks.
    /// </summary>
    private ControlMessage Move(ControlMessage request)
    {
        var source = SingleTier(request.GetString("old_position"));
        var newPosition = request.GetListOrEmpty("new_position");
        if (newPosition.Count != 2 || newPosition[1] is not string targetLocation)
        {
            throw new FormatException("new_position must be [distributed_url, location].");
        }
        if (newPosition[0] is string url && url.Length > 0 && url != _options.DistributedUrl)
        {
            throw new ArgumentException($"Moving to another instance ({url}) needs a P2P transport, which this worker does not have.");
        }
        var target = SingleTier(targetLocation);
        if (ReferenceEquals(source, target))
        {
            throw new ArgumentException($"Source and target are the same tier ({source.Name}).");
        }
        var copy = request.GetBoolOrDefault("copy", false);
        var tokens = request.GetInt32Array("tokens");
        var keys = tokens.Length > 0
            ? [.. _engine.GetChunkKeys(tokens).Select(c => (c.Key, (long)c.Chunk.Length, true))]
            : Snapshot(source).Select(e => (e.Key, TokensOf(source, e.Key, e.Bytes), false)).ToList();
        var moved = new List<CacheEngineKey>();
        var movedTokens = 0L;
        foreach (var (key, length, prefixOnly) in keys)
        {
            var memoryObject = source.GetAsync(key).AsTask().GetAwaiter().GetResult();
            if (memoryObject is null)
            {
                if (prefixOnly)
                {
                    break;   // a token prefix ends at its first missing chunk
                }
                continue;
            }
            try
            {
                target.SubmitPut(key, memoryObject);
            }
            finally
            {
                memoryObject.Release();
            }
            moved.Add(key);
            movedTokens += length;
        }
        target.FlushAsync().GetAwaiter().GetResult();
        if (!copy)
        {
            foreach (var key in moved)
            {
                source.RemoveAsync(key).AsTask().GetAwaiter().GetResult();
            }
        }
        return new ControlMessage(MessageTypes.MoveWorkerRet).With("num_tokens", movedTokens);
    }

    private IStorageBackend SingleTier(string location) =>
        string.Equals(location, "all", StringComparison.OrdinalIgnoreCase)
            ? throw new ArgumentException("A move needs one source and one target tier, not \"all\".")
            : TargetTiers(location)[0];

    private ControlMessage Health()
    {
        // The original's memcheck: the CPU pool's accounting must be consistent.
        var cpu = _engine.Storage.Cpu;
        var healthy = cpu.Used >= 0 && cpu.Used <= cpu.Capacity && cpu.OutstandingObjects >= 0;
        return new ControlMessage(MessageTypes.HealthWorkerRet).With("error_code", healthy ? 0 : -1);
    }

    private ControlMessage ListChunks(ControlMessage request)
    {
        var chunks = new List<object?>();
        foreach (var tier in TargetTiers(request.GetStringOrNull("location")))
        {
            var seen = _reported.GetValueOrDefault(tier.Name);
            foreach (var (key, bytes, pinned) in Snapshot(tier))
            {
                var text = key.ToString();
                var info = seen?.GetValueOrDefault(text);
                chunks.Add(new Dictionary<string, object?>
                {
                    ["key"] = text,
                    ["location"] = tier.Name,
                    ["size"] = bytes,
                    ["num_tokens"] = TokensOf(tier, key, bytes),
                    ["pinned"] = pinned,
                    ["admitted_at"] = info?.AdmittedAt ?? UnixNow(),
                });
            }
        }
        return new ControlMessage(MessageTypes.ListChunksWorkerRet).With("chunks", chunks);
    }

    private ControlMessage RemoveChunks(ControlMessage request)
    {
        var tiers = TargetTiers(request.GetStringOrNull("location"));
        var removed = 0;
        foreach (var text in request.GetStringArray("keys"))
        {
            var key = ParseKey(text);
            foreach (var tier in tiers)
            {
                if (tier.RemoveAsync(key).AsTask().GetAwaiter().GetResult())
                {
                    removed++;
                }
            }
        }
        return new ControlMessage(MessageTypes.RemoveChunksWorkerRet).With("num_chunks", removed);
    }

    private ControlMessage PinChunks(ControlMessage request)
    {
        var tiers = TargetTiers(request.GetStringOrNull("location"));
        var unpin = request.GetBoolOrDefault("unpin", false);
        var changed = 0;
        foreach (var text in request.GetStringArray("keys"))
        {
            var key = ParseKey(text);
            foreach (var tier in tiers)
            {
                if (unpin ? tier.Unpin(key) : tier.Pin(key))
                {
                    changed++;
                }
            }
        }
        return new ControlMessage(MessageTypes.PinChunksWorkerRet).With("num_chunks", changed);
    }

    private static CacheEngineKey ParseKey(string text) =>
        CacheEngineKey.TryParse(text, out var key, out var error) ? key : throw new FormatException($"Bad chunk key '{text}': {error}");

    /// <summary>The listable tiers named by <paramref name="location"/> (all of them when null, empty or "all").</summary>
    private List<IStorageBackend> TargetTiers(string? location)
    {
        var listable = _engine.Storage.Backends.Where(b => b is LocalCpuBackend or LocalDiskBackend).ToList();
        if (string.IsNullOrEmpty(location) || string.Equals(location, "all", StringComparison.OrdinalIgnoreCase))
        {
            return listable;
        }
        var tier = listable.Find(b => string.Equals(b.Name, location, StringComparison.OrdinalIgnoreCase));
        return tier is null
            ? throw new ArgumentException($"Location '{location}' is not a tier of this instance; it has {string.Join(", ", listable.Select(b => b.Name))}.")
            : [tier];
    }

    private static IReadOnlyList<(CacheEngineKey Key, long Bytes, bool Pinned)> Snapshot(IStorageBackend tier) => tier switch
    {
        LocalCpuBackend cpu => cpu.Snapshot(),
        LocalDiskBackend disk => disk.Snapshot(),
        _ => [],
    };

    private long TokensOf(IStorageBackend tier, CacheEngineKey key, long bytes)
    {
        // CPU objects are exactly tokens × bytes-per-token; disk files add a header, so round down.
        _ = key;
        var perToken = _engine.Layout.BytesPerToken;
        var tokens = bytes / perToken;
        return tier is LocalCpuBackend ? tokens : Math.Min(tokens, _engine.Options.ChunkSize);
    }

    private void Scan()
    {
        var now = UnixNow();
        foreach (var tier in _engine.Storage.Backends)
        {
            if (tier is not (LocalCpuBackend or LocalDiskBackend))
            {
                continue;
            }
            if (!_reported.TryGetValue(tier.Name, out var previous))
            {
                previous = new Dictionary<string, SeenChunk>(StringComparer.Ordinal);
                _reported[tier.Name] = previous;
            }
            var current = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (key, _, _) in Snapshot(tier))
            {
                var text = key.ToString();
                current.Add(text);
                if (!previous.ContainsKey(text))
                {
                    previous[text] = new SeenChunk(now);
                    Enqueue(KvMessage(MessageTypes.KvAdmit, text, tier.Name));
                }
            }
            foreach (var gone in previous.Keys.Where(k => !current.Contains(k)).ToList())
            {
                previous.Remove(gone);
                Enqueue(KvMessage(MessageTypes.KvEvict, gone, tier.Name));
            }
        }
    }

    private ControlMessage KvMessage(string type, string key, string location) =>
        new ControlMessage(type).With("instance_id", InstanceId).With("worker_id", WorkerId).With("key", key).With("location", location);

    private ControlMessage Identity(string type) =>
        new ControlMessage(type)
            .With("instance_id", InstanceId)
            .With("worker_id", WorkerId)
            .With("ip", Host)
            .With("port", Port)
            .With("distributed_url", _options.DistributedUrl);

    /// <summary>Ours: what the controller needs to hash tokens exactly as this engine does, and the tiers it has.</summary>
    private Dictionary<string, object?> RegistrationInfo()
    {
        var scope = _engine.Scope;
        return new Dictionary<string, object?>
        {
            ["model_name"] = scope.ModelName,
            ["key_format"] = scope.Format,
            ["world_size"] = scope.WorldSize,
            ["kv_dtype"] = scope.DType,
            ["chunk_size"] = _engine.Options.ChunkSize,
            ["save_unfull_chunk"] = _engine.Options.SaveUnfullChunk,
            ["hash_algorithm"] = Sha256CborChunkHasher.AlgorithmName,
            ["hash_seed"] = _engine.Options.HashSeed,
            ["uptime_seconds"] = Stopwatch.GetElapsedTime(_registeredAt).TotalSeconds,
        };
    }

    private ControlMessage Stats()
    {
        var statistics = _engine.Statistics;
        var tiers = new List<object?>();
        foreach (var tier in _engine.Storage.Backends)
        {
            var s = tier.Statistics;
            tiers.Add(new Dictionary<string, object?>
            {
                ["location"] = tier.Name,
                ["capacity_bytes"] = tier is LocalCpuBackend cpu ? cpu.Capacity : s.CapacityBytes,
                ["used_bytes"] = tier is LocalCpuBackend cpuUsed ? cpuUsed.Used : s.UsedBytes,
                ["entries"] = s.Entries,
                ["hits"] = s.Hits,
                ["misses"] = s.Misses,
                ["bytes_read"] = s.BytesRead,
                ["puts"] = s.Puts,
                ["bytes_written"] = s.BytesWritten,
                ["puts_dropped"] = s.PutsDropped,
                ["evictions"] = s.Evictions,
                ["errors"] = s.Errors,
            });
        }
        return Identity(MessageTypes.WorkerStats)
            .With("model_name", _engine.Scope.ModelName)
            .With("num_lookup_requests", statistics.LookupRequests)
            .With("num_retrieve_requests", statistics.RetrieveRequests)
            .With("num_store_requests", statistics.StoreRequests)
            .With("num_requested_tokens", statistics.RequestedTokens)
            .With("num_hit_tokens", statistics.HitTokens)
            .With("num_stored_tokens", statistics.StoredTokens)
            .With("tiers", tiers);
    }

    private static ControlMessage Error(string message) => new ControlMessage(MessageTypes.Error).With("error", message);

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
                frames.Append(ControlMessageCodec.Encode(_outbox[offset + i]));
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

    private static double UnixNow() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;

    /// <summary>When the worker first saw a chunk in a tier (epoch seconds): the tiers keep no access times to report.</summary>
    private sealed record SeenChunk(double AdmittedAt);
}
