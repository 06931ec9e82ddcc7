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
    private readonly Histogram<double> _interTokenLatency;
    private readonly Histogram<double> _e2eLatency;
    private readonly Histogram<int> _batchSize;

    /// <summary>Creates the instruments on a meter from <paramref name="meterFactory"/>.</summary>
    /// <param name="meterFactory">Where the meter comes from (its scope is what an exporter listens to).</param>
    /// <param name="queueDepth">Reads the requests waiting or running (the <c>queue_depth</c> gauge); null for none.</param>
    /// <param name="scheduler">Reads the engine's running and waiting requests (the <c>num_requests_running</c> and <c>num_requests_waiting</c> gauges); null for none.</param>
    public ServingMetrics(IMeterFactory meterFactory, Func<int>? queueDepth = null, Func<(int Running, int Waiting)>? scheduler = null)
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
        if (scheduler is not null)
        {
            _meter.CreateObservableGauge("lmcache.serving.num_requests_running", () => scheduler().Running, "{request}", "Requests holding a scheduler slot (vllm:num_requests_running).");
            _meter.CreateObservableGauge("lmcache.serving.num_requests_waiting", () => scheduler().Waiting, "{request}", "Requests waiting for a slot (vllm:num_requests_waiting).");
        }
        _interTokenLatency = _meter.CreateHistogram<double>("lmcache.serving.inter_token_latency", "s", "Time between two consecutive tokens of a request (vllm:inter_token_latency_seconds).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LMCacheMetrics.InterTokenLatencyBuckets });
        _e2eLatency = _meter.CreateHistogram<double>("lmcache.serving.e2e_request_latency", "s", "Time from request arrival to its last token (vllm:e2e_request_latency_seconds).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LMCacheMetrics.RequestLatencyBuckets });
        _batchSize = _meter.CreateHistogram<int>("lmcache.serving.batch_size", "{sequence}", "Sequences decoded together per scheduler step.",
            advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [.. LMCacheMetrics.BatchSizeBuckets.Select(b => (int)b)] });
    }

    /// <summary>Records the time between two consecutive tokens of one request.</summary>
    public void RecordInterTokenLatency(double seconds) => _interTokenLatency.Record(seconds);

    /// <summary>Records a finished request's time from arrival to its last token.</summary>
    public void RecordRequestLatency(double seconds) => _e2eLatency.Record(seconds);

    /// <summary>Records one scheduler step that decoded <paramref name="decodeRows"/> sequences together (steps that only prefilled are not counted).</summary>
    public void RecordBatch(int decodeRows)
    {
        if (decodeRows > 0)
        {
            _batchSize.Record(decodeRows);
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
