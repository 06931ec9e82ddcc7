using System.IO.Hashing;
using System.Net;
using System.Runtime.CompilerServices;
using LMCache.Core.Diagnostics;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace LMCache.Connectors.Redis;

/// <summary>
/// The remote connector for Redis, Redis Sentinel, Redis Cluster and Valkey, in the original's layout: per chunk,
/// <c>key + "kv_bytes"</c> holds the payload and <c>key + "metadata"</c> the 28-byte metadata (plus our checksum
/// trailer), payload written first.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>Creating it never blocks and never fails on an unreachable server: it connects in the background, and every
/// operation throws (a miss for the <see cref="RemoteBackend"/>) until the connection is up.</item>
/// <item>Lookups pipeline one <c>EXISTS</c> per key in one batch (one round trip; on a cluster one per node, in
/// parallel); reads pipeline the metadata <c>GET</c>s of every key (with the first payload) in one batch, grouped per
/// node by the client, then pipeline the payload <c>GET</c>s within <see cref="RedisConnectorOptions.ReadWindowBytes"/>,
/// and copy each payload once from a pooled lease into the allocator's object.</item>
/// <item>Every read validates the metadata against the payload and the key, and verifies the checksum when present; an
/// invalid or half-present pair is a miss and is deleted.</item>
/// </list>
/// </remarks>
public sealed class RedisConnector : IRemoteConnector
{
    /// <summary>Suffix of the payload key (plain concatenation, as in the original).</summary>
    public const string PayloadSuffix = "kv_bytes";

    /// <summary>Suffix of the metadata key.</summary>
    public const string MetadataSuffix = "metadata";

    private const int ScanPageSize = 512;
    private const int CopyBlockBytes = 128 * 1024;

    [ThreadStatic]
    private static XxHash3? t_hasher;

    private readonly RedisUrl _url;
    private readonly RedisConnectorOptions _options;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly ChunkLeasePool _leasePool = new();
    private int _lastPayloadBytes;   // the size the next batch's first payload is claimed with (one model, one chunk size)
    private Task<ConnectionMultiplexer>? _connecting;
    private ConnectionMultiplexer? _multiplexer;
    private ConnectionMultiplexer? _sentinel;
    private long _nextAttemptTicks;
    private int _connectionDown;
    private int _authenticationReported;
    private bool _disposed;

    /// <summary>Creates the connector and starts connecting in the background.</summary>
    /// <param name="url">The parsed URL.</param>
    /// <param name="options">Timeouts and checksum policy.</param>
    /// <param name="logger">Logger; null for none.</param>
    public RedisConnector(RedisUrl url, RedisConnectorOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(url);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _url = url;
        _options = options;
        _logger = logger ?? NullLogger.Instance;
        _ = GetConnectingTaskAsync();
    }

    /// <inheritdoc />
    public string Description => _url.Redacted;

    /// <summary>The parsed URL.</summary>
    public RedisUrl Url => _url;

    /// <summary>The timeouts, checksum policy and read window this connector runs with.</summary>
    public RedisConnectorOptions Options => _options;

    /// <summary>
    /// The StackExchange.Redis database this connector talks to (connecting first if needed), for diagnostics and for
    /// the benchmark's client baseline. Reads through it bypass every check of this connector: never load KV with it.
    /// </summary>
    /// <exception cref="RedisConnectionException">The server cannot be reached.</exception>
    public ValueTask<IDatabase> GetClientDatabaseAsync(CancellationToken cancellationToken) => GetDatabaseAsync(cancellationToken);

    /// <summary>Opens a <see cref="RedisInfoProbe"/> on the current masters, with this connector's credentials and TLS settings.</summary>
    /// <exception cref="RedisConnectionException">The masters cannot be reached.</exception>
    public async Task<RedisInfoProbe> OpenInfoProbeAsync(CancellationToken cancellationToken)
    {
        var db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var config = CreateConfiguration(DistinctMasters(db.Multiplexer).Select(server => server.EndPoint), _url.User, _url.Password, _url.UseTls);
        config.AllowAdmin = true;
        config.AbortOnConnectFail = true;
        config.ClientName = "lmcache-info";
        config.CommandMap = CommandMap.Create(["SUBSCRIBE"], available: false);   // no subscription connection
        return new RedisInfoProbe(await ConnectionMultiplexer.ConnectAsync(config).WaitAsync(cancellationToken).ConfigureAwait(false));
    }

    /// <summary>Claims of payload reads into chunk memory not yet used or withdrawn (zero between reads).</summary>
    internal int PendingLeaseClaims => _leasePool.PendingClaims;

    /// <inheritdoc />
    public RemoteCapabilities Capabilities =>
        RemoteCapabilities.BatchedExists | RemoteCapabilities.BatchedGet | RemoteCapabilities.Ping | RemoteCapabilities.List | RemoteCapabilities.Remove;

    /// <summary>True once connected and while at least one server is reachable.</summary>
    public bool IsConnected => Volatile.Read(ref _multiplexer) is { IsConnected: true };

