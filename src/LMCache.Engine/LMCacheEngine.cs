using System.Buffers;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Core.Serde;
using LMCache.Storage;
using LMCache.Storage.Diagnostics;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.LocalDisk;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Engine;

/// <summary>What a retrieve loaded.</summary>
/// <param name="HitTokens">Tokens whose chunks were found (a whole-chunk prefix, or the kept partial tail).</param>
/// <param name="LoadedTokens">Tokens copied into the engine (≤ <paramref name="HitTokens"/>, bounded by the caller's limit): the new past length.</param>
/// <param name="Tiers">Chunks served per tier.</param>
public readonly record struct RetrieveResult(int HitTokens, int LoadedTokens, TierHits Tiers);

/// <summary>What a store did.</summary>
/// <param name="StoredTokens">Tokens whose chunks were stored now.</param>
/// <param name="StoredChunks">Chunks stored now.</param>
/// <param name="DroppedChunks">Chunks that could not be stored (CPU pool exhausted).</param>
/// <param name="CachedTokens">Tokens of chunks skipped because the CPU tier already held them.</param>
public readonly record struct StoreResult(int StoredTokens, int StoredChunks, int DroppedChunks, int CachedTokens = 0);

/// <summary>
/// The cache engine an inference engine talks to: <c>LookupAsync</c> (how many prefix tokens are cached),
/// <c>RetrieveAsync</c> (load them into the engine's KV) and <c>Store</c> (save new chunks), over the tiers configured
/// by <see cref="LMCacheEngineOptions"/> — the original's <c>LMCacheEngine</c> contract. A request that calls more than
/// one of them hashes its tokens once with <see cref="Prepare"/> and passes the <see cref="PreparedRequest"/> to each.
/// </summary>
/// <remarks>
/// <para>Thread-safe: concurrent requests may look up, retrieve and store at once. Every chunk read from any tier is
/// checked against the expected <see cref="KvLayout"/> (format, dtype, shape, length) before a byte reaches the engine;
/// a mismatch ends the hit there, so the engine recomputes rather than reading wrong KV.</para>
/// <para>Failures of the disk or remote tier are misses, never exceptions: a request is at worst recomputed.</para>
/// </remarks>
public sealed class LMCacheEngine : IAsyncDisposable
{
    private readonly ILogger _logger;
    private readonly StorageMetrics _storageMetrics;
    private readonly LMCacheMeterFactory? _ownedMeterFactory;

    private LMCacheEngine(
        LMCacheEngineOptions options, KeyScope scope, KvLayout layout, ChunkedTokenDatabase tokenDatabase,
        StorageManager storage, StorageMetrics storageMetrics, EngineStatistics statistics, IMeterFactory meterFactory,
        LMCacheMeterFactory? ownedMeterFactory, ILogger logger)
    {
        MeterFactory = meterFactory;
        _ownedMeterFactory = ownedMeterFactory;
        Options = options;
        Scope = scope;
        Layout = layout;
        TokenDatabase = tokenDatabase;
        Storage = storage;
        Statistics = statistics;
        _storageMetrics = storageMetrics;
        _logger = logger;
    }

    /// <summary>The configuration.</summary>
    public LMCacheEngineOptions Options { get; }

    /// <summary>The key fields besides the hash (format, model, world size, worker id, dtype).</summary>
    public KeyScope Scope { get; }

    /// <summary>The KV geometry of the model.</summary>
    public KvLayout Layout { get; }

    /// <summary>Chunking and hashing.</summary>
    public ChunkedTokenDatabase TokenDatabase { get; }

    /// <summary>The tiers.</summary>
    public StorageManager Storage { get; }

    /// <summary>Request-level counters.</summary>
    public EngineStatistics Statistics { get; }

    /// <summary>
    /// The factory of this engine's meters (<see cref="EngineStatistics.MeterName"/>, <see cref="StorageMetrics.MeterName"/>):
    /// <see cref="LMCacheEngineServices.MeterFactory"/>, or one the engine owns when none was given. A
    /// <see cref="PrometheusExporter"/> over it shows this engine's metrics and no other's.
    /// </summary>
    public IMeterFactory MeterFactory { get; }

