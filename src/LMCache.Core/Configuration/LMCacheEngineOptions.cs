namespace LMCache.Core.Configuration;

/// <summary>
/// The engine configuration, with the original LMCache's key names (in each property's doc), types and defaults.
/// Built by <see cref="LMCacheConfigLoader"/>; <see cref="ConfigKeys"/> is the table that defines every key.
/// </summary>
public sealed class LMCacheEngineOptions
{
    /// <summary><c>chunk_size</c>: tokens per chunk, the unit of hashing, storage and transfer. Defaults to 256.</summary>
    public int ChunkSize { get; set; } = 256;

    /// <summary><c>local_cpu</c>: whether the CPU tier keeps chunks (it always exists as the allocator). Defaults to true.</summary>
    public bool LocalCpu { get; set; } = true;

    /// <summary><c>max_local_cpu_size</c>: CPU pool size in GiB. Defaults to 5.0.</summary>
    public double MaxLocalCpuSizeGib { get; set; } = 5.0;

    /// <summary>The CPU pool size in bytes (<c>int(max_local_cpu_size * 1024**3)</c>).</summary>
    public long MaxLocalCpuSizeBytes => ConfigConverters.GibToBytes(MaxLocalCpuSizeGib);

    /// <summary><c>local_disk</c>: disk-tier folder (<c>file:///path/</c> or a plain path). Defaults to none.</summary>
    public string? LocalDisk { get; set; }

    /// <summary><c>max_local_disk_size</c>: disk-tier size in GiB; the tier exists only if this is &gt; 0 and <see cref="LocalDisk"/> is set. Defaults to 0.</summary>
    public double MaxLocalDiskSizeGib { get; set; }

    /// <summary>The disk-tier size in bytes.</summary>
    public long MaxLocalDiskSizeBytes => ConfigConverters.GibToBytes(MaxLocalDiskSizeGib);

    /// <summary><c>remote_url</c>: selects the remote connector by scheme (<c>redis://</c>, <c>lm://</c>, ...). Defaults to none.</summary>
    public string? RemoteUrl { get; set; }

    /// <summary><c>remote_serde</c>: serializer for the remote tier (<c>naive</c>, <c>cachegen</c>, <c>kivi</c>). Defaults to <c>naive</c>.</summary>
    public string RemoteSerde { get; set; } = "naive";

    /// <summary><c>save_decode_cache</c>: also store KV produced while decoding. Defaults to false.</summary>
    public bool SaveDecodeCache { get; set; }

    /// <summary><c>save_unfull_chunk</c>: give a trailing partial chunk a key. Defaults to false.</summary>
    public bool SaveUnfullChunk { get; set; }

    /// <summary><c>blocking_timeout_secs</c>: limit of a blocking remote get or lookup, in seconds. Defaults to 10.</summary>
    public int BlockingTimeoutSecs { get; set; } = 10;

    /// <summary><c>pre_caching_hash_algorithm</c>: the chunk hash. Defaults to <c>sha256_cbor</c> (the original defaults to the process-random <c>builtin</c>).</summary>
    public string PreCachingHashAlgorithm { get; set; } = "sha256_cbor";

    /// <summary><c>cache_policy</c>: eviction policy of the CPU and disk tiers (<c>LRU</c>, <c>FIFO</c>, <c>LFU</c>, <c>MRU</c>). Defaults to <c>LRU</c>.</summary>
    public string CachePolicy { get; set; } = "LRU";

    /// <summary><c>store_location</c>: store only into this backend (class name, e.g. <c>LocalDiskBackend</c>). Defaults to all.</summary>
    public string? StoreLocation { get; set; }

    /// <summary><c>retrieve_locations</c>: read only from these backends. Defaults to all.</summary>
    public IReadOnlyList<string>? RetrieveLocations { get; set; }

    /// <summary><c>min_retrieve_tokens</c>: skip retrieval when the hit is shorter than this. Defaults to 0.</summary>
    public int MinRetrieveTokens { get; set; }

    /// <summary><c>enable_controller</c>: run a controller worker in this engine. Defaults to false.</summary>
    public bool EnableController { get; set; }

    /// <summary><c>lmcache_instance_id</c>: instance identity for the controller. Defaults to <c>lmcache_default_instance</c>.</summary>
    public string LMCacheInstanceId { get; set; } = "lmcache_default_instance";

    /// <summary><c>controller_pull_url</c>: the controller's pull endpoint (<c>host:port</c>). Defaults to none.</summary>
    public string? ControllerPullUrl { get; set; }

    /// <summary><c>controller_reply_url</c>: the controller's reply endpoint (<c>host:port</c>). Defaults to none.</summary>
    public string? ControllerReplyUrl { get; set; }

    /// <summary><c>lmcache_worker_ports</c>: per-rank worker ports. Defaults to none.</summary>
    public IReadOnlyList<int>? LMCacheWorkerPorts { get; set; }

    /// <summary><c>lmcache_worker_ids</c>: which ranks run a worker. Defaults to all.</summary>
    public IReadOnlyList<int>? LMCacheWorkerIds { get; set; }

    /// <summary><c>lmcache_worker_heartbeat_delay_time</c>: seconds before the first heartbeat. Defaults to 10.</summary>
    public int LMCacheWorkerHeartbeatDelayTime { get; set; } = 10;

    /// <summary><c>lmcache_worker_heartbeat_time</c>: heartbeat period in seconds. Defaults to none (no heartbeats).</summary>
    public int? LMCacheWorkerHeartbeatTime { get; set; }

    /// <summary><c>extra_config</c>: free-form knobs read by specific components. Defaults to none.</summary>
    public IReadOnlyDictionary<string, object?>? ExtraConfig { get; set; }

    /// <summary>Reads an <c>extra_config</c> entry, or <paramref name="fallback"/> when absent.</summary>
    public object? GetExtra(string key, object? fallback = null) =>
        ExtraConfig is not null && ExtraConfig.TryGetValue(key, out var value) ? value : fallback;

    /// <summary>Reads a boolean <c>extra_config</c> entry; a value of the wrong type is a configuration error.</summary>
    public bool GetExtraBool(string key, bool fallback)
    {
        var raw = GetExtra(key);
        if (raw is null)
        {
            return fallback;
        }
        return ConfigConverters.TryBool(raw, out var value, out var error)
            ? value
            : throw new Diagnostics.LMCacheConfigurationException($"extra_config.{key} = '{raw}': {error}.");
    }

    /// <summary>Reads a numeric <c>extra_config</c> entry; a value of the wrong type is a configuration error.</summary>
    public double GetExtraDouble(string key, double fallback)
    {
        var raw = GetExtra(key);
        if (raw is null)
        {
            return fallback;
        }
        return ConfigConverters.TryFloat(raw, out var value, out var error)
            ? value
            : throw new Diagnostics.LMCacheConfigurationException($"extra_config.{key} = '{raw}': {error}.");
    }

    /// <summary>Reads a string <c>extra_config</c> entry.</summary>
    public string? GetExtraString(string key, string? fallback = null) =>
        GetExtra(key) is { } raw && ConfigConverters.TryString(raw, out var value, out _) ? value : fallback;

    /// <summary>The chunk-hash seed: <c>extra_config.hash_seed</c>, else <c>PYTHONHASHSEED</c>, else <c>"0"</c>.</summary>
    public string HashSeed =>
        GetExtraString("hash_seed") ?? Environment.GetEnvironmentVariable("PYTHONHASHSEED") ?? Keys.Sha256CborChunkHasher.DefaultSeed;
}
