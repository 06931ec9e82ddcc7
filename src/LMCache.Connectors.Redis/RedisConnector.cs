using System.Diagnostics.Metrics;
using System.IO.Hashing;
using System.Net;
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
/// <para>This file is the data path. The connection, failover and credential handling live in
/// <see cref="RedisConnection"/>, and listing, inspecting and deleting entries for the tools (<see cref="IRemoteKeyspace"/>)
/// in <see cref="RedisKeyspace"/>; both are separate classes this connector owns and delegates to.</para>
/// </remarks>
public sealed class RedisConnector : IRemoteConnector, IRemoteKeyspace
{
    /// <summary>Suffix of the payload key (plain concatenation, as in the original).</summary>
    public const string PayloadSuffix = "kv_bytes";

    /// <summary>Suffix of the metadata key.</summary>
    public const string MetadataSuffix = "metadata";

    private const int CopyBlockBytes = 128 * 1024;

    [ThreadStatic]
    private static XxHash3? s_hasher;

    private readonly RedisUrl _url;
    private readonly RedisConnectorOptions _options;
    private readonly ILogger _logger;
    private readonly ChunkLeasePool _leasePool = new();
    private readonly RedisConnection _connection;
    private readonly RedisKeyspace _keyspace;
    private readonly RedisMetrics _metrics;
    private int _lastPayloadBytes;   // the size the next batch's first payload is claimed with (one model, one chunk size)

    /// <summary>Creates the connector and starts connecting in the background.</summary>
    /// <param name="url">The parsed URL.</param>
    /// <param name="options">Timeouts and checksum policy.</param>
    /// <param name="logger">Logger; null for none.</param>
    /// <param name="meterFactory">Where the connector's meter comes from (the engine's); null for a meter of its own.</param>
    public RedisConnector(RedisUrl url, RedisConnectorOptions options, ILogger? logger = null, IMeterFactory? meterFactory = null)
    {
        ArgumentNullException.ThrowIfNull(url);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _url = url;
        _options = options;
        _logger = logger ?? NullLogger.Instance;
        _metrics = new RedisMetrics(meterFactory);
        _connection = new RedisConnection(url, options, _logger, _leasePool, _metrics);
        _keyspace = new RedisKeyspace(_connection, url.Database);
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
    public ValueTask<IDatabase> GetClientDatabaseAsync(CancellationToken cancellationToken) => _connection.GetDatabaseAsync(cancellationToken);

    /// <summary>Opens a <see cref="RedisInfoProbe"/> on the current masters, with this connector's credentials and TLS settings.</summary>
    /// <exception cref="RedisConnectionException">The masters cannot be reached.</exception>
    public Task<RedisInfoProbe> OpenInfoProbeAsync(CancellationToken cancellationToken) => _connection.OpenInfoProbeAsync(cancellationToken);

    /// <summary>Claims of payload reads into chunk memory not yet used or withdrawn (zero between reads).</summary>
    internal int PendingLeaseClaims => _leasePool.PendingClaims;

    /// <inheritdoc />
    public RemoteCapabilities Capabilities =>
        RemoteCapabilities.BatchedExists | RemoteCapabilities.BatchedGet | RemoteCapabilities.Ping | RemoteCapabilities.Remove;

    /// <summary>True once connected and while at least one server is reachable.</summary>
    public bool IsConnected => _connection.IsConnected;

    /// <summary>The endpoint of the current master (standalone and Sentinel), or null when not connected.</summary>
    public EndPoint? CurrentMaster => _connection.CurrentMaster;

    /// <summary>The payload key of <paramref name="keyString"/>.</summary>
    public static string PayloadKey(string keyString) => keyString + PayloadSuffix;

    /// <summary>The metadata key of <paramref name="keyString"/>.</summary>
    public static string MetadataKey(string keyString) => keyString + MetadataSuffix;

    /// <summary>
    /// Waits until the server answers a PING (for tools and tests). Wrong credentials throw
    /// <see cref="RedisAuthenticationException"/> at once; when <paramref name="cancellationToken"/> fires first, a
    /// <see cref="TimeoutException"/> carries the last connection error.
    /// </summary>
    public Task WaitUntilConnectedAsync(CancellationToken cancellationToken) => _connection.WaitUntilConnectedAsync(cancellationToken);

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
        catch (RedisConnectionException ex) when (RedisConnection.IsAuthenticationFailure(ex))
        {
            throw _connection.AuthenticationError(ex);
        }
    }

    private async Task<int> ExistsPrefixCoreAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken)
    {
        var db = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
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
            db = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (RedisConnectionException ex) when (RedisConnection.IsAuthenticationFailure(ex))
        {
            throw _connection.AuthenticationError(ex);
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
            if (ex is RedisConnectionException connectionException && RedisConnection.IsAuthenticationFailure(connectionException))
            {
                throw _connection.AuthenticationError(connectionException);
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
        var db = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
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
                ulong? checksum = _options.WriteChecksum ? RemoteMetadata.BindToKey(XxHash3.HashToUInt64(payload.Span), name) : null;
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
        catch (RedisConnectionException ex) when (RedisConnection.IsAuthenticationFailure(ex))
        {
            throw _connection.AuthenticationError(ex);
        }
        _metrics.BytesWritten.Add(payload.Length);
    }

    /// <inheritdoc />
    public async ValueTask<bool> PingAsync(CancellationToken cancellationToken)
    {
        var db = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        if (!db.Multiplexer.IsConnected)
        {
            return false;
        }
        try
        {
            await db.PingAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (RedisConnectionException ex) when (RedisConnection.IsAuthenticationFailure(ex))
        {
            throw _connection.AuthenticationError(ex);
        }
        return true;
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
        if (!stored.KeyBound && !_options.AcceptUnbound)
        {
            // Not bound to its key (the original's layout, or our version-1 trailer) and the user does not accept that:
            // a miss, left in place for the writers that use it.
            return null;
        }
        if (ChunkMemoryOwner.TryGet(lease.Memory, out var owner) && ReferenceEquals(owner.Allocator, allocator))
        {
            // The client already wrote the value into chunk memory of this allocator: verify it there and keep it.
            usedClaim = true;
            if (stored.Checksum is not null && !stored.Verifies(XxHash3.HashToUInt64(lease.Span), name))
            {
                Invalid(db, name, "checksum", "payload checksum mismatch", deletePayload: true, deleteMetadata: true);
                return null;   // disposing the lease releases the chunk
            }
            if (owner.TryAdopt(out var chunk))
            {
                chunk.Reshape(objectMetadata);
                _metrics.BytesRead.Add(chunk.Length);
                _metrics.DirectReads.Add(1);
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
        if (stored.Checksum is not null)
        {
            // Copy and hash block by block, so the hash reads each block from cache right after the copy wrote it.
            var hasher = s_hasher ??= new XxHash3();
            hasher.Reset();
            var source = lease.Span;
            var target = item.Span;
            for (var offset = 0; offset < source.Length; offset += CopyBlockBytes)
            {
                var block = source.Slice(offset, Math.Min(CopyBlockBytes, source.Length - offset));
                block.CopyTo(target[offset..]);
                hasher.Append(block);
            }
            if (!stored.Verifies(hasher.GetCurrentHashAsUInt64(), name))
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
        _metrics.BytesRead.Add(item.Length);
        return item;
    }

    private void Invalid(IDatabase db, string name, string reason, string description, bool deletePayload, bool deleteMetadata)
    {
        _metrics.InvalidEntries.Add(1, new KeyValuePair<string, object?>("reason", reason));
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

    /// <inheritdoc />
    public ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken) =>
        _keyspace.RemoveAsync(key.ToString(), cancellationToken);

    /// <inheritdoc />
    /// <remarks>Deletes both keys of the entry (<c>kv_bytes</c> and <c>metadata</c>); true if either existed.</remarks>
    public ValueTask<bool> RemoveAsync(string key, CancellationToken cancellationToken) => _keyspace.RemoveAsync(key, cancellationToken);

    /// <inheritdoc />
    /// <remarks>
    /// <c>SCAN</c> on every master (never <c>KEYS</c>; a replica's copies are not counted twice), in pages of 512, each
    /// page's metadata and payload lengths fetched in one pipelined batch.
    /// </remarks>
    public IAsyncEnumerable<RemoteEntry> ListAsync(string? modelName, CancellationToken cancellationToken) =>
        _keyspace.ListAsync(modelName, cancellationToken);

    /// <inheritdoc />
    public ValueTask<RemoteEntry> InspectAsync(string key, CancellationToken cancellationToken) => _keyspace.InspectAsync(key, cancellationToken);

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _connection.DisposeAsync().ConfigureAwait(false);
        _metrics.Dispose();
        _leasePool.Dispose();
    }
}
