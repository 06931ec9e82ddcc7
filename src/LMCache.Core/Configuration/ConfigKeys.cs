using System.Globalization;

namespace LMCache.Core.Configuration;

/// <summary>The kind of value a configuration key holds.</summary>
public enum ConfigValueKind
{
    /// <summary>32-bit integer.</summary>
    Int,
    /// <summary>Optional 32-bit integer.</summary>
    OptionalInt,
    /// <summary>Floating point (sizes are GiB).</summary>
    Float,
    /// <summary>Boolean.</summary>
    Bool,
    /// <summary>String (null allowed when the default is null).</summary>
    String,
    /// <summary>List of integers.</summary>
    IntList,
    /// <summary>List of strings.</summary>
    StringList,
    /// <summary>Map of free-form values.</summary>
    Map,
}

/// <summary>The definition of one configuration key: the single source of truth for its name, type, default and rules.</summary>
public sealed class ConfigKeyDefinition
{
    internal ConfigKeyDefinition(
        string name,
        ConfigValueKind kind,
        object? defaultValue,
        string description,
        Action<LMCacheEngineOptions, object?>? apply,
        Func<object?, string?>? validate = null)
    {
        Name = name;
        Kind = kind;
        DefaultValue = defaultValue;
        Description = description;
        Apply = apply;
        Validate = validate;
    }

    /// <summary>The key, snake_case as in the original (<c>chunk_size</c>).</summary>
    public string Name { get; }

    /// <summary>The environment variable that sets it (<c>LMCACHE_CHUNK_SIZE</c>).</summary>
    public string EnvironmentVariable => "LMCACHE_" + Name.ToUpperInvariant();

    /// <summary>Its value kind.</summary>
    public ConfigValueKind Kind { get; }

    /// <summary>Its default.</summary>
    public object? DefaultValue { get; }

    /// <summary>What it does, with units.</summary>
    public string Description { get; }

    /// <summary>True when LMCache.NET acts on the key; false for keys of the original that are accepted but have no effect here.</summary>
    public bool IsSupported => Apply is not null;

    internal Action<LMCacheEngineOptions, object?>? Apply { get; }

    internal Func<object?, string?>? Validate { get; }

    /// <summary>Converts a raw value (YAML scalar/sequence/mapping or environment text) to this key's type.</summary>
    public bool TryConvert(object? raw, out object? value, out string? error)
    {
        value = null;
        error = null;
        if (raw is null)
        {
            if (Kind is ConfigValueKind.Int or ConfigValueKind.Float or ConfigValueKind.Bool)
            {
                error = $"a value is required ({KindDescription})";
                return false;
            }
            return true;
        }
        bool ok;
        switch (Kind)
        {
            case ConfigValueKind.Int:
            case ConfigValueKind.OptionalInt:
                ok = ConfigConverters.TryInt(raw, out var i, out error);
                value = i;
                break;
            case ConfigValueKind.Float:
                ok = ConfigConverters.TryFloat(raw, out var d, out error);
                value = d;
                break;
            case ConfigValueKind.Bool:
                ok = ConfigConverters.TryBool(raw, out var b, out error);
                value = b;
                break;
            case ConfigValueKind.String:
                ok = ConfigConverters.TryString(raw, out var s, out error);
                value = s;
                break;
            case ConfigValueKind.IntList:
                ok = ConfigConverters.TryList<int>(raw, (object? r, out int v, out string? e) => ConfigConverters.TryInt(r, out v, out e), out var il, out error);
                value = il;
                break;
            case ConfigValueKind.StringList:
                ok = ConfigConverters.TryList<string>(raw, ConfigConverters.TryString, out var sl, out error);
                value = sl;
                break;
            default:
                ok = ConfigConverters.TryMap(raw, out var m, out error);
                value = m;
                break;
        }
        if (ok && Validate is not null)
        {
            error = Validate(value);
            ok = error is null;
        }
        return ok;
    }

    /// <summary>A short description of the type for messages and documentation.</summary>
    public string KindDescription => Kind switch
    {
        ConfigValueKind.Int => "integer",
        ConfigValueKind.OptionalInt => "integer or null",
        ConfigValueKind.Float => "number",
        ConfigValueKind.Bool => "true/false",
        ConfigValueKind.String => "string",
        ConfigValueKind.IntList => "list of integers",
        ConfigValueKind.StringList => "list of strings",
        _ => "mapping",
    };

