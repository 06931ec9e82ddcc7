using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Serde.CacheGen;
using LMCache.Storage;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.LocalDisk;
using LMCache.Storage.Remote;
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
/// <para>Admissions and evictions come from an <see cref="IStorageEventSink"/> registered on the storage manager: the tiers
/// raise them as they happen, this worker queues them and pushes <c>KVAdmitMsg</c>/<c>KVEvictMsg</c> from its thread
/// (at most ~50 ms later). A snapshot of the tiers is reported once at start, and again if the queue ever overflows. The
/// remote tier cannot be listed (other writers share it), so it is not reported.</para>
/// <para>Compressed chunks: <c>/compress</c> re-encodes chunks of a tier with the cachegen serde in place (the tier then
/// holds a <c>BINARY_BUFFER</c> object under the same key); the worker sets <see cref="LMCacheEngine.CompressedChunkSerde"/>
/// so retrieves decode them, and <c>/decompress</c> turns them back into raw chunks.</para>
/// </remarks>
public sealed class ControllerWorker : IAsyncDisposable
{
    private const int MaxFramesPerBatch = 50;
    private const int MaxQueuedEvents = 100_000;

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

    /// <summary>Sends a reply after pushing what the operation changed, so the controller sees the changes first.</summary>
    private void Reply(ControlMessage answer)
    {
        ReportEvents();
        Flush();
        _reply.SendFrame(ControlMessageCodec.Encode(answer));
    }