    /// <summary>
    /// Decodes chunks that a local tier holds compressed (<see cref="MemoryFormat.BinaryBuffer"/>, re-encoded by the
    /// controller's <c>/compress</c>) when a retrieve reaches them; the decoded chunk is validated like any other (see
    /// <see cref="StorageManager.CompressedChunkSerde"/>, which this sets). Defaults to null: a compressed chunk ends the
    /// hit there and the engine recomputes from it — never wrong bytes. Set by the host or the controller worker.
    /// </summary>
    public IKvSerde? CompressedChunkSerde
    {
        get => Storage.CompressedChunkSerde;
        set => Storage.CompressedChunkSerde = value;
    }

    /// <summary>
    /// Builds an engine and its tiers from <paramref name="options"/>: the CPU tier always; the disk tier when
    /// <c>local_disk</c> is set and <c>max_local_disk_size</c> &gt; 0; the remote tier when <c>remote_url</c> is set.
    /// </summary>
    /// <exception cref="Core.Diagnostics.LMCacheConfigurationException">
    /// The configuration cannot work: unknown serde or URL scheme, unusable disk folder, invalid layout or key scope.
    /// </exception>
    public static LMCacheEngine Create(LMCacheEngineOptions options, KeyScope scope, KvLayout layout, LMCacheEngineServices? services = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(scope);
        ArgumentNullException.ThrowIfNull(layout);
        services ??= new LMCacheEngineServices();
        scope.Validate();
        layout.Validate();
        var loggerFactory = services.LoggerFactory ?? NullLoggerFactory.Instance;
        var serdes = services.Serdes ?? new SerdeRegistry();
        var serde = serdes.Create(options.RemoteSerde, options);   // an unknown name fails at start-up even without a remote

        var hasher = new Sha256CborChunkHasher(options.HashSeed);
        var tokenDatabase = new ChunkedTokenDatabase(options.ChunkSize, options.SaveUnfullChunk, hasher);
        var chunkBytes = layout.BytesPerToken * options.ChunkSize;
        if (chunkBytes > int.MaxValue)
        {
            throw new Core.Diagnostics.LMCacheConfigurationException(
                $"chunk_size = {options.ChunkSize}: a chunk of this model would be {chunkBytes} bytes; the limit is {int.MaxValue}. Use a smaller chunk_size.");
        }
        if (chunkBytes > options.MaxLocalCpuSizeBytes)
        {
            throw new Core.Diagnostics.LMCacheConfigurationException(
                $"max_local_cpu_size = {options.MaxLocalCpuSizeGib} GiB cannot hold one chunk of this model ({chunkBytes} bytes at chunk_size {options.ChunkSize}).");
        }

        var ownedMeterFactory = services.MeterFactory is null ? new LMCacheMeterFactory() : null;
        var meterFactory = services.MeterFactory ?? ownedMeterFactory!;
        var cpu = new LocalCpuBackend(options.MaxLocalCpuSizeBytes, options.LocalCpu, options.CachePolicy, loggerFactory.CreateLogger<LocalCpuBackend>());
        var lowerTiers = new List<IStorageBackend>();
        try
        {
            if (options.LocalDisk is not null && options.MaxLocalDiskSizeBytes > 0)
            {
                lowerTiers.Add(new LocalDiskBackend(
                    options.LocalDisk, options.MaxLocalDiskSizeBytes, cpu, options.CachePolicy,
                    logger: loggerFactory.CreateLogger<LocalDiskBackend>()));
            }
            if (options.RemoteUrl is not null)
            {
                var connectors = services.Connectors ?? new RemoteConnectorRegistry();
                var connector = connectors.Create(options.RemoteUrl, new RemoteConnectorContext(options, loggerFactory, meterFactory));
                lowerTiers.Add(new RemoteBackend(
                    connector, serde, cpu, RemoteBackendOptions.FromEngineOptions(options),
                    loggerFactory.CreateLogger<RemoteBackend>(), services.TimeProvider));
            }
        }
        catch
        {
            // Start-up failed. The tiers built so far never served a request (their queues are empty), so disposing
            // them only stops idle workers: that runs in the background rather than blocking this synchronous factory
            // on a task, and a failure of it is logged.
            _ = DisposeAbandonedTiersAsync([.. lowerTiers], cpu, loggerFactory.CreateLogger<LMCacheEngine>());
            ownedMeterFactory?.Dispose();
            throw;
        }
        var storageMetrics = new StorageMetrics(meterFactory);
        var storage = new StorageManager(
            cpu, lowerTiers, options.StoreLocation, options.RetrieveLocations, storageMetrics, loggerFactory.CreateLogger<StorageManager>());
        return new LMCacheEngine(options, scope, layout, tokenDatabase, storage, storageMetrics,
            new EngineStatistics(meterFactory), meterFactory, ownedMeterFactory, loggerFactory.CreateLogger<LMCacheEngine>());
    }

