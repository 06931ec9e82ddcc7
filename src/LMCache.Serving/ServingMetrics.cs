using System.Diagnostics.Metrics;
using LMCache.Core.Diagnostics;

namespace LMCache.Serving;

/// <summary>
/// Request-level serving metrics on the <c>LMCache.Serving</c> meter. <c>/metrics</c> writes them through the
/// <see cref="PrometheusExporter"/> under the names of <see cref="LMCacheMetrics.Table"/>; nothing is counted twice.
/// </summary>
public sealed class ServingMetrics : IDisposable
{
    /// <summary>The meter name.</summary>
    public const string MeterName = LMCacheMetrics.ServingMeter;

    private readonly Meter _meter;
    private readonly Counter<long> _requests;
    private readonly Histogram<double> _timeToFirstToken;
    private readonly Counter<long> _promptTokens;
    private readonly Counter<long> _generationTokens;
    private readonly Counter<long> _cachedTokens;

    /// <summary>Creates the instruments on a meter from <paramref name="meterFactory"/>.</summary>
    /// <param name="meterFactory">Where the meter comes from (its scope is what an exporter listens to).</param>
    /// <param name="queueDepth">Reads the requests waiting or running (the <c>queue_depth</c> gauge); null for none.</param>
    public ServingMetrics(IMeterFactory meterFactory, Func<int>? queueDepth = null)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        _meter = meterFactory.Create(MeterName);
        _requests = _meter.CreateCounter<long>("lmcache.serving.requests", "{request}", "HTTP requests by endpoint and status.");
        _timeToFirstToken = _meter.CreateHistogram<double>("lmcache.serving.time_to_first_token", "s", "Time from request arrival to the first token.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LMCacheMetrics.TtftBuckets });
        _promptTokens = _meter.CreateCounter<long>("lmcache.serving.prompt_tokens", "{token}", "Prompt tokens processed.");
        _generationTokens = _meter.CreateCounter<long>("lmcache.serving.generation_tokens", "{token}", "Tokens generated.");
        _cachedTokens = _meter.CreateCounter<long>("lmcache.serving.cached_tokens", "{token}", "Prompt tokens served from LMCache.");
        if (queueDepth is not null)
        {
            _meter.CreateObservableGauge("lmcache.serving.queue_depth", queueDepth, "{request}", "Requests waiting or running.");
        }
    }

    /// <summary>Counts a finished HTTP request.</summary>
    public void RecordRequest(string endpoint, int status) =>
        _requests.Add(1, new KeyValuePair<string, object?>("endpoint", endpoint), new KeyValuePair<string, object?>("status", status));

    /// <summary>Counts a generation's tokens and its time to first token (seconds from arrival).</summary>
    public void RecordGeneration(int promptTokens, int completionTokens, int cachedTokens, double ttftSeconds)
    {
        _promptTokens.Add(promptTokens);
        _generationTokens.Add(completionTokens);
        _cachedTokens.Add(cachedTokens);
        _timeToFirstToken.Record(ttftSeconds);
    }

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();
}
