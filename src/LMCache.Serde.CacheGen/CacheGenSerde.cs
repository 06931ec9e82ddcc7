using System.Collections.Concurrent;
using LMCache.Core.Configuration;
using LMCache.Core.Memory;
using LMCache.Core.Serde;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Serde.CacheGen;

/// <summary>
/// <c>remote_serde: cachegen</c>: stores each <c>KV_2LTD</c> chunk (bf16, fp16 or fp32) as a cachegen blob — per-token
/// quantized, arithmetic coded with LMCache's exact arithmetic — in our versioned, checksummed container, with metadata
/// <c>BINARY_BUFFER</c>, shape <c>[nbytes,0,0,0]</c>, dtype None as in the original. Lossy: values come back within half
/// a quantization step of their token's scale (see <c>docs/cachegen.md</c>).
/// </summary>
/// <remarks>
/// <para>Deserialize never throws for bad data: a blob that is empty, truncated, corrupted (checksum), of an unknown
/// version, or that references a shared table this process does not have, is logged and returned as null (a miss).</para>
/// <para>Chunks with non-finite values, or whose coded form would not be smaller, are stored as a lossless copy inside
/// the same container, so short tails never expand.</para>
/// </remarks>
public sealed class CacheGenSerde : IKvSerde
{
    /// <summary>The configuration name.</summary>
    public const string SerdeName = "cachegen";

    private readonly CacheGenOptions _options;
    private readonly CacheGenCodec _codec;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<int, CacheGenBins> _bins = new();

    /// <summary>Creates the serde.</summary>
    /// <param name="options">Bins, shared-table mode and threads; defaults to <see cref="CacheGenOptions"/>'s defaults.</param>
    /// <param name="sharedTables">The table provider for shared-table mode; when null and <see cref="CacheGenOptions.SharedTables"/>
    /// is set, one is created (persisting under <see cref="CacheGenOptions.TableDirectory"/> when given). Blobs that
    /// reference a table are decoded through it even when this serde does not encode with shared tables.</param>
    /// <param name="logger">Receives miss reasons and table events; defaults to none.</param>
    public CacheGenSerde(CacheGenOptions? options = null, CacheGenSharedTables? sharedTables = null, ILogger? logger = null)
    {
        _options = options ?? new CacheGenOptions();
        _logger = logger ?? NullLogger.Instance;
        _codec = new CacheGenCodec(_options.Threads);
        SharedTables = sharedTables ?? new CacheGenSharedTables(
            _options.ProfileChunks,
            _options.TableDirectory is null ? null : new FileCacheGenTableStore(_options.TableDirectory),
            _logger);
    }

    /// <inheritdoc />
    public string Name => SerdeName;

    /// <summary>The table provider (profiled tables, and tables loaded to decode blobs that reference them).</summary>
    public CacheGenSharedTables SharedTables { get; }

    /// <summary>Whether new blobs use shared tables (once profiled) instead of per-chunk tables.</summary>
    public bool UsesSharedTables => _options.SharedTables;

    /// <summary>The vector path the coder runs on: the widest this CPU has, capped by <c>LMCACHE_SIMD</c> (<see cref="LMCache.Core.Simd.SimdPaths"/>).</summary>
    public LMCache.Core.Simd.SimdPath Simd => _codec.Simd;