    /// <summary>Answers a short request at once (returns it) or starts a long one on a pool thread (returns null).</summary>
    private ControlMessage? Handle(byte[] frame)
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
        Func<ControlMessage, Task<ControlMessage>>? longOperation = request.Type switch
        {
            MessageTypes.ClearWorker => ClearAsync,
            MessageTypes.MoveWorker => MoveAsync,
            MessageTypes.CompressWorker => CompressAsync,
            MessageTypes.DecompressWorker => DecompressAsync,
            MessageTypes.LoadChunksWorker => LoadChunksAsync,
            MessageTypes.RemoveChunksWorker => RemoveChunksAsync,
            _ => null,
        };
        if (longOperation is not null)
        {
            _running = Task.Run(async () =>
            {
                var reply = await ExecuteAsync(longOperation, request).ConfigureAwait(false);
                Volatile.Write(ref _finishedReply, reply);
                _operationFinished.Set();
            });
            return null;
        }
        Func<ControlMessage, ControlMessage> shortOperation = request.Type switch
        {
            MessageTypes.PinWorker => PinTokens,
            MessageTypes.HealthWorker => _ => Health(),
            MessageTypes.ListChunksWorker => ListChunks,
            MessageTypes.PinChunksWorker => PinChunks,
            _ => r => Error($"Unknown request type '{r.Type}'."),
        };
        return Execute(shortOperation, request);
    }

    private ControlMessage Execute(Func<ControlMessage, ControlMessage> operation, ControlMessage request)
    {
        try
        {
            return operation(request);
        }
        catch (Exception ex)
        {
            // Every request gets a reply (a REP socket that does not answer is stuck), and a failure is an ErrorMsg.
            WorkerLog.RequestFailed(_logger, request.Type, ex.Message);
            return Error(ex.Message);
        }
    }

    private async Task<ControlMessage> ExecuteAsync(Func<ControlMessage, Task<ControlMessage>> operation, ControlMessage request)
    {
        try
        {
            return await operation(request).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            WorkerLog.RequestFailed(_logger, request.Type, ex.Message);
            return Error(ex.Message);
        }
    }

    private async Task<ControlMessage> ClearAsync(ControlMessage request)
    {
        var locations = TargetTiers(request.GetStringOrNull("location"));
        var tokens = 0L;
        foreach (var tier in locations)
        {
            foreach (var entry in Snapshot(tier))
            {
                if (!entry.Pinned)
                {
                    tokens += TokensOf(entry);
                }
            }
        }
        await _engine.Storage.ClearAsync([.. locations.Select(t => t.Name)]).ConfigureAwait(false);
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
    /// Moves (or copies) chunks: the cached prefix of <c>tokens</c>, or every chunk of the source tier when <c>tokens</c>
    /// is empty. <c>new_position</c> is <c>[distributed_url, location]</c> as in the original. Between two tiers of this
    /// instance it moves directly; with <c>via_remote: true</c> (ours: the controller's move to another instance) it
    /// writes the chunks to this instance's remote tier, waits until the writes finished, and replies with their
    /// <c>keys</c> (the source copies stay; the controller removes them after the destination loaded them).
    /// </summary>
    private async Task<ControlMessage> MoveAsync(ControlMessage request)
    {
        var source = SingleTier(request.GetString("old_position"));
        var newPosition = request.GetListOrEmpty("new_position");
        if (newPosition.Count != 2 || newPosition[1] is not string targetLocation)
        {
            throw new FormatException("new_position must be [distributed_url, location].");
        }
        var viaRemote = request.GetBoolOrDefault("via_remote", false);
        var target = viaRemote ? RemoteTier() : SingleTier(targetLocation);
        if (ReferenceEquals(source, target))
        {
            throw new ArgumentException($"Source and target are the same tier ({source.Name}).");
        }
        var copy = viaRemote || request.GetBoolOrDefault("copy", false);
        var moved = new List<CacheEngineKey>();
        var movedTokens = 0L;
        foreach (var (key, prefixOnly) in SelectKeys(source, request.GetInt32Array("tokens"), compressed: null))
        {
            var memoryObject = await source.GetAsync(key).ConfigureAwait(false);
            if (viaRemote && memoryObject is { Metadata.Format: MemoryFormat.BinaryBuffer })
            {
                // The remote tier stores raw chunks through its own serde: decode a compressed one first.
                var decoded = Decode(memoryObject);
                memoryObject.Release();
                memoryObject = decoded;
            }
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
                movedTokens += TokensOf(key, memoryObject);
            }
            finally
            {
                memoryObject.Release();
            }
            moved.Add(key);
        }
        await target.FlushAsync().ConfigureAwait(false);
        if (!copy)
        {
            foreach (var key in moved)
            {
                await source.RemoveAsync(key).ConfigureAwait(false);
            }
        }
        var reply = new ControlMessage(MessageTypes.MoveWorkerRet).With("num_tokens", movedTokens);
        return viaRemote ? reply.With("keys", moved.Select(k => (object?)k.ToString()).ToList()) : reply;
    }

    /// <summary>
    /// Ours, the destination half of a move to another instance: reads <c>keys</c> from this instance's remote tier (where
    /// the source instance wrote them) and stores them in tier <c>location</c>; with <c>prefix: true</c> it stops at the
    /// first key the remote does not have. Chunks whose layout is not this engine's are skipped.
    /// </summary>
    private async Task<ControlMessage> LoadChunksAsync(ControlMessage request)
    {
        var remote = RemoteTier();
        var target = SingleTier(request.GetString("location"));
        var prefix = request.GetBoolOrDefault("prefix", false);
        var tokens = 0L;
        var loaded = new List<object?>();
        foreach (var text in request.GetStringArray("keys"))
        {
            var key = ParseKey(text);
            var memoryObject = await remote.GetAsync(key).ConfigureAwait(false);
            if (memoryObject is not null && !IsChunkOfThisEngine(memoryObject.Metadata))
            {
                WorkerLog.RequestFailed(_logger, MessageTypes.LoadChunksWorker, $"{text}: {memoryObject.Metadata} is not a chunk of this engine's layout; skipped");
                memoryObject.Release();
                memoryObject = null;
            }
            if (memoryObject is null)
            {
                if (prefix)
                {
                    break;
                }
                continue;
            }
            try
            {
                target.SubmitPut(key, memoryObject);
                tokens += memoryObject.Metadata.TokenCount;
                loaded.Add(text);
            }
            finally
            {
                memoryObject.Release();
            }
        }
        await target.FlushAsync().ConfigureAwait(false);
        return new ControlMessage(MessageTypes.LoadChunksWorkerRet).With("num_tokens", tokens).With("num_chunks", loaded.Count).With("keys", loaded);
    }

    /// <summary>
    /// Re-encodes chunks of a tier with cachegen in place (the original's compress: look up, get, serialize, remove the
    /// original, put the compressed one); pins are kept. Replies <c>num_tokens</c> plus ours: <c>num_chunks</c>,
    /// <c>original_bytes</c> and <c>compressed_bytes</c> of what was re-encoded.
    /// </summary>
    private Task<ControlMessage> CompressAsync(ControlMessage request) =>
        ReencodeAsync(request, compress: true, MessageTypes.CompressWorkerRet);

    /// <summary>Decodes compressed chunks of a tier back into raw chunks in place; the reply's fields are those of compress.</summary>
    private Task<ControlMessage> DecompressAsync(ControlMessage request) =>
        ReencodeAsync(request, compress: false, MessageTypes.DecompressWorkerRet);

    private async Task<ControlMessage> ReencodeAsync(ControlMessage request, bool compress, string replyType)
    {
        var method = request.GetStringOrNull("method") ?? CacheGenSerde.SerdeName;
        if (!string.Equals(method, CacheGenSerde.SerdeName, StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException($"method '{method}' is not supported; the only compression method is '{CacheGenSerde.SerdeName}'.");
        }
        var serde = _serde.Value;
        var tokens = request.GetInt32Array("tokens");
        long numTokens = 0, rawBytes = 0, compressedBytes = 0;
        var chunks = 0;
        foreach (var tier in TargetTiers(request.GetStringOrNull("location")))
        {
            var repin = new List<CacheEngineKey>();
            foreach (var (key, prefixOnly) in SelectKeys(tier, tokens, compressed: !compress))
            {
                var original = await tier.GetAsync(key).ConfigureAwait(false);
                if (original is null)
                {
                    if (prefixOnly)
                    {
                        break;
                    }
                    continue;
                }
                try
                {
                    var isCompressed = original.Metadata.Format == MemoryFormat.BinaryBuffer;
                    if (isCompressed == compress)
                    {
                        continue;   // already in the wanted form (a prefix may mix both)
                    }
                    using var replacement = compress ? serde.Serialize(original, _engine.Storage.Cpu) : Decode(original);
                    if (replacement is null || (!compress && !IsChunkOfThisEngine(replacement.Metadata)))
                    {
                        continue;   // unsupported layout, no memory, or an undecodable blob: leave the chunk as it is
                    }
                    var chunkTokens = compress ? original.Metadata.TokenCount : replacement.Metadata.TokenCount;
                    var pinned = IsPinned(tier, key);
                    await tier.RemoveAsync(key).ConfigureAwait(false);
                    if (compress)
                    {
                        _compressedTokens[key] = chunkTokens;
                    }
                    tier.SubmitPut(key, replacement);
                    if (pinned)
                    {
                        repin.Add(key);
                    }
                    numTokens += chunkTokens;
                    chunks++;
                    rawBytes += compress ? original.Length : replacement.Length;
                    compressedBytes += compress ? replacement.Length : original.Length;
                }
                finally
                {
                    original.Release();
                }
            }
            await tier.FlushAsync().ConfigureAwait(false);
            foreach (var key in repin)
            {
                tier.Pin(key);
            }
        }
        return new ControlMessage(replyType)
            .With("num_tokens", numTokens)
            .With("num_chunks", chunks)
            .With("original_bytes", rawBytes)
            .With("compressed_bytes", compressedBytes);
    }

    /// <summary>
    /// The keys an operation walks: the chunks of <paramref name="tokens"/> in order (a prefix: the walk stops at the
    /// first missing one), or, with no tokens, every entry of <paramref name="tier"/> (optionally only compressed or only
    /// raw ones).
    /// </summary>
    private List<(CacheEngineKey Key, bool PrefixOnly)> SelectKeys(IStorageBackend tier, int[] tokens, bool? compressed) =>
        tokens.Length > 0
            ? [.. _engine.GetChunkKeys(tokens).Select(c => (c.Key, true))]
            : [.. Snapshot(tier)
                .Where(e => compressed is null || (e.Metadata.Format == MemoryFormat.BinaryBuffer) == compressed)
                .Select(e => (e.Key, false))];

    private MemoryObject? Decode(MemoryObject compressed)
    {
        var serde = _engine.CompressedChunkSerde ?? _serde.Value;
        return serde.Deserialize(compressed, _engine.Storage.Cpu);
    }

    private bool IsChunkOfThisEngine(MemoryObjectMetadata metadata) =>
        metadata.Format == MemoryFormat.KV2LTD && metadata.TokenCount is > 0 and var t && t <= _engine.Options.ChunkSize
        && metadata == _engine.Layout.ChunkMetadata(t);

    private static bool IsPinned(IStorageBackend tier, CacheEngineKey key) => tier switch
    {
        LocalCpuBackend cpu => cpu.IsPinned(key),
        LocalDiskBackend disk => disk.Snapshot().Any(e => e.Pinned && e.Key == key),
        _ => false,
    };

    private RemoteBackend RemoteTier() =>
        _engine.Storage.Backends.OfType<RemoteBackend>().FirstOrDefault()
        ?? throw new ArgumentException($"Instance '{InstanceId}' has no remote tier (remote_url): moving chunks to another instance goes through a remote store both instances share.");

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
            foreach (var entry in Snapshot(tier))
            {
                var text = entry.Key.ToString();
                var lastAccess = UnixTime(entry.LastAccess);
                chunks.Add(new Dictionary<string, object?>
                {
                    ["key"] = text,
                    ["location"] = tier.Name,
                    ["size"] = entry.Bytes,
                    ["num_tokens"] = TokensOf(entry),
                    ["pinned"] = entry.Pinned,
                    ["compressed"] = entry.Metadata.Format == MemoryFormat.BinaryBuffer,
                    ["admitted_at"] = seen is not null && seen.TryGetValue(text, out var admitted) ? admitted : lastAccess,
                    ["last_access"] = lastAccess,
                });
            }
        }
        return new ControlMessage(MessageTypes.ListChunksWorkerRet).With("chunks", chunks);
    }

    private async Task<ControlMessage> RemoveChunksAsync(ControlMessage request)
    {
        var tiers = TargetTiers(request.GetStringOrNull("location"));
        var removed = 0;
        foreach (var text in request.GetStringArray("keys"))
        {
            var key = ParseKey(text);
            foreach (var tier in tiers)
            {
                if (await tier.RemoveAsync(key).ConfigureAwait(false))
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

    private static IReadOnlyList<TierEntry> Snapshot(IStorageBackend tier) => tier switch
    {
        LocalCpuBackend cpu => cpu.Snapshot(),
        LocalDiskBackend disk => disk.Snapshot(),
        _ => [],
    };

    /// <summary>Tokens of a listed entry: from its layout, or for a compressed chunk what compress recorded (else a full chunk).</summary>
    private long TokensOf(in TierEntry entry) =>
        entry.Metadata.Format == MemoryFormat.BinaryBuffer
            ? _compressedTokens.TryGetValue(entry.Key, out var tokens) ? tokens : _engine.Options.ChunkSize
            : entry.Metadata.TokenCount;

    private long TokensOf(CacheEngineKey key, MemoryObject memoryObject)
    {
        if (memoryObject.Metadata.Format != MemoryFormat.BinaryBuffer)
        {
            return memoryObject.Metadata.TokenCount;
        }
        return CacheGenSerde.TryReadChunkMetadata(memoryObject.Span, out var metadata, out _) ? metadata.TokenCount
            : _compressedTokens.TryGetValue(key, out var tokens) ? tokens : _engine.Options.ChunkSize;
    }

    /// <summary>Pushes the admissions and evictions the tiers raised since the last call (or a full resync after an overflow).</summary>
    private void ReportEvents()
    {
        if (_events.Overflowed)
        {
            Resync();
            return;
        }
        while (_events.TryDequeue(out var e))
        {
            var keys = ReportedIn(e.Tier);
            var text = e.Key.ToString();
            if (e.Admitted)
            {
                if (keys.TryAdd(text, UnixNow()))
                {
                    Enqueue(KvMessage(MessageTypes.KvAdmit, text, e.Tier));
                }
            }
            else if (keys.Remove(text))
            {
                if (!_engine.Storage.Cpu.Contains(e.Key) && !_engine.Storage.Backends.OfType<LocalDiskBackend>().Any(d => d.Contains(e.Key)))
                {
                    _compressedTokens.TryRemove(e.Key, out _);   // gone from every tier: forget its token count
                }
                Enqueue(KvMessage(MessageTypes.KvEvict, text, e.Tier));
            }
        }
    }

    /// <summary>Compares each tier's snapshot with what was reported (at start, and after the event queue overflowed).</summary>
    private void Resync()
    {
        _events.Reset();   // events raised from here on are applied on top of this snapshot, in order
        var now = UnixNow();
        foreach (var tier in _engine.Storage.Backends)
        {
            if (tier is not (LocalCpuBackend or LocalDiskBackend))
            {
                continue;
            }
            var previous = ReportedIn(tier.Name);
            var current = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in Snapshot(tier))
            {
                var text = entry.Key.ToString();
                current.Add(text);
                if (previous.TryAdd(text, now))
                {
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

    private Dictionary<string, double> ReportedIn(string tier)
    {
        if (!_reported.TryGetValue(tier, out var keys))
        {
            keys = new Dictionary<string, double>(StringComparer.Ordinal);
            _reported[tier] = keys;
        }
        return keys;
    }

    /// <summary>One admission or eviction raised by a tier.</summary>
    private readonly record struct TierEvent(bool Admitted, string Tier, CacheEngineKey Key);

    /// <summary>
    /// The storage event sink: queues admissions and evictions for the worker thread (accesses are not reported: the
    /// tiers keep last-access times in their snapshots). Bounded: past <see cref="MaxQueuedEvents"/> it stops queueing
    /// and flags an overflow, which the worker repairs with a snapshot.
    /// </summary>
    private sealed class TierEventQueue : IStorageEventSink
    {
        private readonly ConcurrentQueue<TierEvent> _queue = new();
        private int _count;
        private volatile bool _overflowed;

        public bool Overflowed => _overflowed;

        public void OnAdmitted(string tier, in CacheEngineKey key, long bytes, MemoryFormat format) => Add(new TierEvent(true, tier, key));

        public void OnEvicted(string tier, in CacheEngineKey key, StorageRemovalReason reason) => Add(new TierEvent(false, tier, key));

        public void OnAccessed(string tier, in CacheEngineKey key)
        {
            // Last access is in the tiers' snapshots; nothing to queue on the read hot path.
        }

        public bool TryDequeue(out TierEvent e)
        {
            if (_queue.TryDequeue(out e))
            {
                Interlocked.Decrement(ref _count);
                return true;
            }
            return false;
        }

        public void Reset()
        {
            _overflowed = false;
            while (TryDequeue(out _))
            {
            }
        }

        private void Add(TierEvent e)
        {
            if (_overflowed)
            {
                return;
            }
            if (Interlocked.Increment(ref _count) > MaxQueuedEvents)
            {
                Interlocked.Decrement(ref _count);
                _overflowed = true;
                return;
            }
            _queue.Enqueue(e);
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

    private static double UnixTime(DateTimeOffset time) => time.ToUnixTimeMilliseconds() / 1000.0;
}
