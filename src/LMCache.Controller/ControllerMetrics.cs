using System.Diagnostics.Metrics;
using LMCache.Core.Diagnostics;

namespace LMCache.Controller;

/// <summary>
/// The controller's instruments on the <c>LMCache.Controller</c> meter: its own state, and each reporting worker's
/// latest counters as series tagged <c>model_name</c>, <c>worker_id</c>, <c>instance_id</c> (and <c>tier</c>), read from
/// the cluster state when a listener collects. <c>/metrics</c> writes them through the <see cref="PrometheusExporter"/>
/// under the original's <c>lmcache:</c> names (<see cref="LMCacheMetrics.Table"/>).
/// </summary>
internal sealed class ControllerMetrics : IDisposable
{
    private static readonly (string Instrument, string Field)[] s_engineCounters =
    [
        ("lookup_requests", "num_lookup_requests"),
        ("retrieve_requests", "num_retrieve_requests"),
        ("store_requests", "num_store_requests"),
        ("requested_tokens", "num_requested_tokens"),
        ("hit_tokens", "num_hit_tokens"),
        ("stored_tokens", "num_stored_tokens"),
    ];

    private readonly Meter _meter;
    private readonly ClusterState _state;

    public ControllerMetrics(IMeterFactory meterFactory, ClusterState state)
    {
        _state = state;
        _meter = meterFactory.Create(LMCacheMetrics.ControllerMeter);
        _meter.CreateObservableGauge("lmcache.controller.registered_instances",
            () => (long)_state.Workers().Select(w => w.InstanceId).Distinct().Count(), "{instance}", "Instances with at least one registered worker.");
        _meter.CreateObservableGauge("lmcache.controller.registered_workers", RegisteredWorkers, "{worker}", "Registered workers by status.");
        _meter.CreateObservableGauge("lmcache.controller.indexed_keys", () => (long)_state.IndexedKeys, "{key}", "Distinct chunk keys in the controller's index.");
        _meter.CreateObservableCounter("lmcache.controller.messages_received", () => _state.MessagesReceived, "{message}", "Worker messages received.");
        foreach (var (instrument, field) in s_engineCounters)
        {
            _meter.CreateObservableCounter("lmcache.controller.worker." + instrument, () => PerWorker(w => w.Stats!.GetInt64OrDefault(field, 0)), "1", $"Each worker's {field}.");
        }
        _meter.CreateObservableGauge("lmcache.controller.worker.cache_hit_rate", () => PerWorker(HitRate), "1", "Each worker's hit tokens / requested tokens.");
        _meter.CreateObservableGauge("lmcache.controller.worker.local_cache_usage", () => PerWorker(w => TierField(w, "LocalCPUBackend", t => t.UsedBytes)), "By", "Bytes allocated in each worker's CPU pool.");
        _meter.CreateObservableGauge("lmcache.controller.worker.local_storage_usage", () => PerWorker(w => TierField(w, "LocalDiskBackend", t => t.UsedBytes)), "By", "Bytes used by each worker's disk tier.");
        _meter.CreateObservableGauge("lmcache.controller.worker.remote_cache_usage", () => PerWorker(w => TierField(w, "RemoteBackend", t => t.BytesWritten)), "By", "Bytes each worker wrote to its remote tier.");
        _meter.CreateObservableGauge("lmcache.controller.worker.tier_capacity_bytes", () => PerTier(t => t.CapacityBytes), "By", "Capacity per worker and tier.");
        _meter.CreateObservableGauge("lmcache.controller.worker.tier_used_bytes", () => PerTier(t => t.UsedBytes), "By", "Used bytes per worker and tier.");
        _meter.CreateObservableGauge("lmcache.controller.worker.tier_entries", () => PerTier(t => t.Entries), "{chunk}", "Entries per worker and tier.");
        _meter.CreateObservableCounter("lmcache.controller.worker.tier_hits", () => PerTier(t => t.Hits), "{chunk}", "Hits per worker and tier.");
        _meter.CreateObservableCounter("lmcache.controller.worker.tier_misses", () => PerTier(t => t.Misses), "{chunk}", "Misses per worker and tier.");
        _meter.CreateObservableCounter("lmcache.controller.worker.tier_evictions", () => PerTier(t => t.Evictions), "{chunk}", "Evictions per worker and tier.");
    }

    public void Dispose() => _meter.Dispose();

    private IEnumerable<Measurement<long>> RegisteredWorkers()
    {
        var workers = _state.Workers();
        var active = workers.Count(_state.IsActive);
        yield return new Measurement<long>(active, new KeyValuePair<string, object?>("status", "active"));
        yield return new Measurement<long>(workers.Count - active, new KeyValuePair<string, object?>("status", "inactive"));
    }

    private IEnumerable<Measurement<T>> PerWorker<T>(Func<WorkerRecord, T> read)
        where T : struct
    {
        foreach (var worker in _state.Workers().Where(w => w.Stats is not null))
        {
            yield return new Measurement<T>(read(worker), Labels(worker));
        }
    }

    private IEnumerable<Measurement<long>> PerTier(Func<TierUsage, long> read)
    {
        foreach (var worker in _state.Workers().Where(w => w.Stats is not null))
        {
            foreach (var tier in Summaries.Tiers([worker]))
            {
                yield return new Measurement<long>(read(tier), [.. Labels(worker), new("tier", tier.Location)]);
            }
        }
    }

    private static double HitRate(WorkerRecord worker)
    {
        var requested = worker.Stats!.GetInt64OrDefault("num_requested_tokens", 0);
        return requested == 0 ? 0 : (double)worker.Stats.GetInt64OrDefault("num_hit_tokens", 0) / requested;
    }

    private static long TierField(WorkerRecord worker, string location, Func<TierUsage, long> read) =>
        Summaries.Tiers([worker]).Find(t => t.Location == location) is { } tier ? read(tier) : 0;

    private static KeyValuePair<string, object?>[] Labels(WorkerRecord worker) =>
    [
        new("model_name", worker.ModelName),
        new("worker_id", worker.WorkerId),
        new("instance_id", worker.InstanceId),
    ];
}