    /// <summary>Renders a value of this key for display (<c>null</c>, lists comma-separated, maps as JSON-like text).</summary>
    public static string Format(object? value) => value switch
    {
        null => "null",
        bool b => b ? "true" : "false",
        double d => d.ToString("0.0##############", CultureInfo.InvariantCulture),
        string s => s,
        IReadOnlyDictionary<string, object?> map => "{" + string.Join(", ", map.Select(p => $"{p.Key}: {Format(p.Value)}")) + "}",
        System.Collections.IEnumerable list => "[" + string.Join(", ", list.Cast<object?>().Select(Format)) + "]",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}

/// <summary>
/// Every configuration key LMCache.NET knows: the ones it acts on, and the original's keys it accepts without effect
/// (a warning names them when set to a non-default value). Key names, types and defaults follow the original's
/// <c>lmcache/v1/config.py</c>; where a default differs, the description says why.
/// </summary>
public static class ConfigKeys
{
    /// <summary>Largest size in GiB a size key accepts (1 PiB): keeps byte counts far from overflow.</summary>
    public const double MaxSizeGib = 1024 * 1024;

    /// <summary>The serializers a configuration may name; the engine fails at start-up if the chosen one is not registered.</summary>
    public static readonly IReadOnlyList<string> KnownSerdes = ["naive", "kivi", "cachegen"];

    /// <summary>The eviction policies a configuration may name.</summary>
    public static readonly IReadOnlyList<string> KnownCachePolicies = ["LRU", "FIFO", "LFU", "MRU"];

    /// <summary>The hash algorithms a configuration may name.</summary>
    public static readonly IReadOnlyList<string> KnownHashAlgorithms = ["sha256_cbor", "builtin"];

    /// <summary>The backend names used by <c>store_location</c> and <c>retrieve_locations</c>.</summary>
    public static readonly IReadOnlyList<string> KnownBackends = ["LocalCPUBackend", "LocalDiskBackend", "RemoteBackend"];

