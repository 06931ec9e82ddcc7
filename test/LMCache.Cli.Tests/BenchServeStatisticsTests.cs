using LMCache.Bench;

namespace LMCache.Cli.Tests;

/// <summary>The arithmetic of <c>bench serve</c> on hand-made numbers: percentiles as numpy computes them, inter-token gaps, a run's summary.</summary>
public sealed class BenchServeStatisticsTests
{
    [Fact]
    public void Percentiles_interpolate_linearly_between_the_closest_ranks_as_numpy_does()
    {
        double[] four = [4, 1, 3, 2];   // unsorted on purpose
        Assert.Equal(2.5, ServeStatistics.Percentile(four, 50));
        Assert.Equal(1, ServeStatistics.Percentile(four, 0));
        Assert.Equal(4, ServeStatistics.Percentile(four, 100));
        // numpy.percentile([1, 2, 3, 4], 95) = 3.85: rank 0.95 × 3 = 2.85, between 3 and 4.
        Assert.Equal(3.85, ServeStatistics.Percentile(four, 95)!.Value, 12);
        // numpy.percentile(range(1, 101), 95) = 95.05.
        Assert.Equal(95.05, ServeStatistics.Percentile(Enumerable.Range(1, 100).Select(i => (double)i), 95)!.Value, 12);
        Assert.Equal(7, ServeStatistics.Percentile([7.0], 95));
        Assert.Null(ServeStatistics.Percentile([], 50));
        Assert.Throws<ArgumentOutOfRangeException>(() => ServeStatistics.Percentile(four, 101));
    }

    [Fact]
    public void Inter_token_latencies_are_the_gaps_after_the_first_token()
    {
        var gaps = ServeStatistics.InterTokenLatencies([1.0, 1.1, 1.3, 1.6]).ToArray();
        Assert.Equal(3, gaps.Length);
        Assert.Equal(0.1, gaps[0], 12);
        Assert.Equal(0.2, gaps[1], 12);
        Assert.Equal(0.3, gaps[2], 12);
        Assert.Empty(ServeStatistics.InterTokenLatencies([2.0]));
        Assert.Empty(ServeStatistics.InterTokenLatencies([]));
    }

    [Fact]
    public void A_summary_counts_the_successful_requests_and_leaves_the_failed_out_of_every_figure()
    {
        var first = Trace(sentAt: 0, arrivals: [0.5, 0.6, 0.8], prompt: 300, cached: 0, output: 3);
        var second = Trace(sentAt: 1, arrivals: [1.2, 1.5], prompt: 100, cached: 100, output: 2);
        var failed = Trace(sentAt: 0, arrivals: [9.0, 19.0], prompt: 1000, cached: 0, output: 2);
        failed.Error = "HTTP 503";

        var summary = ServeStatistics.Summarize([first, second, failed], wallSeconds: 2);

        Assert.Equal(3, summary.Requests);
        Assert.Equal(1, summary.Failed);
        Assert.Equal(400, summary.PromptTokens);
        Assert.Equal(100, summary.CachedTokens);
        Assert.Equal(0.25, summary.CachedTokenShare, 12);
        Assert.Equal(5, summary.OutputTokens);
        Assert.Equal(2.5, summary.OutputTokensPerSecond, 12);
        // TTFTs 0.5 and 0.2: p50 = 0.35; p95 = 0.2 + 0.95 × 0.3 = 0.485.
        Assert.Equal(0.35, summary.TtftP50!.Value, 12);
        Assert.Equal(0.485, summary.TtftP95!.Value, 12);
        // Gaps 0.1, 0.2 (first) and 0.3 (second), pooled: p50 = 0.2, p95 = 0.2 + 0.9 × 0.1 = 0.29.
        Assert.Equal(0.2, summary.ItlP50!.Value, 12);
        Assert.Equal(0.29, summary.ItlP95!.Value, 12);
    }

    [Fact]
    public void A_summary_of_requests_that_all_failed_has_no_latencies_and_no_ratio()
    {
        var failed = Trace(sentAt: 0, arrivals: [], prompt: 0, cached: 0, output: 0);
        failed.Error = "HTTP 503";
        var summary = ServeStatistics.Summarize([failed], wallSeconds: 1);
        Assert.Null(summary.TtftP95);
        Assert.Null(summary.ItlP95);
        Assert.Equal(0, summary.CachedTokenShare);
        Assert.Null(ServeStatistics.Ratio(summary.ItlP95, 0.1));
        Assert.Null(ServeStatistics.Ratio(1, 0));
        Assert.Equal(4, ServeStatistics.Ratio(2, 0.5));
    }

    private static RequestTrace Trace(double sentAt, double[] arrivals, int prompt, int cached, int output)
    {
        var trace = new RequestTrace { Kind = "chat", SentAt = sentAt, PromptTokens = prompt, CachedTokens = cached, OutputTokens = output, FinishedAt = arrivals.LastOrDefault() };
        trace.TokenArrivals.AddRange(arrivals);
        return trace;
    }
}