    /// <inheritdoc />
    public MemoryObject? Serialize(MemoryObject chunk, IMemoryAllocator allocator)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        ArgumentNullException.ThrowIfNull(allocator);
        var metadata = chunk.Metadata;
        if (metadata.Format != MemoryFormat.KV2LTD || metadata.Shape.D0 != 2 || metadata.Shape.D1 <= 0
            || metadata.Shape.D2 <= 0 || metadata.Shape.D3 <= 0 || !CacheGenCodec.IsSupported(metadata.DType))
        {
            CacheGenLog.Unsupported(_logger, metadata.Format.ToString(), metadata.DType.ToString());
            return null;
        }
        var layers = metadata.Shape.D1;
        var bins = _bins.GetOrAdd(layers, _options.BinsFor);
        using var prepared = _codec.Prepare(
            chunk.Memory, metadata.DType, layers, metadata.Shape.D2, metadata.Shape.D3, bins,
            _options.SharedTables ? SharedTables : null);
        if (prepared.Size > int.MaxValue || !allocator.TryAllocate(MemoryObjectMetadata.Opaque((int)prepared.Size), out var output))
        {
            CacheGenLog.NoMemory(_logger, prepared.Size);
            return null;
        }
        if (prepared.RawReason is not null)
        {
            CacheGenLog.StoredRaw(_logger, metadata.Shape.ToString(), prepared.RawReason);
        }
        prepared.WriteTo(output.Span);
        return output;
    }

    /// <inheritdoc />
    public MemoryObject? Deserialize(MemoryObject stored, IMemoryAllocator allocator)
    {
        ArgumentNullException.ThrowIfNull(stored);
        ArgumentNullException.ThrowIfNull(allocator);
        if (stored.Metadata.Format != MemoryFormat.BinaryBuffer)
        {
            CacheGenLog.BlobInvalid(_logger, stored.Length, $"stored format is {stored.Metadata.Format}, not BinaryBuffer");
            return null;
        }
        if (!CacheGenContainer.TryParse(stored.Span, out var parsed, out var reason) || parsed is null)
        {
            CacheGenLog.BlobInvalid(_logger, stored.Length, reason);
            return null;
        }
        using var blob = parsed;
        CacheGenTable? table = null;
        if (parsed.Mode == CacheGenMode.SharedTable)
        {
            table = SharedTables.TryGet(parsed.TableId);
            if (!CacheGenCodec.Matches(table, parsed))
            {
                CacheGenLog.TableMissing(_logger, CacheGenTable.FormatId(parsed.TableId));
                return null;
            }
        }
        if (!allocator.TryAllocate(parsed.ChunkMetadata, out var output))
        {
            CacheGenLog.NoMemory(_logger, parsed.ChunkMetadata.ByteLength);
            return null;
        }
        try
        {
            _codec.Decode(stored.Memory, parsed, table, output.Memory);
            return output;
        }
        catch (Exception ex) when (ex is ArgumentException or IndexOutOfRangeException or AggregateException)
        {
            // Unreachable for a blob that passed TryParse; kept so that a defect here is a miss, not a crash.
            output.Release();
            CacheGenLog.BlobInvalid(_logger, stored.Length, ex.Message);
            return null;
        }
    }

    /// <summary>
    /// Registers <c>cachegen</c> in <paramref name="registry"/>: each engine gets a serde configured from its
    /// <c>extra_config</c> (<see cref="CacheGenOptions.FromEngineOptions"/>).
    /// </summary>
    /// <param name="registry">The host's serde registry.</param>
    /// <param name="loggerFactory">Source of the serde's logger; null for none.</param>
    /// <param name="tableStore">Where shared tables are persisted (e.g. under their own key in the remote store);
    /// overrides <c>cachegen_table_dir</c>. Null keeps the folder from the configuration, or memory only.</param>
    public static SerdeRegistry Register(SerdeRegistry registry, ILoggerFactory? loggerFactory = null, ICacheGenTableStore? tableStore = null)
    {
        ArgumentNullException.ThrowIfNull(registry);
        return registry.Register(SerdeName, engineOptions => Create(engineOptions, loggerFactory, tableStore));
    }

    /// <summary>
    /// Reads what a cachegen blob decodes to (format <c>KV_2LTD</c>, dtype, layers, tokens, hidden) without decoding it;
    /// false when <paramref name="blob"/> is not a valid blob (the reason says why).
    /// </summary>
    public static bool TryReadChunkMetadata(ReadOnlySpan<byte> blob, out MemoryObjectMetadata metadata, out string reason)
    {
        if (CacheGenContainer.TryParse(blob, out var parsed, out reason) && parsed is not null)
        {
            using (parsed)
            {
                metadata = parsed.ChunkMetadata;
            }
            return true;
        }
        metadata = default;
        return false;
    }

    /// <summary>Creates a serde for an engine's configuration.</summary>
    public static CacheGenSerde Create(LMCacheEngineOptions engineOptions, ILoggerFactory? loggerFactory = null, ICacheGenTableStore? tableStore = null)
    {
        var options = CacheGenOptions.FromEngineOptions(engineOptions);
        var logger = loggerFactory?.CreateLogger<CacheGenSerde>() ?? (ILogger)NullLogger.Instance;
        var store = tableStore ?? (options.TableDirectory is null ? null : new FileCacheGenTableStore(options.TableDirectory));
        return new CacheGenSerde(options, new CacheGenSharedTables(options.ProfileChunks, store, logger), logger);
    }
}