    /// <summary>All definitions, in documentation order.</summary>
    public static readonly IReadOnlyList<ConfigKeyDefinition> All =
    [
        new("chunk_size", ConfigValueKind.Int, 256, "Tokens per chunk: the unit of hashing, storage and transfer.",
            (o, v) => o.ChunkSize = (int)v!, v => (int)v! >= 1 ? null : "must be at least 1"),
        new("local_cpu", ConfigValueKind.Bool, true, "Whether the CPU tier keeps chunks (it always exists as the allocator).",
            (o, v) => o.LocalCpu = (bool)v!),
        new("max_local_cpu_size", ConfigValueKind.Float, 5.0, "CPU pool size in GiB (a hard cap on the tier's memory).",
            (o, v) => o.MaxLocalCpuSizeGib = (double)v!, v => (double)v! is > 0 and <= MaxSizeGib ? null : $"must be a positive size in GiB, at most {MaxSizeGib}"),
        new("local_disk", ConfigValueKind.String, null, "Disk-tier folder: file:///path/ or a plain path.",
            (o, v) => o.LocalDisk = ConfigConverters.NormalizeLocalDisk((string?)v), v => v is string s && s.Trim().Length == 0 ? "must not be empty (use null to disable)" : null),
        new("max_local_disk_size", ConfigValueKind.Float, 0.0, "Disk-tier size in GiB; the tier exists only when this is > 0 and local_disk is set.",
            (o, v) => o.MaxLocalDiskSizeGib = (double)v!, v => (double)v! is >= 0 and <= MaxSizeGib ? null : $"must be a non-negative size in GiB, at most {MaxSizeGib}"),
        new("remote_url", ConfigValueKind.String, null, "Remote store URL; the scheme picks the connector (redis://, rediss://, unix://, redis-sentinel://, redis-cluster://, valkey://, lm://).",
            (o, v) => o.RemoteUrl = (string?)v, v => v is string s && !s.Contains("://", StringComparison.Ordinal) ? "must be a URL with a scheme, such as redis://host:6379 or lm://host:65432" : null),
        new("remote_serde", ConfigValueKind.String, "naive", "Serializer of the remote tier: naive (raw bytes), cachegen (compressed) or kivi (identity).",
            (o, v) => o.RemoteSerde = (string)v!, v => OneOf(v, KnownSerdes, ignoreCase: false)),
        new("save_decode_cache", ConfigValueKind.Bool, false, "Also store KV produced while decoding.",
            (o, v) => o.SaveDecodeCache = (bool)v!),
        new("save_unfull_chunk", ConfigValueKind.Bool, false, "Give a trailing partial chunk a key.",
            (o, v) => o.SaveUnfullChunk = (bool)v!),
        new("blocking_timeout_secs", ConfigValueKind.Int, 10, "Limit of a blocking remote get or lookup, in seconds.",
            (o, v) => o.BlockingTimeoutSecs = (int)v!, v => (int)v! >= 1 ? null : "must be at least 1 second"),
        new("pre_caching_hash_algorithm", ConfigValueKind.String, "sha256_cbor",
            "Chunk hash. sha256_cbor (default here; the original defaults to builtin, which differs per process). builtin is accepted and means sha256_cbor.",
            (o, v) => o.PreCachingHashAlgorithm = (string)v! == "builtin" ? "sha256_cbor" : (string)v!, v => OneOf(v, KnownHashAlgorithms, ignoreCase: false)),
        new("cache_policy", ConfigValueKind.String, "LRU", "Eviction policy of the CPU and disk tiers: LRU, FIFO, LFU or MRU (case-insensitive).",
            (o, v) => o.CachePolicy = ((string)v!).ToUpperInvariant(), v => OneOf(v, KnownCachePolicies, ignoreCase: true)),
        new("store_location", ConfigValueKind.String, null, "Store only into this backend (LocalCPUBackend, LocalDiskBackend or RemoteBackend).",
            (o, v) => o.StoreLocation = (string?)v, v => v is null ? null : OneOf(v, KnownBackends, ignoreCase: false)),
        new("retrieve_locations", ConfigValueKind.StringList, null, "Read only from these backends.",
            (o, v) => o.RetrieveLocations = (IReadOnlyList<string>?)v, v => v is IReadOnlyList<string> list ? list.Select(x => OneOf(x, KnownBackends, ignoreCase: false)).FirstOrDefault(e => e is not null) : null),
        new("min_retrieve_tokens", ConfigValueKind.Int, 0, "Skip retrieval when the hit is shorter than this many tokens.",
            (o, v) => o.MinRetrieveTokens = (int)v!, v => (int)v! >= 0 ? null : "must not be negative"),
        new("enable_controller", ConfigValueKind.Bool, false, "Run a controller worker inside this engine.",
            (o, v) => o.EnableController = (bool)v!),
        new("lmcache_instance_id", ConfigValueKind.String, "lmcache_default_instance", "Instance identity reported to the controller.",
            (o, v) => o.LMCacheInstanceId = (string?)v ?? "lmcache_default_instance"),
        new("controller_pull_url", ConfigValueKind.String, null, "Controller pull endpoint, host:port.",
            (o, v) => o.ControllerPullUrl = (string?)v),
        new("controller_reply_url", ConfigValueKind.String, null, "Controller reply endpoint, host:port.",
            (o, v) => o.ControllerReplyUrl = (string?)v),
        new("lmcache_worker_ports", ConfigValueKind.IntList, null, "Worker ports, one per rank.",
            (o, v) => o.LMCacheWorkerPorts = (IReadOnlyList<int>?)v, v => v is IReadOnlyList<int> l && l.Any(p => p is < 1 or > 65535) ? "ports must lie in 1..65535" : null),
        new("lmcache_worker_ids", ConfigValueKind.IntList, null, "Ranks that run a worker (default all).",
            (o, v) => o.LMCacheWorkerIds = (IReadOnlyList<int>?)v),
        new("lmcache_worker_heartbeat_delay_time", ConfigValueKind.Int, 10, "Seconds before a worker's first heartbeat.",
            (o, v) => o.LMCacheWorkerHeartbeatDelayTime = (int)v!, v => (int)v! >= 0 ? null : "must not be negative"),
        new("lmcache_worker_heartbeat_time", ConfigValueKind.OptionalInt, null, "Heartbeat period in seconds (null: no heartbeats).",
            (o, v) => o.LMCacheWorkerHeartbeatTime = (int?)v, v => v is int i && i < 1 ? "must be at least 1 second" : null),
        new("extra_config", ConfigValueKind.Map, null, "Free-form knobs (see the README's extra_config table).",
            (o, v) => o.ExtraConfig = (IReadOnlyDictionary<string, object?>?)v),

        // Keys of the original accepted for compatibility, without effect in LMCache.NET.
        new("reserve_local_cpu_size", ConfigValueKind.Float, 0.0, "Accepted, no effect (MLA first-rank mode).", null),
        new("local_cpu_use_hugepages", ConfigValueKind.Bool, false, "Accepted, no effect.", null),
        new("local_disk_path_sharding", ConfigValueKind.String, "by_gpu", "Accepted, no effect.", null),
        new("use_layerwise", ConfigValueKind.Bool, false, "Accepted, no effect: LMCache.NET stores whole chunks (KV_2LTD).", null),
        new("enable_async_loading", ConfigValueKind.Bool, false, "Accepted, no effect.", null),
        new("priority_limit", ConfigValueKind.OptionalInt, null, "Accepted, no effect.", null),
        new("lookup_timeout_ms", ConfigValueKind.Int, 3000, "Accepted, no effect (lookups are in-process).", null),
        new("enable_blending", ConfigValueKind.Bool, false, "Accepted, no effect (CacheBlend is not implemented).", null),
        new("blend_recompute_ratios", ConfigValueKind.StringList, null, "Accepted, no effect.", null),
        new("blend_thresholds", ConfigValueKind.StringList, null, "Accepted, no effect.", null),
        new("blend_check_layers", ConfigValueKind.IntList, null, "Accepted, no effect.", null),
        new("blend_min_tokens", ConfigValueKind.Int, 256, "Accepted, no effect.", null),
        new("blend_special_str", ConfigValueKind.String, " # # ", "Accepted, no effect.", null),
        new("enable_p2p", ConfigValueKind.Bool, false, "Accepted, no effect.", null),
        new("enable_pd", ConfigValueKind.Bool, false, "Accepted, no effect (disaggregated prefill is not implemented).", null),
        new("enable_kv_events", ConfigValueKind.Bool, false, "Accepted, no effect.", null),
        new("pin_timeout_sec", ConfigValueKind.Int, 300, "Accepted, no effect.", null),
        new("pin_check_interval_sec", ConfigValueKind.Int, 30, "Accepted, no effect.", null),
        new("py_enable_gc", ConfigValueKind.Bool, true, "Accepted, no effect (Python-specific).", null),
        new("numa_mode", ConfigValueKind.String, null, "Accepted, no effect.", null),
        new("enable_lazy_memory_allocator", ConfigValueKind.Bool, false, "Accepted, no effect.", null),
        new("internal_api_server_enabled", ConfigValueKind.Bool, false, "Accepted, no effect.", null),
        new("remote_config_url", ConfigValueKind.String, null, "Accepted, no effect.", null),
        new("app_id", ConfigValueKind.String, null, "Accepted, no effect.", null),
        new("storage_plugins", ConfigValueKind.StringList, null, "Accepted, no effect.", null),
        new("remote_storage_plugins", ConfigValueKind.StringList, null, "Accepted, no effect.", null),
    ];

