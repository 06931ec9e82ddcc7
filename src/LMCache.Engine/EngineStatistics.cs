using System.Diagnostics.Metrics;
using LMCache.Core.Diagnostics;

namespace LMCache.Engine;

/// <summary>
/// Request-level counters of an engine (the original's <c>num_*_requests</c>, <c>num_requested_tokens</c>,
/// <c>num_hit_tokens</c>), also published on the <c>LMCache.Engine</c> meter.
/// </summary>
public sealed class EngineStatistics : IDisposable
{
    /// <summary>The meter name.</summary>
    public const string MeterName = LMCacheMetrics.EngineMeter;

    private readonly Meter _meter;
    private long _lookupRequests, _retrieveRequests, _storeRequests, _requestedTokens, _hitTokens, _storedTokens;

    internal EngineStatistics(IMeterFactory meterFactory)
    {
        _meter = meterFactory.Create(MeterName);
        _meter.CreateObservableCounter("lmcache.engine.lookup_requests", () => LookupRequests, "{request}", "Lookups served.");
        _meter.CreateObservableCounter("lmcache.engine.retrieve_requests", () => RetrieveRequests, "{request}", "Retrieves served.");
        _meter.CreateObservableCounter("lmcache.engine.store_requests", () => StoreRequests, "{request}", "Stores served.");
        _meter.CreateObservableCounter("lmcache.engine.requested_tokens", () => RequestedTokens, "{token}", "Tokens asked for by retrieves.");
        _meter.CreateObservableCounter("lmcache.engine.hit_tokens", () => HitTokens, "{token}", "Tokens loaded from the cache.");
        _meter.CreateObservableCounter("lmcache.engine.stored_tokens", () => StoredTokens, "{token}", "Tokens stored.");
        _meter.CreateObservableGauge("lmcache.engine.cache_hit_rate", () => HitRate, "1", "Hit tokens / requested tokens since start.");
        var buckets = new InstrumentAdvice<double> { HistogramBucketBoundaries = LMCacheMetrics.DurationBuckets };
        RetrieveDuration = _meter.CreateHistogram("lmcache.engine.retrieve_duration", "s", "Time to retrieve a request's chunks.", advice: buckets);
        StoreDuration = _meter.CreateHistogram("lmcache.engine.store_duration", "s", "Time to store a request's chunks into the CPU tier.", advice: buckets);
    }

    /// <summary>Lookups served.</summary>
    public long LookupRequests => Interlocked.Read(ref _lookupRequests);

    /// <summary>Retrieves served.</summary>
    public long RetrieveRequests => Interlocked.Read(ref _retrieveRequests);

    /// <summary>Stores served.</summary>
    public long StoreRequests => Interlocked.Read(ref _storeRequests);

    /// <summary>Tokens asked for by retrieves.</summary>
    public long RequestedTokens => Interlocked.Read(ref _requestedTokens);

    /// <summary>Tokens loaded from the cache.</summary>
    public long HitTokens => Interlocked.Read(ref _hitTokens);

    /// <summary>Tokens stored.</summary>
    public long StoredTokens => Interlocked.Read(ref _storedTokens);

    /// <summary>Hit tokens / requested tokens since start (0 before any retrieve).</summary>
    public double HitRate => RequestedTokens == 0 ? 0 : (double)HitTokens / RequestedTokens;

    internal Histogram<double> RetrieveDuration { get; }

    internal Histogram<double> StoreDuration { get; }

    internal void RecordLookup() => Interlocked.Increment(ref _lookupRequests);

    internal void RecordRetrieve(int requested, int hit)
    {
        Interlocked.Increment(ref _retrieveRequests);
        Interlocked.Add(ref _requestedTokens, requested);
        Interlocked.Add(ref _hitTokens, hit);
    }

    internal void RecordStore(int stored)
    {
        Interlocked.Increment(ref _storeRequests);
        Interlocked.Add(ref _storedTokens, stored);
    }

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();
}