    /// <summary>
    /// Hashes <paramref name="tokens"/> into chunks and chunk keys once, for <see cref="LookupAsync(PreparedRequest, CancellationToken)"/>,
    /// <see cref="RetrieveAsync(PreparedRequest, IKvCacheAdapter, int, CancellationToken)"/> and
    /// <see cref="Store(PreparedRequest, IKvCacheAdapter, int)"/> of the same request. Dispose the result when the
    /// request is done.
    /// </summary>
    public PreparedRequest Prepare(ReadOnlySpan<int> tokens, string? cacheSalt = null) => PreparedRequest.Create(this, tokens, cacheSalt);

    /// <summary>
    /// How many leading tokens of <paramref name="tokens"/> are cached in some tier (a multiple of the chunk size,
    /// or all tokens when the kept partial tail hits). Never throws for tier failures.
    /// </summary>
    public async ValueTask<int> LookupAsync(ReadOnlyMemory<int> tokens, string? cacheSalt = null, CancellationToken cancellationToken = default)
    {
        using var request = Prepare(tokens.Span, cacheSalt);
        return await LookupAsync(request, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// How many leading tokens of the prepared request are cached in some tier (a multiple of the chunk size, or all
    /// tokens when the kept partial tail hits). Never throws for tier failures. A caller that retrieves anyway need not
    /// look up first: <see cref="RetrieveAsync(PreparedRequest, IKvCacheAdapter, int, CancellationToken)"/> finds the
    /// prefix itself, and a lookup before it walks the tiers (the remote one included) a second time.
    /// </summary>
    public async ValueTask<int> LookupAsync(PreparedRequest request, CancellationToken cancellationToken = default)
    {
        CheckOwner(request);
        Statistics.RecordLookup();
        var found = await Storage.ContainsPrefixAsync(request.Keys, cancellationToken).ConfigureAwait(false);
        var hit = found == 0 ? 0 : request.Chunks[found - 1].End;
        EngineLog.Lookup(_logger, request.TokenCount, hit);
        return hit;
    }

    /// <summary>
    /// Loads the longest cached prefix of <paramref name="tokens"/> into <paramref name="destination"/>, copying at
    /// most <paramref name="maxTokens"/> tokens (pass <c>tokens.Length - 1</c> to keep the last token for the engine to
    /// compute). Chunks read from disk or remote are promoted into the CPU tier.
    /// </summary>
    public async ValueTask<RetrieveResult> RetrieveAsync(
        ReadOnlyMemory<int> tokens,
        IKvCacheAdapter destination,
        int maxTokens = int.MaxValue,
        string? cacheSalt = null,
        CancellationToken cancellationToken = default)
    {
        using var request = Prepare(tokens.Span, cacheSalt);
        return await RetrieveAsync(request, destination, maxTokens, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Loads the longest cached prefix of the prepared request into <paramref name="destination"/>, copying at most
    /// <paramref name="maxTokens"/> tokens (pass <c>TokenCount - 1</c> to keep the last token for the engine to compute).
    /// The tiers are walked once: each is asked for the chunks the tiers before it lacked, and what comes back is what
    /// is loaded — no lookup is needed first. Before the first copy, <see cref="IKvCacheAdapter.PrepareForRetrieve"/>
    /// tells the destination how many tokens it will receive, so it can size itself from what the tiers returned.
    /// Chunks read from disk or remote are promoted into the CPU tier.
    /// </summary>
    public async ValueTask<RetrieveResult> RetrieveAsync(
        PreparedRequest request,
        IKvCacheAdapter destination,
        int maxTokens = int.MaxValue,
        CancellationToken cancellationToken = default)
    {
        CheckOwner(request);
        ArgumentNullException.ThrowIfNull(destination);
        var started = Stopwatch.GetTimestamp();
        var chunkCount = request.ChunkCount;
        var objects = ArrayPool<MemoryObject?>.Shared.Rent(Math.Max(1, chunkCount));
        var expected = ArrayPool<MemoryObjectMetadata>.Shared.Rent(Math.Max(1, chunkCount));
        var limit = Math.Max(0, Math.Min(maxTokens, request.TokenCount));
        var hitTokens = 0;
        var loaded = 0;
        TierHits tiers = default;
        try
        {
            var wanted = request.FirstChunkAt(limit);
            for (var i = 0; i < wanted; i++)
            {
                expected[i] = Layout.ChunkMetadata(request.Chunks[i].Length);
            }
            // The storage manager checks every chunk against the layout before it is returned or promoted: what
            // arrives here has the expected format, dtype, shape and length.
            (var found, tiers) = await Storage.GetPrefixAsync(
                request.Keys[..wanted], objects.AsMemory(0, wanted), expected.AsMemory(0, wanted), cancellationToken).ConfigureAwait(false);
            if (found > 0 && request.Chunks[found - 1].End < Options.MinRetrieveTokens)
            {
                found = 0;   // min_retrieve_tokens: too short a hit to be worth loading
            }
            if (found > 0)
            {
                var chunks = request.Chunks;
                hitTokens = chunks[found - 1].End;
                var loading = Math.Min(hitTokens, limit);
                destination.PrepareForRetrieve(loading);
                for (var i = 0; i < found; i++)
                {
                    var chunk = chunks[i];
                    destination.CopyFromChunk(chunk.Start, chunk.Length, Math.Min(chunk.Length, limit - chunk.Start), objects[i]!.Span);
                }
                loaded = loading;
            }
            return new RetrieveResult(hitTokens, loaded, tiers);
        }
        finally
        {
            for (var i = 0; i < chunkCount; i++)
            {
                objects[i]?.Release();
                objects[i] = null;
            }
            ArrayPool<MemoryObject?>.Shared.Return(objects);
            ArrayPool<MemoryObjectMetadata>.Shared.Return(expected);
            Statistics.RecordRetrieve(request.TokenCount, loaded);
            var elapsed = Stopwatch.GetElapsedTime(started);
            Statistics.RetrieveDuration.Record(elapsed.TotalSeconds);
            EngineLog.Retrieved(_logger, loaded, limit, request.TokenCount, tiers.Cpu, tiers.Disk, tiers.Remote, elapsed.TotalMilliseconds);
        }
    }

    /// <summary>
    /// Stores the chunks of <paramref name="tokens"/> after <paramref name="skipLeadingTokens"/> (a multiple of the
    /// chunk size: tokens already stored). The copy from the engine into the CPU tier is synchronous, so the engine may
    /// reuse its buffers when this returns; disk and remote writes are queued. Stops at the first chunk the CPU pool
    /// cannot hold (the stored part is then a prefix). Chunks the CPU tier already holds are skipped and not counted.
    /// </summary>
    public StoreResult Store(ReadOnlySpan<int> tokens, IKvCacheAdapter source, int skipLeadingTokens = 0, string? cacheSalt = null)
    {
        using var request = Prepare(tokens, cacheSalt);
        return Store(request, source, skipLeadingTokens);
    }

    /// <summary>
    /// Stores the chunks of the prepared request after <paramref name="skipLeadingTokens"/> (rounded down to a chunk
    /// boundary: tokens already stored). The copy from the engine into the CPU tier is synchronous, so the engine may
    /// reuse its buffers when this returns; disk and remote writes are queued. Stops at the first chunk the CPU pool
    /// cannot hold (the stored part is then a prefix). Chunks the CPU tier already holds are skipped and not counted.
    /// </summary>
    public StoreResult Store(PreparedRequest request, IKvCacheAdapter source, int skipLeadingTokens = 0)
    {
        CheckOwner(request);
        ArgumentNullException.ThrowIfNull(source);
        var started = Stopwatch.GetTimestamp();
        var skip = Math.Max(0, skipLeadingTokens - (skipLeadingTokens % Options.ChunkSize));
        var first = request.FirstChunkAt(skip);
        var chunks = request.Chunks[first..];
        var keys = request.Keys.Span[first..];
        var stored = 0;
        var storedTokens = 0;
        var cachedTokens = 0;
        var cachedChunks = 0;
        long bytes = 0;
        // This call keeps a reference to each chunk it stored until it returns, so allocating chunk i cannot evict
        // chunks 0..i-1 of the same prompt (the original allocates a request's chunks in one batch for the same
        // reason): a prompt larger than the pool then stores a prefix, not a useless suffix.
        var held = ArrayPool<MemoryObject?>.Shared.Rent(Math.Max(1, chunks.Length));
        var allocated = 0;
        try
        {
            for (var i = 0; i < chunks.Length; i++)
            {
                var chunk = chunks[i];
                if (Storage.Cpu.Contains(keys[i]))
                {
                    cachedChunks++;
                    cachedTokens += chunk.Length;   // already cached (a shared prefix, a repeated prompt): no copy, no allocation
                    continue;
                }
                if (!Storage.Cpu.TryAllocate(Layout.ChunkMetadata(chunk.Length), out var memoryObject))
                {
                    EngineLog.StorePartial(_logger, stored, chunks.Length);
                    break;
                }
                held[allocated++] = memoryObject;
                source.CopyToChunk(chunk.Start, chunk.Length, memoryObject.Span);
                Storage.Put(keys.Slice(i, 1), new ReadOnlySpan<MemoryObject>(ref memoryObject));
                stored++;
                storedTokens += chunk.Length;
                bytes += memoryObject.Length;
            }
        }
        finally
        {
            for (var i = 0; i < allocated; i++)
            {
                held[i]!.Release();
                held[i] = null;
            }
            ArrayPool<MemoryObject?>.Shared.Return(held);
        }
        Statistics.RecordStore(storedTokens);
        var elapsed = Stopwatch.GetElapsedTime(started);
        Statistics.StoreDuration.Record(elapsed.TotalSeconds);
        EngineLog.Stored(_logger, storedTokens, request.TokenCount, bytes / (1024.0 * 1024 * 1024), elapsed.TotalMilliseconds);
        return new StoreResult(storedTokens, stored, chunks.Length - stored - cachedChunks, cachedTokens);
    }

    /// <summary>The keys of the chunks of <paramref name="tokens"/> (for inspection and the controller).</summary>
    public IReadOnlyList<(TokenChunk Chunk, CacheEngineKey Key)> GetChunkKeys(ReadOnlySpan<int> tokens, string? cacheSalt = null)
    {
        var chunks = TokenDatabase.GetChunks(tokens, cacheSalt);
        return [.. chunks.Select(c => (c, Scope.MakeKey(c.Hash)))];
    }

    /// <summary>Waits until queued disk and remote writes have finished.</summary>
    public Task FlushAsync(CancellationToken cancellationToken = default) => Storage.FlushAsync(cancellationToken);

    /// <summary>Finishes queued writes and releases every tier.</summary>
    public async ValueTask DisposeAsync()
    {
        await Storage.DisposeAsync().ConfigureAwait(false);
        _storageMetrics.Dispose();
        Statistics.Dispose();
        _ownedMeterFactory?.Dispose();
    }

    private static async Task DisposeAbandonedTiersAsync(IStorageBackend[] tiers, LocalCpuBackend cpu, ILogger logger)
    {
        try
        {
            foreach (var tier in tiers)
            {
                await tier.DisposeAsync().ConfigureAwait(false);
            }
            await cpu.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            EngineLog.AbandonedTiersDisposeFailed(logger, ex);
        }
    }

    private void CheckOwner(PreparedRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Owner != this)
        {
            throw new ArgumentException("The request was prepared by another cache engine (its keys carry that engine's scope).", nameof(request));
        }
    }
}