    /// <summary>Deprecated key names and the key each maps to (the original's alias table).</summary>
    public static readonly IReadOnlyDictionary<string, string> Aliases = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["controller_url"] = "controller_pull_url",
        ["lmcache_worker_port"] = "lmcache_worker_ports",
        ["enable_xpyd"] = "enable_pd",
        ["external_backends"] = "storage_plugins",
    };

    private static readonly Dictionary<string, ConfigKeyDefinition> s_byName = All.ToDictionary(d => d.Name, StringComparer.Ordinal);

    /// <summary>
    /// The known key closest to <paramref name="name"/> (a typo: at most 2 edits, and fewer than a third of its
    /// length), or null when none is that close.
    /// </summary>
    public static string? Suggest(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var lowered = name.ToLowerInvariant();
        var limit = Math.Min(2, Math.Max(1, lowered.Length / 3));
        string? best = null;
        var bestDistance = limit + 1;
        foreach (var candidate in s_byName.Keys.Concat(Aliases.Keys))
        {
            var distance = EditDistance(lowered, candidate, bestDistance);
            if (distance < bestDistance)
            {
                best = candidate;
                bestDistance = distance;
            }
        }
        return best is null ? null : Aliases.GetValueOrDefault(best, best);
    }

    /// <summary>Levenshtein distance of two short strings, or <paramref name="cap"/> once it is known to be at least that.</summary>
    private static int EditDistance(string a, string b, int cap)
    {
        if (Math.Abs(a.Length - b.Length) >= cap)
        {
            return cap;
        }
        Span<int> previous = stackalloc int[b.Length + 1];
        Span<int> current = stackalloc int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }
        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            var rowMinimum = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
                current[j] = Math.Min(substitution, Math.Min(previous[j], current[j - 1]) + 1);
                rowMinimum = Math.Min(rowMinimum, current[j]);
            }
            if (rowMinimum >= cap)
            {
                return cap;
            }
            current.CopyTo(previous);
        }
        return Math.Min(previous[b.Length], cap);
    }

    /// <summary>Finds a key's definition by name or alias.</summary>
    public static bool TryGet(string name, out ConfigKeyDefinition definition, out bool viaAlias)
    {
        viaAlias = false;
        if (s_byName.TryGetValue(name, out definition!))
        {
            return true;
        }
        if (Aliases.TryGetValue(name, out var target))
        {
            viaAlias = true;
            definition = s_byName[target];
            return true;
        }
        return false;
    }

    private static string? OneOf(object? value, IReadOnlyList<string> allowed, bool ignoreCase)
    {
        var text = value as string;
        var comparison = ignoreCase ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        return text is not null && allowed.Any(a => string.Equals(a, text, comparison))
            ? null
            : $"must be one of {string.Join(", ", allowed)}";
    }
}
