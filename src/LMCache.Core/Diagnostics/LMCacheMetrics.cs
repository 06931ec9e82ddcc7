namespace LMCache.Core.Diagnostics;

/// <summary>The Prometheus type of an exported metric.</summary>
public enum LMCacheMetricType
{
    /// <summary>A monotonic total.</summary>
    Counter,

    /// <summary>A value that goes up and down.</summary>
    Gauge,

    /// <summary>A distribution in cumulative buckets, with <c>_sum</c> and <c>_count</c>.</summary>
    Histogram,
}

/// <summary>One row of <see cref="LMCacheMetrics.Table"/>: which instrument is exported under which Prometheus name.</summary>
/// <param name="Meter">The <see cref="System.Diagnostics.Metrics.Meter"/> name.</param>
/// <param name="Instrument">The instrument name on that meter (dotted, OpenTelemetry style).</param>
/// <param name="Name">The exported name (the original's <c>lmcache:</c> names where it has one).</param>
/// <param name="Type">The exported type.</param>
/// <param name="Help">The <c># HELP</c> text.</param>
/// <param name="Buckets">Histogram bucket upper bounds, ascending (empty for other types).</param>
public sealed record LMCacheMetric(string Meter, string Instrument, string Name, LMCacheMetricType Type, string Help, IReadOnlyList<double> Buckets)
{
    /// <summary>A counter or gauge row.</summary>
    public LMCacheMetric(string meter, string instrument, string name, LMCacheMetricType type, string help)
        : this(meter, instrument, name, type, help, [])
    {
    }
}

/// <summary>
/// The one table of exported metrics: every instrument of LMCache.NET's meters that a Prometheus <c>/metrics</c>
/// endpoint (serve, the lm:// server, the controller) shows, with the name, type and help string it shows it under.
/// Names follow the original LMCache (<c>lmcache:num_hit_tokens</c>, <c>lmcache:time_to_retrieve</c>, …) where it has
/// the metric, and <c>lmcache_&lt;component&gt;_…</c> otherwise.
/// </summary>
public static class LMCacheMetrics
{
    /// <summary>Meter of the cache engine's request counters and timings.</summary>
    public const string EngineMeter = "LMCache.Engine";

    /// <summary>Meter of the tiers' counters (tag <c>tier</c>).</summary>
    public const string StorageMeter = "LMCache.Storage";

    /// <summary>Meter of the OpenAI-compatible server.</summary>
    public const string ServingMeter = "LMCache.Serving";

    /// <summary>Meter of the lm:// cache server.</summary>
    public const string ServerMeter = "LMCache.Server";

    /// <summary>Meter of the controller (per-worker series tagged <c>model_name</c>, <c>worker_id</c>, <c>instance_id</c>).</summary>
    public const string ControllerMeter = "LMCache.Controller";

    /// <summary>The Redis-family connectors' meter (created from the engine's factory).</summary>
    public const string RedisMeter = "LMCache.Connectors.Redis";

    /// <summary>The original's <c>time_to_retrieve</c>/<c>time_to_store</c> buckets, in seconds.</summary>
    public static readonly IReadOnlyList<double> DurationBuckets = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

