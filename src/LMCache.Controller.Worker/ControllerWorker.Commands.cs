using System.Security.Cryptography;
using System.Text;
using LMCache.Controller.Protocol;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Serde.CacheGen;
using LMCache.Storage;
using LMCache.Storage.Remote;

namespace LMCache.Controller.Worker;

/// <summary>The controller's requests: clear, pin, move, load, compress/decompress, health, list/remove/pin chunks.</summary>
public sealed partial class ControllerWorker
{
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
        var token = request.GetStringOrNull(AuthTokenField);
        request.Fields.Remove(AuthTokenField);
        if (!string.IsNullOrEmpty(_options.AuthToken) && !TokenMatches(token, _options.AuthToken))
        {
            WorkerLog.Unauthenticated(_logger, request.Type);
            return Error("Unauthorized: this worker requires the controller's auth token.");
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

    /// <summary>Whether <paramref name="presented"/> is <paramref name="expected"/>, compared in constant time.</summary>
    private static bool TokenMatches(string? presented, string expected) =>
        presented is not null && CryptographicOperations.FixedTimeEquals(
            SHA256.HashData(Encoding.UTF8.GetBytes(presented)), SHA256.HashData(Encoding.UTF8.GetBytes(expected)));

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
            foreach (var entry in tier.Snapshot())
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
                pinnedAny |= tier is IPinnableBackend pinnable && pinnable.Pin(key);
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
        IStorageBackend target = viaRemote ? RemoteTier() : SingleTier(targetLocation);
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
            if (tier is IPinnableBackend pinnable)
            {
                foreach (var key in repin)
                {
                    pinnable.Pin(key);
                }
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
    private List<(CacheEngineKey Key, bool PrefixOnly)> SelectKeys(IListableBackend tier, int[] tokens, bool? compressed) =>
        tokens.Length > 0
            ? [.. _engine.GetChunkKeys(tokens).Select(c => (c.Key, true))]
            : [.. tier.Snapshot()
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

    private static bool IsPinned(IStorageBackend tier, CacheEngineKey key) => tier is IPinnableBackend pinnable && pinnable.IsPinned(key);

    /// <summary>The remote tier, found by its name (the original's location string): only its storage contract is used.</summary>
    private IStorageBackend RemoteTier() =>
        _engine.Storage.Find(RemoteBackend.BackendName)
        ?? throw new ArgumentException($"Instance '{InstanceId}' has no remote tier (remote_url): moving chunks to another instance goes through a remote store both instances share.");

    private IListableBackend SingleTier(string location) =>
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
            foreach (var entry in tier.Snapshot())
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
            foreach (var tier in tiers.OfType<IPinnableBackend>())
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
    private List<IListableBackend> TargetTiers(string? location)
    {
        var listable = _engine.Storage.Backends.OfType<IListableBackend>().ToList();
        if (string.IsNullOrEmpty(location) || string.Equals(location, "all", StringComparison.OrdinalIgnoreCase))
        {
            return listable;
        }
        var tier = listable.Find(b => string.Equals(b.Name, location, StringComparison.OrdinalIgnoreCase));
        return tier is null
            ? throw new ArgumentException($"Location '{location}' is not a tier of this instance; it has {string.Join(", ", listable.Select(b => b.Name))}.")
            : [tier];
    }

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

    private static ControlMessage Error(string message) => new ControlMessage(MessageTypes.Error).With("error", message);
}
