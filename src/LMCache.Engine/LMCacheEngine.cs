using System.Buffers;
using System.Diagnostics;
using LMCache.Core.Configuration;
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
/// The cache engine an inference engine talks to: <see cref="LookupAsync"/> (how many prefix tokens are cached),
/// <see cref="RetrieveAsync"/> (load them into the engine's KV) and <see cref="Store"/> (save new chunks), over the
/// tiers configured by <see cref="LMCacheEngineOptions"/> — the original's <c>LMCacheEngine</c> contract.
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

    private LMCacheEngine(
        LMCacheEngineOptions options, KeyScope scope, KvLayout layout, ChunkedTokenDatabase tokenDatabase,
        StorageManager storage, StorageMetrics storageMetrics, EngineStatistics statistics, ILogger logger)
    {
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
                var connector = connectors.Create(options.RemoteUrl, new RemoteConnectorContext(options, loggerFactory));
                lowerTiers.Add(new RemoteBackend(
                    connector, serde, cpu, RemoteBackendOptions.FromEngineOptions(options),
                    loggerFactory.CreateLogger<RemoteBackend>(), services.TimeProvider));
            }
        }
        catch
        {
            foreach (var tier in lowerTiers)
            {
                tier.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
            cpu.Dispose();
            throw;
        }
        var storageMetrics = new StorageMetrics(services.MeterFactory);
        var storage = new StorageManager(
            cpu, lowerTiers, options.StoreLocation, options.RetrieveLocations, storageMetrics, loggerFactory.CreateLogger<StorageManager>());
        return new LMCacheEngine(options, scope, layout, tokenDatabase, storage, storageMetrics,
            new EngineStatistics(services.MeterFactory), loggerFactory.CreateLogger<LMCacheEngine>());
    }

    /// <summary>
    /// How many leading tokens of <paramref name="tokens"/> are cached in some tier (a multiple of the chunk size,
    /// or all tokens when the kept partial tail hits). Never throws for tier failures.
    /// </summary>
    public async ValueTask<int> LookupAsync(ReadOnlyMemory<int> tokens, string? cacheSalt = null, CancellationToken cancellationToken = default)
    {
        Statistics.RecordLookup();
        using var chunks = ChunkKeys.Create(this, tokens.Span, cacheSalt);
        var found = await Storage.ContainsPrefixAsync(chunks.Keys, cancellationToken).ConfigureAwait(false);
        var hit = found == 0 ? 0 : chunks.Chunks[found - 1].End;
        EngineLog.Lookup(_logger, tokens.Length, hit);
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
        ArgumentNullException.ThrowIfNull(destination);
        var started = Stopwatch.GetTimestamp();
        using var chunks = ChunkKeys.Create(this, tokens.Span, cacheSalt);
        var objects = ArrayPool<MemoryObject?>.Shared.Rent(Math.Max(1, chunks.Count));
        var expected = ArrayPool<MemoryObjectMetadata>.Shared.Rent(Math.Max(1, chunks.Count));
        var hitTokens = 0;
        var loaded = 0;
        TierHits tiers = default;
        try
        {
            var limit = Math.Min(maxTokens, tokens.Length);
            var wanted = 0;
            while (wanted < chunks.Count && chunks.Chunks[wanted].Start < limit)
            {
                wanted++;
            }
            for (var i = 0; i < wanted; i++)
            {
                expected[i] = Layout.ChunkMetadata(chunks.Chunks[i].Length);
            }
            // The storage manager checks every chunk against the layout before it is returned or promoted: what
            // arrives here has the expected format, dtype, shape and length.
            (var found, tiers) = await Storage.GetPrefixAsync(
                chunks.Keys[..wanted], objects.AsMemory(0, wanted), expected.AsMemory(0, wanted), cancellationToken).ConfigureAwait(false);
            if (found > 0 && chunks.Chunks[found - 1].End < Options.MinRetrieveTokens)
            {
                found = 0;   // min_retrieve_tokens: too short a hit to be worth loading
            }
            for (var i = 0; i < found; i++)
            {
                var chunk = chunks.Chunks[i];
                var count = Math.Min(chunk.Length, limit - chunk.Start);
                destination.CopyFromChunk(chunk.Start, chunk.Length, count, objects[i]!.Span);
                hitTokens = chunk.End;
                loaded = chunk.Start + count;
            }
            return new RetrieveResult(hitTokens, loaded, tiers);
        }
        finally
        {
            for (var i = 0; i < chunks.Count; i++)
            {
                objects[i]?.Release();
                objects[i] = null;
            }
            ArrayPool<MemoryObject?>.Shared.Return(objects);
            ArrayPool<MemoryObjectMetadata>.Shared.Return(expected);
            Statistics.RecordRetrieve(tokens.Length, loaded);
            var elapsed = Stopwatch.GetElapsedTime(started);
            Statistics.RetrieveDuration.Record(elapsed.TotalSeconds);
            EngineLog.Retrieved(_logger, loaded, Math.Min(maxTokens, tokens.Length), tokens.Length, tiers.Cpu, tiers.Disk, tiers.Remote, elapsed.TotalMilliseconds);
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
        ArgumentNullException.ThrowIfNull(source);
        var started = Stopwatch.GetTimestamp();
        var skip = skipLeadingTokens - (skipLeadingTokens % Options.ChunkSize);
        using var chunks = ChunkKeys.Create(this, tokens, cacheSalt, Math.Max(0, skip));
        var stored = 0;
        var storedTokens = 0;
        var cachedTokens = 0;
        var cachedChunks = 0;
        long bytes = 0;
        // This call keeps a reference to each chunk it stored until it returns, so allocating chunk i cannot evict
        // chunks 0..i-1 of the same prompt (the original allocates a request's chunks in one batch for the same
        // reason): a prompt larger than the pool then stores a prefix, not a useless suffix.
        var held = ArrayPool<MemoryObject?>.Shared.Rent(Math.Max(1, chunks.Count));
        var allocated = 0;
        try
        {
            for (var i = 0; i < chunks.Count; i++)
            {
                var chunk = chunks.Chunks[i];
                if (Storage.Cpu.Contains(chunks.Keys.Span[i]))
                {
                    cachedChunks++;
                    cachedTokens += chunk.Length;   // already cached (a shared prefix, a repeated prompt): no copy, no allocation
                    continue;
                }
                if (!Storage.Cpu.TryAllocate(Layout.ChunkMetadata(chunk.Length), out var memoryObject))
                {
                    EngineLog.StorePartial(_logger, stored, chunks.Count);
                    break;
                }
                held[allocated++] = memoryObject;
                source.CopyToChunk(chunk.Start, chunk.Length, memoryObject.Span);
                Storage.Put(chunks.Keys.Span.Slice(i, 1), new ReadOnlySpan<MemoryObject>(ref memoryObject));
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
        EngineLog.Stored(_logger, storedTokens, tokens.Length, bytes / (1024.0 * 1024 * 1024), elapsed.TotalMilliseconds);
        return new StoreResult(storedTokens, stored, chunks.Count - stored - cachedChunks, cachedTokens);
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
    }

    /// <summary>The chunks and keys of one request, in pooled arrays.</summary>
    private readonly struct ChunkKeys : IDisposable
    {
        private readonly TokenChunk[] _chunks;
        private readonly CacheEngineKey[] _keys;

        private ChunkKeys(TokenChunk[] chunks, CacheEngineKey[] keys, int count)
        {
            _chunks = chunks;
            _keys = keys;
            Count = count;
        }

        public int Count { get; }

        public ReadOnlySpan<TokenChunk> Chunks => _chunks.AsSpan(0, Count);

        public ReadOnlyMemory<CacheEngineKey> Keys => _keys.AsMemory(0, Count);

        public static ChunkKeys Create(LMCacheEngine engine, ReadOnlySpan<int> tokens, string? cacheSalt, int skipLeadingTokens = 0)
        {
            var capacity = Math.Max(1, engine.TokenDatabase.ChunkCount(tokens.Length));
            var chunks = ArrayPool<TokenChunk>.Shared.Rent(capacity);
            var keys = ArrayPool<CacheEngineKey>.Shared.Rent(capacity);
            var count = engine.TokenDatabase.GetChunks(tokens, chunks, cacheSalt, skipLeadingTokens);
            for (var i = 0; i < count; i++)
            {
                keys[i] = engine.Scope.MakeKey(chunks[i].Hash);
            }
            return new ChunkKeys(chunks, keys, count);
        }

        public void Dispose()
        {
            ArrayPool<TokenChunk>.Shared.Return(_chunks);
            ArrayPool<CacheEngineKey>.Shared.Return(_keys, clearArray: true);
        }
    }
}