    /// <summary>Time-to-first-token buckets of the serving histogram, in seconds.</summary>
    public static readonly IReadOnlyList<double> TtftBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80];

    /// <summary>Inter-token latency buckets, in seconds (vLLM's <c>inter_token_latency_seconds</c> buckets).</summary>
    public static readonly IReadOnlyList<double> InterTokenLatencyBuckets = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];

    /// <summary>End-to-end request latency buckets, in seconds (vLLM's <c>e2e_request_latency_seconds</c> buckets up to 960 s).</summary>
    public static readonly IReadOnlyList<double> RequestLatencyBuckets = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960];

    /// <summary>Batch-size buckets (sequences per scheduler step).</summary>
    public static readonly IReadOnlyList<double> BatchSizeBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256];

    private const LMCacheMetricType Counter = LMCacheMetricType.Counter;
    private const LMCacheMetricType Gauge = LMCacheMetricType.Gauge;

    /// <summary>Every exported metric, in the order they are written.</summary>
    public static IReadOnlyList<LMCacheMetric> Table { get; } =
    [
        // The cache engine (serve): the original's names and help strings.
        new(EngineMeter, "lmcache.engine.lookup_requests", "lmcache:num_lookup_requests", Counter, "Total number of lookup requests"),
        new(EngineMeter, "lmcache.engine.retrieve_requests", "lmcache:num_retrieve_requests", Counter, "Total number of retrieve requests"),
        new(EngineMeter, "lmcache.engine.store_requests", "lmcache:num_store_requests", Counter, "Total number of store requests"),
        new(EngineMeter, "lmcache.engine.requested_tokens", "lmcache:num_requested_tokens", Counter, "Total number of tokens requested"),
        new(EngineMeter, "lmcache.engine.hit_tokens", "lmcache:num_hit_tokens", Counter, "Total number of tokens hit"),
        new(EngineMeter, "lmcache.engine.stored_tokens", "lmcache:num_stored_tokens", Counter, "Total number of tokens stored"),
        new(EngineMeter, "lmcache.engine.cache_hit_rate", "lmcache:cache_hit_rate", Gauge, "Hit rate of retrieves: hit tokens / requested tokens since start"),
        new(EngineMeter, "lmcache.engine.retrieve_duration", "lmcache:time_to_retrieve", LMCacheMetricType.Histogram, "Time to retrieve from cache (seconds)", DurationBuckets),
        new(EngineMeter, "lmcache.engine.store_duration", "lmcache:time_to_store", LMCacheMetricType.Histogram, "Time to store to cache (seconds)", DurationBuckets),

        // The tiers under an engine (serve).
        new(StorageMeter, "lmcache.storage.hits", "lmcache_tier_hits_total", Counter, "Chunk hits per tier."),
        new(StorageMeter, "lmcache.storage.misses", "lmcache_tier_misses_total", Counter, "Chunk misses per tier."),
        new(StorageMeter, "lmcache.storage.hit_rate", "lmcache_tier_hit_rate", Gauge, "Chunk hits / (hits + misses) per tier."),
        new(StorageMeter, "lmcache.storage.bytes_read", "lmcache_tier_read_bytes_total", Counter, "Bytes read from a tier."),
        new(StorageMeter, "lmcache.storage.puts", "lmcache_tier_puts_total", Counter, "Chunks stored into a tier."),
        new(StorageMeter, "lmcache.storage.bytes_written", "lmcache_tier_written_bytes_total", Counter, "Bytes stored into a tier."),
        new(StorageMeter, "lmcache.storage.puts_dropped", "lmcache_tier_puts_dropped_total", Counter, "Puts dropped (queue full, no space, tier down)."),
        new(StorageMeter, "lmcache.storage.evictions", "lmcache_tier_evictions_total", Counter, "Entries evicted to make room."),
        new(StorageMeter, "lmcache.storage.errors", "lmcache_tier_errors_total", Counter, "Tier failures turned into misses."),
        new(StorageMeter, "lmcache.storage.entries", "lmcache_tier_entries", Gauge, "Chunks held per tier."),
        new(StorageMeter, "lmcache.storage.used_bytes", "lmcache_tier_used_bytes", Gauge, "Bytes held per tier."),
        new(StorageMeter, "lmcache.storage.capacity_bytes", "lmcache_tier_capacity_bytes", Gauge, "Capacity of a tier in bytes (0 = unbounded)."),

        // The OpenAI-compatible server.
        new(ServingMeter, "lmcache.serving.requests", "lmcache_serving_requests_total", Counter, "HTTP requests by endpoint and status code."),
        new(ServingMeter, "lmcache.serving.time_to_first_token", "lmcache_serving_time_to_first_token_seconds", LMCacheMetricType.Histogram, "Time from request arrival to the first generated token.", TtftBuckets),
        new(ServingMeter, "lmcache.serving.prompt_tokens", "lmcache_serving_prompt_tokens_total", Counter, "Prompt tokens processed."),
        new(ServingMeter, "lmcache.serving.generation_tokens", "lmcache_serving_generation_tokens_total", Counter, "Tokens generated."),
        new(ServingMeter, "lmcache.serving.cached_tokens", "lmcache_serving_cached_tokens_total", Counter, "Prompt tokens whose KV came from LMCache."),
        new(ServingMeter, "lmcache.serving.queue_depth", "lmcache_serving_queue_depth", Gauge, "Requests waiting or running."),
        new(ServingMeter, "lmcache.serving.num_requests_running", "lmcache_serving_num_requests_running", Gauge, "Requests holding a scheduler slot (as vllm:num_requests_running)."),
        new(ServingMeter, "lmcache.serving.num_requests_waiting", "lmcache_serving_num_requests_waiting", Gauge, "Requests waiting for a scheduler slot (as vllm:num_requests_waiting)."),
        new(ServingMeter, "lmcache.serving.batch_size", "lmcache_serving_batch_size", LMCacheMetricType.Histogram, "Sequences decoded together per scheduler step.", BatchSizeBuckets),
        new(ServingMeter, "lmcache.serving.inter_token_latency", "lmcache_serving_inter_token_latency_seconds", LMCacheMetricType.Histogram, "Time between consecutive tokens of a request (as vllm:inter_token_latency_seconds).", InterTokenLatencyBuckets),
        new(ServingMeter, "lmcache.serving.e2e_request_latency", "lmcache_serving_e2e_request_latency_seconds", LMCacheMetricType.Histogram, "Time from request arrival to its last token (as vllm:e2e_request_latency_seconds).", RequestLatencyBuckets),

        // The Redis-family remote connectors (per engine).
        new(RedisMeter, "lmcache.redis.invalid_entries", "lmcache_redis_invalid_entries_total", Counter, "Remote entries found invalid on read (treated as misses and removed)."),
        new(RedisMeter, "lmcache.redis.connection_failures", "lmcache_redis_connection_failures_total", Counter, "Connection failures reported by the Redis client."),
        new(RedisMeter, "lmcache.redis.bytes_read", "lmcache_redis_read_bytes_total", Counter, "Payload bytes read from Redis and validated."),
        new(RedisMeter, "lmcache.redis.direct_reads", "lmcache_redis_direct_reads_total", Counter, "Payload reads received straight into chunk memory, without a copy."),
        new(RedisMeter, "lmcache.redis.bytes_written", "lmcache_redis_written_bytes_total", Counter, "Payload bytes written to Redis."),

        // The lm:// cache server.
        new(ServerMeter, "lmcache.server.keys", "lmcache_server_keys", Gauge, "Entries stored."),
        new(ServerMeter, "lmcache.server.bytes", "lmcache_server_bytes", Gauge, "Payload bytes stored."),
        new(ServerMeter, "lmcache.server.capacity", "lmcache_server_capacity_bytes", Gauge, "Pool size in bytes (--max-size)."),
        new(ServerMeter, "lmcache.server.pool_used", "lmcache_server_pool_used_bytes", Gauge, "Pool bytes reserved, including payloads being received."),
        new(ServerMeter, "lmcache.server.hits", "lmcache_server_hits_total", Counter, "GETs that found their key."),
        new(ServerMeter, "lmcache.server.misses", "lmcache_server_misses_total", Counter, "GETs that did not find their key."),
        new(ServerMeter, "lmcache.server.puts", "lmcache_server_puts_total", Counter, "PUTs stored."),
        new(ServerMeter, "lmcache.server.puts_rejected", "lmcache_server_puts_rejected_total", Counter, "PUTs drained and dropped for lack of room."),
        new(ServerMeter, "lmcache.server.evictions", "lmcache_server_evictions_total", Counter, "Entries evicted to make room."),
        new(ServerMeter, "lmcache.server.evicted_bytes", "lmcache_server_evicted_bytes_total", Counter, "Payload bytes evicted."),
        new(ServerMeter, "lmcache.server.active_connections", "lmcache_server_active_connections", Gauge, "Connections open."),
        new(ServerMeter, "lmcache.server.connections", "lmcache_server_connections_total", Counter, "Connections accepted."),
        new(ServerMeter, "lmcache.server.connection_errors", "lmcache_server_connection_errors_total", Counter, "Connections closed for a protocol error, timeout or broken socket."),
        new(ServerMeter, "lmcache.server.received_bytes", "lmcache_server_received_bytes_total", Counter, "PUT payload bytes received."),
        new(ServerMeter, "lmcache.server.sent_bytes", "lmcache_server_sent_bytes_total", Counter, "GET and LIST payload bytes sent."),
        new(ServerMeter, "lmcache.server.spilled", "lmcache_server_spilled_total", Counter, "Evicted entries written to the disk spill."),
        new(ServerMeter, "lmcache.server.spill_hits", "lmcache_server_spill_hits_total", Counter, "GETs served from the disk spill."),
        new(ServerMeter, "lmcache.server.spill_keys", "lmcache_server_spill_keys", Gauge, "Entries in the disk spill."),

        // The controller: its own state, then each worker's latest report (the original's names).
        new(ControllerMeter, "lmcache.controller.registered_instances", "lmcache:controller_registered_instances", Gauge, "Instances with at least one registered worker"),
        new(ControllerMeter, "lmcache.controller.registered_workers", "lmcache:controller_registered_workers", Gauge, "Registered workers by status"),
        new(ControllerMeter, "lmcache.controller.indexed_keys", "lmcache:controller_indexed_keys", Gauge, "Distinct chunk keys in the controller's index"),
        new(ControllerMeter, "lmcache.controller.messages_received", "lmcache:controller_messages_received", Counter, "Worker messages received"),
        new(ControllerMeter, "lmcache.controller.worker.lookup_requests", "lmcache:num_lookup_requests", Counter, "Total number of lookup requests"),
        new(ControllerMeter, "lmcache.controller.worker.retrieve_requests", "lmcache:num_retrieve_requests", Counter, "Total number of retrieve requests"),
        new(ControllerMeter, "lmcache.controller.worker.store_requests", "lmcache:num_store_requests", Counter, "Total number of store requests"),
        new(ControllerMeter, "lmcache.controller.worker.requested_tokens", "lmcache:num_requested_tokens", Counter, "Total number of tokens requested"),
        new(ControllerMeter, "lmcache.controller.worker.hit_tokens", "lmcache:num_hit_tokens", Counter, "Total number of tokens hit"),
        new(ControllerMeter, "lmcache.controller.worker.stored_tokens", "lmcache:num_stored_tokens", Counter, "Total number of tokens stored"),
        new(ControllerMeter, "lmcache.controller.worker.cache_hit_rate", "lmcache:cache_hit_rate", Gauge, "Hit rate of retrieves: hit tokens / requested tokens since start"),
        new(ControllerMeter, "lmcache.controller.worker.local_cache_usage", "lmcache:local_cache_usage", Gauge, "Local cache usage (bytes) of the CPU pool"),
        new(ControllerMeter, "lmcache.controller.worker.local_storage_usage", "lmcache:local_storage_usage", Gauge, "Local storage usage (bytes) of the disk tier"),
        new(ControllerMeter, "lmcache.controller.worker.remote_cache_usage", "lmcache:remote_cache_usage", Gauge, "Remote cache usage (bytes written to the remote tier)"),
        new(ControllerMeter, "lmcache.controller.worker.tier_capacity_bytes", "lmcache:tier_capacity_bytes", Gauge, "Per-tier capacity bytes"),
        new(ControllerMeter, "lmcache.controller.worker.tier_used_bytes", "lmcache:tier_used_bytes", Gauge, "Per-tier used bytes"),
        new(ControllerMeter, "lmcache.controller.worker.tier_entries", "lmcache:tier_entries", Gauge, "Per-tier entries"),
        new(ControllerMeter, "lmcache.controller.worker.tier_hits", "lmcache:tier_hits", Counter, "Per-tier hits"),
        new(ControllerMeter, "lmcache.controller.worker.tier_misses", "lmcache:tier_misses", Counter, "Per-tier misses"),
        new(ControllerMeter, "lmcache.controller.worker.tier_evictions", "lmcache:tier_evictions", Counter, "Per-tier evictions"),
    ];
}
