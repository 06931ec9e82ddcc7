namespace LMCache.Bench;

/// <summary>
/// What the client saw of one streamed request of <c>bench serve</c>: when it was sent, when each token arrived (seconds
/// on the run's clock) and the usage the server reported. <see cref="Error"/> is set when the request failed; its
/// timings are then left out of every latency.
/// </summary>
internal sealed record RequestTrace
{
    /// <summary>The workload item's kind (<c>chat</c>, <c>document</c>, <c>decode</c>, <c>short</c>, <c>long</c>).</summary>
    public required string Kind { get; init; }

    /// <summary>When the request was sent, in seconds on the run's clock.</summary>
    public required double SentAt { get; init; }

    /// <summary>When each streamed event that carried tokens arrived, in seconds on the run's clock, in order.</summary>
    public List<double> TokenArrivals { get; } = [];

    /// <summary>Prompt tokens (the usage's <c>prompt_tokens</c>).</summary>
    public int PromptTokens { get; set; }

    /// <summary>Prompt tokens served from LMCache (the usage's <c>prompt_tokens_details.cached_tokens</c>).</summary>
    public int CachedTokens { get; set; }

    /// <summary>Generated tokens (the usage's <c>completion_tokens</c>).</summary>
    public int OutputTokens { get; set; }

    /// <summary>When the stream ended, in seconds on the run's clock.</summary>
    public double FinishedAt { get; set; }

    /// <summary>Why the request failed (status and message); null when it succeeded.</summary>
    public string? Error { get; set; }

    /// <summary>Time to first token as the client saw it (queueing, prefill and transport included); null without a token.</summary>
    public double? TimeToFirstToken => TokenArrivals.Count > 0 ? TokenArrivals[0] - SentAt : null;
}

/// <summary>Per-run figures of <c>bench serve</c> computed from the client's traces.</summary>
internal sealed record ServeSummary
{
    public required int Requests { get; init; }
    public required int Failed { get; init; }
    public required double WallSeconds { get; init; }
    public required long PromptTokens { get; init; }
    public required long CachedTokens { get; init; }
    public required long OutputTokens { get; init; }
    public required double OutputTokensPerSecond { get; init; }
    public required double? TtftP50 { get; init; }
    public required double? TtftP95 { get; init; }
    public required double? ItlP50 { get; init; }
    public required double? ItlP95 { get; init; }

    /// <summary>Cached prompt tokens ÷ prompt tokens, over the successful requests.</summary>
    public double CachedTokenShare => PromptTokens == 0 ? 0 : CachedTokens / (double)PromptTokens;
}

/// <summary>
/// The arithmetic of <c>bench serve</c>: percentiles, inter-token latencies and a run's summary. Pure functions, so the
/// tests check them on hand-made numbers.
/// </summary>
internal static class ServeStatistics
{
    /// <summary>
    /// The <paramref name="percent"/>-th percentile of <paramref name="values"/> by linear interpolation between the
    /// closest ranks (numpy's default, which vLLM's serving benchmark uses): rank <c>p/100 × (n − 1)</c> in the sorted
    /// values. Null for no values.
    /// </summary>
    public static double? Percentile(IEnumerable<double> values, double percent)
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentOutOfRangeException.ThrowIfLessThan(percent, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(percent, 100);
        var sorted = values.ToArray();
        if (sorted.Length == 0)
        {
            return null;
        }
        Array.Sort(sorted);
        var rank = percent / 100 * (sorted.Length - 1);
        var lower = (int)Math.Floor(rank);
        var upper = Math.Min(lower + 1, sorted.Length - 1);
        return sorted[lower] + ((rank - lower) * (sorted[upper] - sorted[lower]));
    }

    /// <summary>
    /// The gaps between consecutive token events of one stream (the first token's own wait is its TTFT, not an ITL):
    /// n arrivals give n − 1 inter-token latencies.
    /// </summary>
    public static IEnumerable<double> InterTokenLatencies(IReadOnlyList<double> tokenArrivals)
    {
        ArgumentNullException.ThrowIfNull(tokenArrivals);
        for (var i = 1; i < tokenArrivals.Count; i++)
        {
            yield return tokenArrivals[i] - tokenArrivals[i - 1];
        }
    }

    /// <summary>
    /// Summarizes one run: token counts and the cached share over the successful requests; output tokens per second
    /// of the wall clock <paramref name="wallSeconds"/> (first request sent to last stream ended); TTFT and ITL
    /// percentiles over every successful request's tokens.
    /// </summary>
    public static ServeSummary Summarize(IReadOnlyCollection<RequestTrace> traces, double wallSeconds)
    {
        ArgumentNullException.ThrowIfNull(traces);
        var succeeded = traces.Where(t => t.Error is null).ToList();
        var output = succeeded.Sum(t => (long)t.OutputTokens);
        return new ServeSummary
        {
            Requests = traces.Count,
            Failed = traces.Count - succeeded.Count,
            WallSeconds = wallSeconds,
            PromptTokens = succeeded.Sum(t => (long)t.PromptTokens),
            CachedTokens = succeeded.Sum(t => (long)t.CachedTokens),
            OutputTokens = output,
            OutputTokensPerSecond = wallSeconds > 0 ? output / wallSeconds : 0,
            TtftP50 = Percentile(succeeded.Select(t => t.TimeToFirstToken).OfType<double>(), 50),
            TtftP95 = Percentile(succeeded.Select(t => t.TimeToFirstToken).OfType<double>(), 95),
            ItlP50 = Percentile(succeeded.SelectMany(t => InterTokenLatencies(t.TokenArrivals)), 50),
            ItlP95 = Percentile(succeeded.SelectMany(t => InterTokenLatencies(t.TokenArrivals)), 95),
        };
    }

    /// <summary><paramref name="numerator"/> ÷ <paramref name="denominator"/>, or null when either is missing or the denominator is not positive.</summary>
    public static double? Ratio(double? numerator, double? denominator) =>
        numerator is { } n && denominator is { } d && d > 0 ? n / d : null;
}
