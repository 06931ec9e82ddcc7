using System.Diagnostics.Metrics;

namespace LMCache.Storage.Diagnostics;

/// <summary>
/// Publishes every tier's <see cref="TierStatistics"/> as <see cref="System.Diagnostics.Metrics"/> instruments on the
/// <c>LMCache.Storage</c> meter, tagged by tier. Observable instruments read the counters only when a listener
/// collects, so the data path pays nothing extra.
/// </summary>
public sealed class StorageMetrics : IDisposable
{
    /// <summary>The meter name.</summary>
    public const string MeterName = Core.Diagnostics.LMCacheMetrics.StorageMeter;

    private readonly Meter _meter;
    private readonly List<TierStatistics> _tiers = [];
    private readonly Lock _lock = new();

    /// <summary>Creates the instruments on a meter from <paramref name="meterFactory"/> (its scope is what an exporter listens to).</summary>
    public StorageMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        _meter = meterFactory.Create(MeterName);
        _meter.CreateObservableCounter("lmcache.storage.hits", () => Observe(t => t.Hits), "{chunk}", "Chunks read from a tier.");
        _meter.CreateObservableCounter("lmcache.storage.misses", () => Observe(t => t.Misses), "{chunk}", "Chunks asked of a tier and not found.");
        _meter.CreateObservableGauge("lmcache.storage.hit_rate", ObserveHitRate, "1", "Chunk hits / (hits + misses) of a tier.");
        _meter.CreateObservableCounter("lmcache.storage.bytes_read", () => Observe(t => t.BytesRead), "By", "Bytes read from a tier.");
        _meter.CreateObservableCounter("lmcache.storage.puts", () => Observe(t => t.Puts), "{chunk}", "Chunks stored into a tier.");
        _meter.CreateObservableCounter("lmcache.storage.bytes_written", () => Observe(t => t.BytesWritten), "By", "Bytes stored into a tier.");
        _meter.CreateObservableCounter("lmcache.storage.puts_dropped", () => Observe(t => t.PutsDropped), "{chunk}", "Puts dropped (queue full, no space, tier down).");
        _meter.CreateObservableCounter("lmcache.storage.evictions", () => Observe(t => t.Evictions), "{chunk}", "Entries evicted to make room.");
        _meter.CreateObservableCounter("lmcache.storage.errors", () => Observe(t => t.Errors), "{error}", "Failures turned into misses.");
        _meter.CreateObservableGauge("lmcache.storage.entries", () => Observe(t => t.Entries), "{chunk}", "Entries held by a tier.");
        _meter.CreateObservableGauge("lmcache.storage.used_bytes", () => Observe(t => t.UsedBytes), "By", "Bytes held by a tier.");
        _meter.CreateObservableGauge("lmcache.storage.capacity_bytes", () => Observe(t => t.CapacityBytes), "By", "Capacity of a tier (0 = unbounded).");
    }

    /// <summary>Adds a tier to publish.</summary>
    public void Register(TierStatistics statistics)
    {
        lock (_lock)
        {
            _tiers.Add(statistics);
        }
    }

    /// <summary>The registered tiers.</summary>
    public IReadOnlyList<TierStatistics> Tiers
    {
        get
        {
            lock (_lock)
            {
                return [.. _tiers];
            }
        }
    }

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();

    private IEnumerable<Measurement<double>> ObserveHitRate()
    {
        foreach (var tier in Tiers)
        {
            yield return new Measurement<double>(tier.HitRate, new KeyValuePair<string, object?>("tier", tier.Tier));
        }
    }

    private IEnumerable<Measurement<long>> Observe(Func<TierStatistics, long> read)
    {
        foreach (var tier in Tiers)
        {
            yield return new Measurement<long>(read(tier), new KeyValuePair<string, object?>("tier", tier.Tier));
        }
    }
}