    /// <summary>The endpoint of the current master (standalone and Sentinel), or null when not connected.</summary>
    public EndPoint? CurrentMaster =>
        Volatile.Read(ref _multiplexer)?.GetServers().FirstOrDefault(s => s.IsConnected && !s.IsReplica)?.EndPoint;

    /// <summary>The payload key of <paramref name="keyString"/>.</summary>
    public static string PayloadKey(string keyString) => keyString + PayloadSuffix;

    /// <summary>The metadata key of <paramref name="keyString"/>.</summary>
    public static string MetadataKey(string keyString) => keyString + MetadataSuffix;

    /// <summary>
    /// Waits until the server answers a PING (for tools and tests). Wrong credentials throw
    /// <see cref="RedisAuthenticationException"/> at once; when <paramref name="cancellationToken"/> fires first, a
    /// <see cref="TimeoutException"/> carries the last connection error.
    /// </summary>
    public async Task WaitUntilConnectedAsync(CancellationToken cancellationToken)
    {
        Exception? last = null;
        while (true)
        {
            try
            {
                var db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
                await db.PingAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (RedisConnectionException ex) when (IsAuthenticationFailure(ex))
            {
                throw AuthenticationError(ex);
            }
            catch (Exception ex) when (ex is RedisException or TimeoutException && !cancellationToken.IsCancellationRequested)
            {
                last = ex;
            }
            catch (OperationCanceledException) when (last is not null)
            {
                throw new TimeoutException($"not connected ({Brief(last.Message)})", last);
            }
            try
            {
                await Task.Delay(100, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (last is not null)
            {
                throw new TimeoutException($"not connected ({Brief(last.Message)})", last);
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask<int> ExistsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken)
    {
        if (keys.IsEmpty)
        {
            return 0;
        }
        try
        {
            return await ExistsPrefixCoreAsync(keys, cancellationToken).ConfigureAwait(false);
        }
        catch (RedisConnectionException ex) when (IsAuthenticationFailure(ex))
        {
            throw AuthenticationError(ex);
        }
    }

    private async Task<int> ExistsPrefixCoreAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken)
    {
        var db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var tasks = new Task<bool>[keys.Length];
        var batch = db.CreateBatch();
        var span = keys.Span;
        for (var i = 0; i < tasks.Length; i++)
        {
            tasks[i] = batch.KeyExistsAsync(MetadataKey(span[i].ToString()));
        }
        batch.Execute();
        await Task.WhenAll(tasks).WaitAsync(cancellationToken).ConfigureAwait(false);
        for (var i = 0; i < tasks.Length; i++)
        {
            if (!await tasks[i].ConfigureAwait(false))
            {
                return i;
            }
        }
        return tasks.Length;
    }

    /// <inheritdoc />
    public async ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, IMemoryAllocator allocator, CancellationToken cancellationToken)
    {
        var one = new MemoryObject?[1];
        var count = await GetPrefixAsync(new[] { key }, one, allocator, cancellationToken).ConfigureAwait(false);
        return count == 1 ? one[0] : null;
    }

    /// <inheritdoc />
    public async ValueTask<int> GetPrefixAsync(
        ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, IMemoryAllocator allocator, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        if (keys.IsEmpty)
        {
            return 0;
        }
        if (destination.Length < keys.Length)
        {
            throw new ArgumentException("The destination is shorter than the key list.", nameof(destination));
        }
        IDatabase db;
        try
        {
            db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (RedisConnectionException ex) when (IsAuthenticationFailure(ex))
        {
            throw AuthenticationError(ex);
        }
        var n = keys.Length;
        var names = new string[n];
        var metadata = new Task<RedisValue>[n];
        var payloads = new Task<Lease<byte>?>?[n];
        var expected = new long[n];
        var claimedBytes = new int[n];   // the claim registered for each payload GET (ChunkLeasePool); 0 = none
        var batch = db.CreateBatch();
        for (var i = 0; i < n; i++)
        {
            names[i] = keys.Span[i].ToString();
            metadata[i] = batch.StringGetAsync(MetadataKey(names[i]));
        }
        // The first payload rides in the same batch, so a single-chunk read is one round trip. Its size is not known yet:
        // it is claimed with the size of the last payload read, which is right for every full chunk of a model.
        var guess = Volatile.Read(ref _lastPayloadBytes);
        claimedBytes[0] = guess > 0 && _leasePool.Expect(guess, allocator) ? guess : 0;
        payloads[0] = batch.StringGetLeaseAsync(PayloadKey(names[0]));
        batch.Execute();

        var count = 0;
        var consumed = 0;
        var owned = 0;
        var issued = 1;
        long inFlightBytes = 0;
        var window = _options.ReadWindowBytes;
        try
        {
            // Metadata values are tiny and their replies come first: one round trip tells how far the prefix can go
            // and how large each payload is.
            await Task.WhenAll(metadata).WaitAsync(cancellationToken).ConfigureAwait(false);
            var limit = n;
            for (var i = 0; i < n; i++)
            {
                var meta = await metadata[i].ConfigureAwait(false);
                if (meta.IsNull)
                {
                    limit = i;
                    break;
                }
                expected[i] = meta.Length() >= 4 ? Math.Max(0, System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(((byte[])meta!).AsSpan(0, 4))) : 0;
            }
            inFlightBytes = expected[0];

            // Payload GETs are pipelined within a byte window (and always one ahead of the one being copied): enough in
            // flight to keep the connection busy, few enough that large values reuse pooled buffers.
            void Issue()
            {
                while (issued < limit && (issued <= consumed + 1 || inFlightBytes + expected[issued] <= window))
                {
                    claimedBytes[issued] = expected[issued] <= int.MaxValue && _leasePool.Expect((int)expected[issued], allocator) ? (int)expected[issued] : 0;
                    payloads[issued] = db.StringGetLeaseAsync(PayloadKey(names[issued]));
                    inFlightBytes += expected[issued];
                    issued++;
                }
            }

            Issue();
            for (; consumed < Math.Max(limit, 1); consumed++)
            {
                var lease = await payloads[consumed]!.WaitAsync(cancellationToken).ConfigureAwait(false);
                owned = consumed + 1; // this lease is ours now: disposed below, not by the clean-up
                inFlightBytes -= expected[consumed];
                Issue();
                var meta = await metadata[consumed].ConfigureAwait(false);
                MemoryObject? item;
                using (lease)
                {
                    item = Materialize(db, keys.Span[consumed], names[consumed], meta, lease, allocator, out var usedClaim);
                    if (claimedBytes[consumed] > 0 && !usedClaim)
                    {
                        _leasePool.Withdraw(claimedBytes[consumed], allocator);   // the claim was not used for this lease
                    }
                    if (item is not null)
                    {
                        Volatile.Write(ref _lastPayloadBytes, item.Length);
                    }
                }
                if (item is null)
                {
                    consumed++;
                    return count;
                }
                destination.Span[consumed] = item;
                count++;
            }
            if (limit > 0 && limit < n)
            {
                // The prefix ends at a key without metadata; a payload left there (evicted metadata) is garbage.
                _ = db.KeyDeleteAsync(PayloadKey(names[limit]), CommandFlags.FireAndForget);
            }
            return count;
        }
        catch (Exception ex)
        {
            var output = destination.Span;
            for (var i = 0; i < count; i++)
            {
                output[i]?.Release();
                output[i] = null;
            }
            if (ex is RedisConnectionException connectionException && IsAuthenticationFailure(connectionException))
            {
                throw AuthenticationError(connectionException);
            }
            throw;
        }
        finally
        {
            // Leases issued but not consumed (after the first miss, or after a failure) still arrive: give them back.
            for (var i = owned; i < n; i++)
            {
                if (claimedBytes[i] > 0)
                {
                    _leasePool.Withdraw(claimedBytes[i], allocator);
                }
                _ = payloads[i]?.ContinueWith(static t =>
                {
                    if (t.IsCompletedSuccessfully)
                    {
                        t.Result?.Dispose();
                    }
                    else
                    {
                        _ = t.Exception;
                    }
                }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }
            foreach (var task in metadata)
            {
                _ = task.ContinueWith(static t => _ = t.Exception, CancellationToken.None,
                    TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// The payload <c>SET</c> is not abandoned on cancellation (the client may still be reading the caller's memory);
    /// it ends by itself within <see cref="RedisConnectorOptions.OperationTimeout"/>. With the checksum on, the payload
    /// is sent first and the metadata follows on the same connection, pipelined. Without it (the original's exact
    /// layout), a standalone server or Sentinel master gets both keys in one atomic <c>MSET</c>. On a cluster the two keys
    /// may live on different nodes: the metadata is written only after the payload was acknowledged.
    /// </remarks>
    public async ValueTask PutAsync(CacheEngineKey key, MemoryObject payload, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(payload);
        var db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var name = key.ToString();
        try
        {
            if (!_options.WriteChecksum && _url.Topology != RedisTopology.Cluster)
            {
                // Without a checksum nothing would tell new metadata from an old payload should the payload SET fail:
                // write both in one atomic command, which also saves waiting for the payload's reply.
                var metadata = RemoteMetadata.For(payload.Metadata, payload.Length, null).ToArray();
                await db.StringSetAsync([new(PayloadKey(name), (ReadOnlyMemory<byte>)payload.Memory), new(MetadataKey(name), metadata)]).ConfigureAwait(false);
            }
            else
            {
                // The payload SET goes out first; the checksum is computed while the client sends it (measured faster
                // than hashing first and sending both in one MSET for chunks of 1 MiB and more: BENCHMARKS.md).
                var payloadSet = db.StringSetAsync(PayloadKey(name), (ReadOnlyMemory<byte>)payload.Memory);
                ulong? checksum = _options.WriteChecksum ? XxHash3.HashToUInt64(payload.Span) : null;
                var metadata = RemoteMetadata.For(payload.Metadata, payload.Length, checksum).ToArray();
                if (_url.Topology != RedisTopology.Cluster)
                {
                    // One connection executes commands in order, so the payload still lands first; pipelining the pair
                    // saves a round trip. Should the payload SET fail after all, the checksum makes the new metadata a miss.
                    var metadataSet = db.StringSetAsync(MetadataKey(name), metadata);
                    await Task.WhenAll(payloadSet, metadataSet).ConfigureAwait(false);
                }
                else
                {
                    // On a cluster the two keys may live on different nodes: write the metadata only after the payload.
                    await payloadSet.ConfigureAwait(false);
                    cancellationToken.ThrowIfCancellationRequested();
                    await db.StringSetAsync(MetadataKey(name), metadata).ConfigureAwait(false);
                }
            }
        }
        catch (RedisConnectionException ex) when (IsAuthenticationFailure(ex))
        {
            throw AuthenticationError(ex);
        }
        RedisMetrics.BytesWritten.Add(payload.Length);
    }

    /// <inheritdoc />
    public async ValueTask<bool> PingAsync(CancellationToken cancellationToken)
    {
        var db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        if (!db.Multiplexer.IsConnected)
        {
            return false;
        }
        try
        {
            await db.PingAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (RedisConnectionException ex) when (IsAuthenticationFailure(ex))
        {
            throw AuthenticationError(ex);
        }
        return true;
    }

    /// <inheritdoc />
    public ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken) =>
        RemoveAsync(key.ToString(), cancellationToken);

    /// <summary>Deletes both keys of the entry named <paramref name="keyString"/>; true if either existed.</summary>
    public async ValueTask<bool> RemoveAsync(string keyString, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(keyString);
        var db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var batch = db.CreateBatch();
        var payload = batch.KeyDeleteAsync(PayloadKey(keyString));
        var metadata = batch.KeyDeleteAsync(MetadataKey(keyString));
        batch.Execute();
        var results = await Task.WhenAll(payload, metadata).WaitAsync(cancellationToken).ConfigureAwait(false);
        return results[0] || results[1];
    }

    /// <inheritdoc />
    public IAsyncEnumerable<RemoteEntryInfo> ListAsync(CancellationToken cancellationToken) => ListAsync(null, cancellationToken);

    /// <summary>
    /// Enumerates entries with <c>SCAN</c> on every master (never <c>KEYS</c>): complete pairs, pairs with invalid
    /// metadata, and half pairs, each with a note in <see cref="RemoteEntryInfo.Detail"/>.
    /// </summary>
    /// <param name="model">Only entries of this model (the key's second field), or null for all.</param>
    /// <param name="cancellationToken">Stops the enumeration.</param>
    public async IAsyncEnumerable<RemoteEntryInfo> ListAsync(string? model, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var servers = DistinctMasters(db.Multiplexer);
        if (servers.Count == 0)
        {
            throw new InvalidOperationException($"{Description}: no master is connected");
        }
        var prefix = model is null ? "*" : "*@" + GlobEscape(model) + "@*";
        foreach (var server in servers)
        {
            var page = new List<string>(ScanPageSize);
            await foreach (var redisKey in server.KeysAsync(_url.Database, prefix + MetadataSuffix, ScanPageSize).WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                page.Add(((string)redisKey!)[..^MetadataSuffix.Length]);
                if (page.Count == ScanPageSize)
                {
                    foreach (var entry in await DescribeAsync(db, page, model, cancellationToken).ConfigureAwait(false))
                    {
                        yield return entry;
                    }
                    page.Clear();
                }
            }
            foreach (var entry in await DescribeAsync(db, page, model, cancellationToken).ConfigureAwait(false))
            {
                yield return entry;
            }
            page.Clear();
            await foreach (var redisKey in server.KeysAsync(_url.Database, prefix + PayloadSuffix, ScanPageSize).WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                page.Add(((string)redisKey!)[..^PayloadSuffix.Length]);
                if (page.Count == ScanPageSize)
                {
                    foreach (var entry in await DescribeOrphansAsync(db, page, model, cancellationToken).ConfigureAwait(false))
                    {
                        yield return entry;
                    }
                    page.Clear();
                }
            }
            foreach (var entry in await DescribeOrphansAsync(db, page, model, cancellationToken).ConfigureAwait(false))
            {
                yield return entry;
            }
        }
    }

    /// <summary>
    /// Reads one entry completely and reports what is stored: sizes, decoded metadata, whether it would be served, and
    /// (when a trailer is present) whether the checksum matches.
    /// </summary>
    public async Task<RedisEntryReport> InspectAsync(string keyString, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(keyString);
        var db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var batch = db.CreateBatch();
        var metaTask = batch.StringGetAsync(MetadataKey(keyString));
        var payloadTask = batch.StringGetLeaseAsync(PayloadKey(keyString));
        batch.Execute();
        var meta = await metaTask.WaitAsync(cancellationToken).ConfigureAwait(false);
        using var lease = await payloadTask.WaitAsync(cancellationToken).ConfigureAwait(false);
        CacheEngineKey.TryParse(keyString, out var key);
        RemoteMetadata? decoded = null;
        bool? checksumOk = null;
        string? problem = null;
        MemoryObjectMetadata? objectMetadata = null;
        if (meta.IsNull)
        {
            problem = lease is null ? "not found" : "payload without metadata";
        }
        else if (!RemoteMetadata.TryRead((byte[])meta!, out var m, out problem))
        {
            problem ??= "invalid metadata";
        }
        else
        {
            decoded = m;
            if (lease is null)
            {
                problem = "metadata without payload";
            }
            else if (!m.TryValidate(lease.Length, key, out var om, out problem))
            {
                problem ??= "invalid metadata";
            }
            else
            {
                objectMetadata = om;
                if (m.Checksum is { } expected)
                {
                    checksumOk = XxHash3.HashToUInt64(lease.Span) == expected;
                    problem = checksumOk.Value ? null : "checksum mismatch";
                }
            }
        }
        return new RedisEntryReport(keyString, meta.IsNull ? null : ((byte[])meta!).Length, lease?.Length, decoded, objectMetadata, checksumOk, problem);
    }

    /// <summary>The first line of an SE.Redis message without its diagnostic tail (", mc: ..., IOCP: ...").</summary>
    private static string Brief(string message)
    {
        var line = message.Split('\n')[0];
        var tail = line.IndexOf(", mc: ", StringComparison.Ordinal);
        return tail > 0 ? line[..tail] : line;
    }

    /// <summary>True when <paramref name="exception"/> (or one it wraps) is the server refusing our credentials.</summary>
    internal static bool IsAuthenticationFailure(Exception exception)
    {
        for (Exception? e = exception; e is not null; e = e.InnerException)
        {
            if (e is RedisConnectionException { FailureType: ConnectionFailureType.AuthenticationFailure }
                || e.Message.Contains("WRONGPASS", StringComparison.Ordinal) || e.Message.Contains("NOAUTH", StringComparison.Ordinal))
            {
                return true;
            }
        }
        return false;
    }

    private RedisAuthenticationException AuthenticationError(RedisConnectionException exception)
    {
        var detail = exception.InnerException?.Message ?? exception.Message;
        if (Interlocked.Exchange(ref _authenticationReported, 1) == 0)
        {
            RedisLog.AuthenticationFailed(_logger, Description, _url.EndPoints[0].ToString() ?? "?", FirstLine(exception.Message));
        }
        return new RedisAuthenticationException(
            $"authentication failed; check the user and password in the URL ({FirstLine(exception.Message)})", exception);

        static string FirstLine(string text)
        {
            var semicolon = text.IndexOf("; SimpleError: ", StringComparison.Ordinal);
            if (semicolon >= 0)
            {
                text = text[(semicolon + 15)..];
            }
            var end = text.IndexOfAny(['.', '\n']);
            return end > 0 ? text[..end] : text;
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        Task<ConnectionMultiplexer>? connecting;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            connecting = _connecting;
        }
        if (connecting is not null)
        {
            try
            {
                await connecting.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // A failed connection leaves nothing to close.
            }
        }
        var multiplexer = Interlocked.Exchange(ref _multiplexer, null);
        var sentinel = Interlocked.Exchange(ref _sentinel, null);
        if (multiplexer is not null)
        {
            await multiplexer.CloseAsync(allowCommandsToComplete: false).ConfigureAwait(false);
            await multiplexer.DisposeAsync().ConfigureAwait(false);
        }
        _leasePool.Dispose();
        if (sentinel is not null)
        {
            await sentinel.CloseAsync(allowCommandsToComplete: false).ConfigureAwait(false);
            await sentinel.DisposeAsync().ConfigureAwait(false);
        }
    }

    private MemoryObject? Materialize(
        IDatabase db, in CacheEngineKey key, string name, RedisValue meta, Lease<byte>? lease, IMemoryAllocator allocator, out bool usedClaim)
    {
        usedClaim = false;
        if (meta.IsNull)
        {
            if (lease is not null)
            {
                // A payload without metadata: evicted metadata, or a put between its two SETs. Either way a miss;
                // deleting it is harmless (a concurrent put then leaves metadata without payload, cleaned by the next read).
                Invalid(db, name, "payload_missing_metadata", "payload without metadata", deletePayload: true, deleteMetadata: false);
            }
            return null;
        }
        if (lease is null)
        {
            Invalid(db, name, "metadata_missing_payload", "metadata without payload (payload evicted)", deletePayload: false, deleteMetadata: true);
            return null;
        }
        if (!RemoteMetadata.TryRead((byte[])meta!, out var stored, out var error)
            || !stored.TryValidate(lease.Length, key, out var objectMetadata, out error))
        {
            Invalid(db, name, "metadata", error ?? "invalid metadata", deletePayload: true, deleteMetadata: true);
            return null;
        }
        if (ChunkMemoryOwner.TryGet(lease.Memory, out var owner) && ReferenceEquals(owner.Allocator, allocator))
        {
            // The client already wrote the value into chunk memory of this allocator: verify it there and keep it.
            usedClaim = true;
            if (stored.Checksum is { } sum && XxHash3.HashToUInt64(lease.Span) != sum)
            {
                Invalid(db, name, "checksum", "payload checksum mismatch", deletePayload: true, deleteMetadata: true);
                return null;   // disposing the lease releases the chunk
            }
            if (owner.TryAdopt(out var chunk))
            {
                chunk.Reshape(objectMetadata);
                RedisMetrics.BytesRead.Add(chunk.Length);
                RedisMetrics.DirectReads.Add(1);
                return chunk;
            }
        }
        if (!allocator.TryAllocate(objectMetadata, out var item))
        {
            return null;
        }
        if (item.Length != lease.Length)
        {
            item.Release();
            return null;
        }
        if (stored.Checksum is { } expected)
        {
            // Copy and hash block by block, so the hash reads each block from cache right after the copy wrote it.
            var hasher = t_hasher ??= new XxHash3();
            hasher.Reset();
            var source = lease.Span;
            var target = item.Span;
            for (var offset = 0; offset < source.Length; offset += CopyBlockBytes)
            {
                var block = source.Slice(offset, Math.Min(CopyBlockBytes, source.Length - offset));
                block.CopyTo(target[offset..]);
                hasher.Append(block);
            }
            if (hasher.GetCurrentHashAsUInt64() != expected)
            {
                item.Release();
                Invalid(db, name, "checksum", "payload checksum mismatch", deletePayload: true, deleteMetadata: true);
                return null;
            }
        }
        else
        {
            lease.Span.CopyTo(item.Span);
        }
        RedisMetrics.BytesRead.Add(item.Length);
        return item;
    }

    private void Invalid(IDatabase db, string name, string reason, string description, bool deletePayload, bool deleteMetadata)
    {
        RedisMetrics.InvalidEntries.Add(1, new KeyValuePair<string, object?>("reason", reason));
        RedisLog.InvalidEntry(_logger, Description, name, description);
        try
        {
            if (deletePayload)
            {
                db.KeyDelete(PayloadKey(name), CommandFlags.FireAndForget);
            }
            if (deleteMetadata)
            {
                db.KeyDelete(MetadataKey(name), CommandFlags.FireAndForget);
            }
        }
        catch (RedisException)
        {
            // Best effort: the next read finds the same problem and tries again.
        }
    }

    private async Task<List<RemoteEntryInfo>> DescribeAsync(IDatabase db, List<string> names, string? model, CancellationToken cancellationToken)
    {
        var result = new List<RemoteEntryInfo>(names.Count);
        if (names.Count == 0)
        {
            return result;
        }
        var batch = db.CreateBatch();
        var metas = new Task<RedisValue>[names.Count];
        var lengths = new Task<long>[names.Count];
        for (var i = 0; i < names.Count; i++)
        {
            metas[i] = batch.StringGetAsync(MetadataKey(names[i]));
            lengths[i] = batch.StringLengthAsync(PayloadKey(names[i]));
        }
        batch.Execute();
        await Task.WhenAll(Task.WhenAll(metas), Task.WhenAll(lengths)).WaitAsync(cancellationToken).ConfigureAwait(false);
        for (var i = 0; i < names.Count; i++)
        {
            var parsed = CacheEngineKey.TryParse(names[i], out var key);
            if (model is not null && (!parsed || key.ModelName != model))
            {
                continue;
            }
            var meta = await metas[i].ConfigureAwait(false);
            var payloadLength = await lengths[i].ConfigureAwait(false);
            if (meta.IsNull)
            {
                continue; // Deleted between SCAN and GET.
            }
            var bytes = (byte[])meta!;
            if (!RemoteMetadata.TryRead(bytes, out var stored, out var error))
            {
                result.Add(new RemoteEntryInfo(names[i], payloadLength == 0 ? null : payloadLength, null, "invalid metadata: " + error));
                continue;
            }
            if (payloadLength == 0)
            {
                result.Add(new RemoteEntryInfo(names[i], null, null, "metadata without payload (" + stored + ")"));
                continue;
            }
            if (!stored.TryValidate(payloadLength, key, out var objectMetadata, out error))
            {
                result.Add(new RemoteEntryInfo(names[i], payloadLength, null, "invalid metadata: " + error));
                continue;
            }
            var detail = stored.Checksum is { } c ? $"xxh3 {c:x16} (LMCache.NET)" : "no checksum (original layout)";
            if (!parsed)
            {
                detail += "; key is not an LMCache key string";
            }
            result.Add(new RemoteEntryInfo(names[i], payloadLength, objectMetadata, detail));
        }
        return result;
    }

    private static async Task<List<RemoteEntryInfo>> DescribeOrphansAsync(IDatabase db, List<string> names, string? model, CancellationToken cancellationToken)
    {
        var result = new List<RemoteEntryInfo>();
        if (names.Count == 0)
        {
            return result;
        }
        var batch = db.CreateBatch();
        var exists = new Task<bool>[names.Count];
        var lengths = new Task<long>[names.Count];
        for (var i = 0; i < names.Count; i++)
        {
            exists[i] = batch.KeyExistsAsync(MetadataKey(names[i]));
            lengths[i] = batch.StringLengthAsync(PayloadKey(names[i]));
        }
        batch.Execute();
        await Task.WhenAll(Task.WhenAll(exists), Task.WhenAll(lengths)).WaitAsync(cancellationToken).ConfigureAwait(false);
        for (var i = 0; i < names.Count; i++)
        {
            var payloadLength = await lengths[i].ConfigureAwait(false);
            if (await exists[i].ConfigureAwait(false) || payloadLength == 0)
            {
                continue;
            }
            if (model is not null && (!CacheEngineKey.TryParse(names[i], out var key) || key.ModelName != model))
            {
                continue;
            }
            result.Add(new RemoteEntryInfo(names[i], payloadLength, null, "payload without metadata"));
        }
        return result;
    }

    internal static List<IServer> DistinctMasters(IConnectionMultiplexer multiplexer)
    {
        // One server may be known under two endpoints (a host name and the address the cluster reports): scan it once.
        var result = new List<IServer>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var server in multiplexer.GetServers().Where(s => s.IsConnected && !s.IsReplica))
        {
            var identity = server.ClusterConfiguration?.Nodes.FirstOrDefault(n => n.IsMyself)?.NodeId ?? server.EndPoint switch
            {
                DnsEndPoint dns => $"{dns.Host}:{dns.Port}",
                IPEndPoint ip => $"{ip.Address}:{ip.Port}",
                var other => other.ToString() ?? "",
            };
            if (seen.Add(identity))
            {
                result.Add(server);
            }
        }
        return result;
    }

    private static string GlobEscape(string text)
    {
        var builder = new System.Text.StringBuilder(text.Length + 4);
        foreach (var c in text)
        {
            if (c is '*' or '?' or '[' or ']' or '\\')
            {
                builder.Append('\\');
            }
            builder.Append(c);
        }
        return builder.ToString();
    }

    private async ValueTask<IDatabase> GetDatabaseAsync(CancellationToken cancellationToken)
    {
        var multiplexer = Volatile.Read(ref _multiplexer)
            ?? await GetConnectingTaskAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
        return multiplexer.GetDatabase(_url.Database);
    }

    private Task<ConnectionMultiplexer> GetConnectingTaskAsync()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_connecting is { IsFaulted: true } or { IsCanceled: true } && Environment.TickCount64 >= Volatile.Read(ref _nextAttemptTicks))
            {
                _connecting = null;
            }
            return _connecting ??= Task.Run(ConnectAsync);
        }
    }

    private async Task<ConnectionMultiplexer> ConnectAsync()
    {
        ConnectionMultiplexer? sentinel = null;
        ConnectionMultiplexer? multiplexer = null;
        try
        {
            var config = CreateConfiguration(_url.EndPoints, _url.User, _url.Password, _url.UseTls);
            config.ResponseBufferPool = _leasePool;   // payload GETs land in chunk memory (see ChunkLeasePool)
            if (_url.Topology == RedisTopology.Sentinel)
            {
                var sentinelConfig = CreateConfiguration(_url.EndPoints, null, _url.SentinelPassword, useTls: false);
                sentinelConfig.ServiceName = _url.ServiceName;
                sentinelConfig.DefaultDatabase = null;
                sentinel = await ConnectionMultiplexer.SentinelConnectAsync(sentinelConfig).ConfigureAwait(false);
                config.EndPoints.Clear();
                config.ServiceName = _url.ServiceName;
                // Finding the master is synchronous in SE.Redis (it polls the sentinels); keep it off the caller's thread.
                multiplexer = sentinel.GetSentinelMasterConnection(config);
                var service = _url.ServiceName!;
                multiplexer.ConfigurationChanged += (_, e) => RedisLog.MasterChanged(_logger, Description, service, e.EndPoint?.ToString() ?? "?");
            }
            else
            {
                multiplexer = await ConnectionMultiplexer.ConnectAsync(config).ConfigureAwait(false);
            }
            multiplexer.ConnectionFailed += OnConnectionFailed;
            multiplexer.ConnectionRestored += OnConnectionRestored;
            lock (_gate)
            {
                if (_disposed)
                {
                    throw new ObjectDisposedException(nameof(RedisConnector));
                }
                _sentinel = sentinel;
                Volatile.Write(ref _multiplexer, multiplexer);
            }
            RedisLog.Connected(_logger, Description, string.Join(", ", multiplexer.GetServers().Select(s => $"{s.EndPoint} {(s.IsReplica ? "replica" : "master")}{(s.IsConnected ? "" : " (down)")}")));
            return multiplexer;
        }
        catch (Exception ex)
        {
            Volatile.Write(ref _nextAttemptTicks, Environment.TickCount64 + (long)_options.ReconnectInterval.TotalMilliseconds);
            RedisLog.ConnectFailed(_logger, Description, ex.Message, (long)_options.ReconnectInterval.TotalMilliseconds);
            if (multiplexer is not null)
            {
                await multiplexer.DisposeAsync().ConfigureAwait(false);
            }
            if (sentinel is not null)
            {
                await sentinel.DisposeAsync().ConfigureAwait(false);
            }
            throw;
        }
    }

    private ConfigurationOptions CreateConfiguration(IEnumerable<EndPoint> endPoints, string? user, string? password, bool useTls)
    {
        var timeoutMs = (int)Math.Clamp(_options.OperationTimeout.TotalMilliseconds, 1, int.MaxValue);
        var config = new ConfigurationOptions
        {
            AbortOnConnectFail = false,
            ConnectTimeout = (int)Math.Clamp(_options.ConnectTimeout.TotalMilliseconds, 1, int.MaxValue),
            SyncTimeout = timeoutMs,
            AsyncTimeout = timeoutMs,
            ConnectRetry = 1,
            KeepAlive = _options.KeepAliveSeconds,
            BacklogPolicy = BacklogPolicy.FailFast,
            ReconnectRetryPolicy = new LinearRetry((int)Math.Clamp(_options.ReconnectInterval.TotalMilliseconds, 50, int.MaxValue)),
            ClientName = "lmcache",
            User = user,
            Password = password,
            Ssl = useTls,
            DefaultDatabase = _url.Database,
        };
        foreach (var endPoint in endPoints)
        {
            config.EndPoints.Add(endPoint);
        }
        if (useTls)
        {
            if (_url.FirstHost is { } host)
            {
                config.SslHost = host.Host;
            }
            if (!_url.TlsVerifyServer)
            {
                config.CertificateValidation += static (_, _, _, _) => true;
            }
            else if (_url.TlsCaCertificates is { } ca)
            {
                config.TrustIssuer(ca);
            }
            if (_url.TlsClientCertificate is { } client)
            {
                config.SetUserPemCertificate(client.Certificate, client.Key);
            }
        }
        return config;
    }

    private void OnConnectionFailed(object? sender, ConnectionFailedEventArgs e)
    {
        RedisMetrics.ConnectionFailures.Add(1, new KeyValuePair<string, object?>("type", e.FailureType.ToString()));
        if (Interlocked.Exchange(ref _connectionDown, 1) == 1)
        {
            return; // One message per outage; SE.Redis reports every reconnect attempt.
        }
        var endPoint = e.EndPoint?.ToString() ?? "?";
        if (e.FailureType == ConnectionFailureType.AuthenticationFailure)
        {
            RedisLog.AuthenticationFailed(_logger, Description, endPoint, e.Exception?.Message ?? "rejected");
        }
        else
        {
            RedisLog.ConnectionLost(_logger, Description, endPoint, e.FailureType.ToString());
        }
    }

    private void OnConnectionRestored(object? sender, ConnectionFailedEventArgs e)
    {
        Volatile.Write(ref _authenticationReported, 0);
        if (Interlocked.Exchange(ref _connectionDown, 0) == 1)
        {
            RedisLog.ConnectionRestored(_logger, Description, e.EndPoint?.ToString() ?? "?");
        }
    }
}

/// <summary>What <see cref="RedisConnector.InspectAsync"/> found for one entry.</summary>
/// <param name="Key">The key string (without suffix).</param>
/// <param name="MetadataBytes">Size of the stored metadata value (28 original, 44 with our checksum), or null when absent.</param>
/// <param name="PayloadBytes">Size of the stored payload, or null when absent.</param>
/// <param name="Metadata">The decoded metadata, when it could be decoded.</param>
/// <param name="ObjectMetadata">What a read would allocate, when the entry is valid.</param>
/// <param name="ChecksumMatches">Whether the payload matches the stored checksum; null when there is none.</param>
/// <param name="Problem">Why the entry would be a miss, or null when it would be served.</param>
public sealed record RedisEntryReport(
    string Key, int? MetadataBytes, int? PayloadBytes, RemoteMetadata? Metadata, MemoryObjectMetadata? ObjectMetadata, bool? ChecksumMatches, string? Problem)
{
    /// <summary>True when a read would return this entry.</summary>
    public bool IsValid => Problem is null;
}

/// <summary>The Redis server refused the URL's credentials (wrong user or password, or none given where one is needed).</summary>
public sealed class RedisAuthenticationException : LMCacheException
{
    /// <summary>Creates the exception.</summary>
    public RedisAuthenticationException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
