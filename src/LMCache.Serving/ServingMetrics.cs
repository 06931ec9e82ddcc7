using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using LMCache.Engine;

namespace LMCache.Serving;

/// <summary>
/// Request-level serving metrics, published on the <c>LMCache.Serving</c> meter and rendered in the Prometheus text
/// format by <see cref="WritePrometheus"/> together with the cache's per-tier statistics.
/// </summary>
public sealed class ServingMetrics : IDisposable
{
    /// <summary>The meter name.</summary>
    public const string MeterName = "LMCache.Serving";

    /// <summary>Upper bounds of the TTFT histogram buckets, in seconds.</summary>
    public static readonly double[] TtftBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80];

    private readonly Meter _meter;
    private readonly Counter<long> _requestsCounter;
    private readonly Histogram<double> _ttftHistogram;
    private readonly Lock _lock = new();
    private readonly Dictionary<(string Endpoint, int Status), long> _requests = [];
    private readonly long[] _ttftCounts = new long[TtftBuckets.Length + 1];
    private double _ttftSum;
    private long _ttftCount;
    private long _promptTokens, _generationTokens, _cachedTokens;

    /// <summary>Creates the metrics on a meter from <paramref name="meterFactory"/> (or a private meter).</summary>
    public ServingMetrics(IMeterFactory? meterFactory = null)
    {
        _meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        _requestsCounter = _meter.CreateCounter<long>("lmcache.serving.requests", "{request}", "HTTP requests by endpoint and status.");
        _ttftHistogram = _meter.CreateHistogram<double>("lmcache.serving.time_to_first_token", "s", "Time from request arrival to the first token.");
        _meter.CreateObservableCounter("lmcache.serving.prompt_tokens", () => Interlocked.Read(ref _promptTokens), "{token}", "Prompt tokens processed.");
        _meter.CreateObservableCounter("lmcache.serving.generation_tokens", () => Interlocked.Read(ref _generationTokens), "{token}", "Tokens generated.");
        _meter.CreateObservableCounter("lmcache.serving.cached_tokens", () => Interlocked.Read(ref _cachedTokens), "{token}", "Prompt tokens served from LMCache.");
    }

    /// <summary>Counts a finished HTTP request.</summary>
    public void RecordRequest(string endpoint, int status)
    {
        _requestsCounter.Add(1, new KeyValuePair<string, object?>("endpoint", endpoint), new KeyValuePair<string, object?>("status", status));
        lock (_lock)
        {
            _requests[(endpoint, status)] = _requests.GetValueOrDefault((endpoint, status)) + 1;
        }
    }

    /// <summary>Counts a generation's tokens and its time to first token (seconds from arrival).</summary>
    public void RecordGeneration(int promptTokens, int completionTokens, int cachedTokens, double ttftSeconds)
    {
        Interlocked.Add(ref _promptTokens, promptTokens);
        Interlocked.Add(ref _generationTokens, completionTokens);
        Interlocked.Add(ref _cachedTokens, cachedTokens);
        _ttftHistogram.Record(ttftSeconds);
        lock (_lock)
        {
            var bucket = Array.FindIndex(TtftBuckets, b => ttftSeconds <= b);
            _ttftCounts[bucket < 0 ? TtftBuckets.Length : bucket]++;
            _ttftSum += ttftSeconds;
            _ttftCount++;
        }
    }

    /// <summary>Writes every metric in the Prometheus text exposition format (version 0.0.4).</summary>
    public void WritePrometheus(StringBuilder sb, string modelName, LMCacheEngine? cache, int queueDepth)
    {
        var model = Escape(modelName);
        lock (_lock)
        {
            Header(sb, "lmcache_serving_requests_total", "counter", "HTTP requests by endpoint and status code.");
            foreach (var ((endpoint, status), count) in _requests.OrderBy(kv => kv.Key.Endpoint, StringComparer.Ordinal).ThenBy(kv => kv.Key.Status))
            {
                sb.Append(CultureInfo.InvariantCulture, $"lmcache_serving_requests_total{{model_name=\"{model}\",endpoint=\"{Escape(endpoint)}\",status=\"{status}\"}} {count}\n");
            }
            Header(sb, "lmcache_serving_time_to_first_token_seconds", "histogram", "Time from request arrival to the first generated token.");
            long cumulative = 0;
            for (var i = 0; i < TtftBuckets.Length; i++)
            {
                cumulative += _ttftCounts[i];
                sb.Append(CultureInfo.InvariantCulture, $"lmcache_serving_time_to_first_token_seconds_bucket{{model_name=\"{model}\",le=\"{TtftBuckets[i].ToString(CultureInfo.InvariantCulture)}\"}} {cumulative}\n");
            }
            cumulative += _ttftCounts[^1];
            sb.Append(CultureInfo.InvariantCulture, $"lmcache_serving_time_to_first_token_seconds_bucket{{model_name=\"{model}\",le=\"+Inf\"}} {cumulative}\n");
            sb.Append(CultureInfo.InvariantCulture, $"lmcache_serving_time_to_first_token_seconds_sum{{model_name=\"{model}\"}} {_ttftSum.ToString("R", CultureInfo.InvariantCulture)}\n");
            sb.Append(CultureInfo.InvariantCulture, $"lmcache_serving_time_to_first_token_seconds_count{{model_name=\"{model}\"}} {_ttftCount}\n");
        }
        Single(sb, "lmcache_serving_prompt_tokens_total", "counter", "Prompt tokens processed.", model, Interlocked.Read(ref _promptTokens));
        Single(sb, "lmcache_serving_generation_tokens_total", "counter", "Tokens generated.", model, Interlocked.Read(ref _generationTokens));
        Single(sb, "lmcache_serving_cached_tokens_total", "counter", "Prompt tokens whose KV came from LMCache.", model, Interlocked.Read(ref _cachedTokens));
        Single(sb, "lmcache_serving_queue_depth", "gauge", "Requests waiting or running.", model, queueDepth);
        if (cache is null)
        {
            return;
        }
        var stats = cache.Statistics;
        Single(sb, "lmcache:num_lookup_requests", "counter", "Cache lookups.", model, stats.LookupRequests);
        Single(sb, "lmcache:num_retrieve_requests", "counter", "Cache retrieves.", model, stats.RetrieveRequests);
        Single(sb, "lmcache:num_store_requests", "counter", "Cache stores.", model, stats.StoreRequests);
        Single(sb, "lmcache:num_requested_tokens", "counter", "Tokens asked for by retrieves.", model, stats.RequestedTokens);
        Single(sb, "lmcache:num_hit_tokens", "counter", "Tokens loaded from the cache.", model, stats.HitTokens);
        Single(sb, "lmcache:cache_hit_rate", "gauge", "Hit tokens / requested tokens since start.", model, stats.HitRate);
        var tiers = cache.Storage.Backends;
        Header(sb, "lmcache_tier_hits_total", "counter", "Chunk hits per tier.");
        foreach (var tier in tiers)
        {
            sb.Append(CultureInfo.InvariantCulture, $"lmcache_tier_hits_total{{model_name=\"{model}\",tier=\"{Escape(tier.Name)}\"}} {tier.Statistics.Hits}\n");
        }
        Header(sb, "lmcache_tier_misses_total", "counter", "Chunk misses per tier.");
        foreach (var tier in tiers)
        {
            sb.Append(CultureInfo.InvariantCulture, $"lmcache_tier_misses_total{{model_name=\"{model}\",tier=\"{Escape(tier.Name)}\"}} {tier.Statistics.Misses}\n");
        }
        Header(sb, "lmcache_tier_hit_rate", "gauge", "Chunk hits / (hits + misses) per tier.");
        foreach (var tier in tiers)
        {
            sb.Append(CultureInfo.InvariantCulture, $"lmcache_tier_hit_rate{{model_name=\"{model}\",tier=\"{Escape(tier.Name)}\"}} {tier.Statistics.HitRate.ToString("R", CultureInfo.InvariantCulture)}\n");
        }
        Header(sb, "lmcache_tier_used_bytes", "gauge", "Bytes held per tier.");
        foreach (var tier in tiers)
        {
            sb.Append(CultureInfo.InvariantCulture, $"lmcache_tier_used_bytes{{model_name=\"{model}\",tier=\"{Escape(tier.Name)}\"}} {tier.Statistics.UsedBytes}\n");
        }
        Header(sb, "lmcache_tier_entries", "gauge", "Chunks held per tier.");
        foreach (var tier in tiers)
        {
            sb.Append(CultureInfo.InvariantCulture, $"lmcache_tier_entries{{model_name=\"{model}\",tier=\"{Escape(tier.Name)}\"}} {tier.Statistics.Entries}\n");
        }
    }

    private static void Header(StringBuilder sb, string name, string type, string help) =>
        sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append("\n# TYPE ").Append(name).Append(' ').Append(type).Append('\n');

    private static void Single(StringBuilder sb, string name, string type, string help, string model, double value)
    {
        Header(sb, name, type, help);
        sb.Append(CultureInfo.InvariantCulture, $"{name}{{model_name=\"{model}\"}} {value.ToString("R", CultureInfo.InvariantCulture)}\n");
    }

    private static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();
}
