using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text.RegularExpressions;
using LMCache.Core.Diagnostics;

namespace LMCache.Core.Tests.Diagnostics;

/// <summary>
/// The one Prometheus writer: its output parses as text exposition format 0.0.4, its HELP/TYPE lines are the table's,
/// histograms are cumulative with +Inf, _sum and _count, and it sees only the meters of its own scope.
/// </summary>
public sealed partial class PrometheusExporterTests
{
    private static LMCacheMetric Row(string instrument) => LMCacheMetrics.Table.Single(m => m.Instrument == instrument);

    [Fact]
    public void The_table_names_each_instrument_once_with_valid_prometheus_names_and_ascending_buckets()
    {
        Assert.Equal(LMCacheMetrics.Table.Count, LMCacheMetrics.Table.Select(m => (m.Meter, m.Instrument)).Distinct().Count());
        foreach (var group in LMCacheMetrics.Table.GroupBy(m => m.Meter))
        {
            Assert.Equal(group.Count(), group.Select(m => m.Name).Distinct().Count());   // one exporter never writes a family twice
        }
        foreach (var metric in LMCacheMetrics.Table)
        {
            Assert.Matches(MetricName(), metric.Name);
            Assert.False(string.IsNullOrWhiteSpace(metric.Help));
            Assert.Equal(metric.Type == LMCacheMetricType.Histogram, metric.Buckets.Count > 0);
            Assert.True(metric.Buckets.Zip(metric.Buckets.Skip(1)).All(p => p.First < p.Second), metric.Name);
        }
        Assert.Contains(LMCacheMetrics.Table, m => m.Name == "lmcache:num_hit_tokens" && m.Meter == LMCacheMetrics.EngineMeter);
        Assert.Contains(LMCacheMetrics.Table, m => m.Name == "lmcache:time_to_retrieve" && m.Type == LMCacheMetricType.Histogram);
    }

    [Fact]
    public void Counters_gauges_and_histograms_are_written_under_the_table_names_and_parse()
    {
        using var factory = new LMCacheMeterFactory();
        using var exporter = new PrometheusExporter(factory, [new("model_name", "m\"1")]);
        var serving = factory.Create(LMCacheMetrics.ServingMeter);
        var engine = factory.Create(LMCacheMetrics.EngineMeter);
        var requests = serving.CreateCounter<long>("lmcache.serving.requests");
        var depth = 3;
        serving.CreateObservableGauge("lmcache.serving.queue_depth", () => depth);
        var retrieve = engine.CreateHistogram<double>("lmcache.engine.retrieve_duration");
        var unlisted = engine.CreateCounter<long>("lmcache.engine.not_in_the_table");

        requests.Add(1, new KeyValuePair<string, object?>("endpoint", "/v1/completions"), new KeyValuePair<string, object?>("status", 200));
        requests.Add(2, new KeyValuePair<string, object?>("endpoint", "/v1/completions"), new KeyValuePair<string, object?>("status", 200));
        requests.Add(1, new KeyValuePair<string, object?>("endpoint", "/v1/completions"), new KeyValuePair<string, object?>("status", 400));
        foreach (var seconds in new[] { 0.0005, 0.003, 0.003, 0.2, 30.0 })
        {
            retrieve.Record(seconds);
        }
        unlisted.Add(5);

        var families = Parse(exporter.Write());

        var requestsRow = Row("lmcache.serving.requests");
        var requestsFamily = families[requestsRow.Name];
        Assert.Equal(("counter", requestsRow.Help), (requestsFamily.Type, requestsFamily.Help));
        Assert.Equal(3, requestsFamily.Value("model_name=\"m\\\"1\",endpoint=\"/v1/completions\",status=\"200\""));
        Assert.Equal(1, requestsFamily.Value("model_name=\"m\\\"1\",endpoint=\"/v1/completions\",status=\"400\""));

        var depthRow = Row("lmcache.serving.queue_depth");
        Assert.Equal("gauge", families[depthRow.Name].Type);
        Assert.Equal(3, families[depthRow.Name].Value("model_name=\"m\\\"1\""));
        depth = 7;
        Assert.Equal(7, Parse(exporter.Write())[depthRow.Name].Value("model_name=\"m\\\"1\""));

        var histogramRow = Row("lmcache.engine.retrieve_duration");
        var histogram = families[histogramRow.Name];
        Assert.Equal(("histogram", histogramRow.Help), (histogram.Type, histogram.Help));
        var buckets = histogram.Samples.Where(s => s.Name == histogramRow.Name + "_bucket").ToList();
        var bounds = histogramRow.Buckets.ToList();
        Assert.Equal(histogramRow.Buckets.Count + 1, buckets.Count);
        Assert.Equal([.. histogramRow.Buckets.Select(b => b.ToString("R", CultureInfo.InvariantCulture)), "+Inf"], buckets.Select(b => Le().Match(b.Labels).Groups[1].Value));
        Assert.True(buckets.Zip(buckets.Skip(1)).All(p => p.First.Value <= p.Second.Value), "buckets are cumulative");
        Assert.Equal(1, buckets[0].Value);                                                   // le=0.001: 0.0005
        Assert.Equal(3, buckets[bounds.IndexOf(0.005)].Value);                 // + two of 0.003
        Assert.Equal(4, buckets[bounds.IndexOf(0.25)].Value);                  // + 0.2
        Assert.Equal(4, buckets[^2].Value);                                                  // 30 s is above every bound
        Assert.Equal(5, buckets[^1].Value);                                                  // +Inf counts everything
        Assert.Equal(5, histogram.Samples.Single(s => s.Name == histogramRow.Name + "_count").Value);
        Assert.Equal(30.2065, histogram.Samples.Single(s => s.Name == histogramRow.Name + "_sum").Value, 9);

        Assert.DoesNotContain(families.Keys, name => name.Contains("not_in_the_table", StringComparison.Ordinal));
    }

    [Fact]
    public void An_exporter_sees_only_the_meters_of_its_scope()
    {
        using var mine = new LMCacheMeterFactory();
        using var other = new LMCacheMeterFactory();
        using var exporter = new PrometheusExporter(mine);
        mine.Create(LMCacheMetrics.ServingMeter).CreateCounter<long>("lmcache.serving.prompt_tokens").Add(10);
        other.Create(LMCacheMetrics.ServingMeter).CreateCounter<long>("lmcache.serving.prompt_tokens").Add(1000);
        using var unscoped = new Meter(LMCacheMetrics.ServingMeter);
        unscoped.CreateCounter<long>("lmcache.serving.prompt_tokens").Add(100_000);

        var family = Parse(exporter.Write())["lmcache_serving_prompt_tokens_total"];
        Assert.Equal(10, Assert.Single(family.Samples).Value);
    }

    [Fact]
    public void An_observable_series_that_is_no_longer_reported_disappears()
    {
        using var factory = new LMCacheMeterFactory();
        using var exporter = new PrometheusExporter(factory);
        var tiers = new List<string> { "LocalCPUBackend", "LocalDiskBackend" };
        factory.Create(LMCacheMetrics.StorageMeter).CreateObservableGauge("lmcache.storage.entries",
            () => tiers.Select(t => new Measurement<long>(1, new KeyValuePair<string, object?>("tier", t))).ToList());
        Assert.Equal(2, Parse(exporter.Write())["lmcache_tier_entries"].Samples.Count);
        tiers.RemoveAt(1);
        Assert.Equal("tier=\"LocalCPUBackend\"", Assert.Single(Parse(exporter.Write())["lmcache_tier_entries"].Samples).Labels);
    }

    private sealed record Sample(string Name, string Labels, double Value);

    private sealed class Family
    {
        public string? Help { get; set; }

        public string? Type { get; set; }

        public List<Sample> Samples { get; } = [];

        public double Value(string labels) => Samples.Single(s => s.Labels == labels).Value;
    }

    /// <summary>A strict reader of the text exposition format 0.0.4: every line is HELP, TYPE or a sample of a declared family.</summary>
    private static Dictionary<string, Family> Parse(string text)
    {
        Assert.EndsWith("\n", text, StringComparison.Ordinal);
        var families = new Dictionary<string, Family>(StringComparer.Ordinal);
        Family? current = null;
        string? currentName = null;
        foreach (var line in text.TrimEnd('\n').Split('\n'))
        {
            if (HelpLine().Match(line) is { Success: true } help)
            {
                Assert.False(families.ContainsKey(help.Groups[1].Value), $"family {help.Groups[1].Value} is declared once");
                currentName = help.Groups[1].Value;
                current = new Family { Help = help.Groups[2].Value };
                families.Add(currentName, current);
                continue;
            }
            if (TypeLine().Match(line) is { Success: true } type)
            {
                Assert.Equal(currentName, type.Groups[1].Value);
                current!.Type = type.Groups[2].Value;
                continue;
            }
            var sample = SampleLine().Match(line);
            Assert.True(sample.Success, $"not a sample line: {line}");
            Assert.NotNull(current);
            Assert.NotNull(current.Type);
            var name = sample.Groups[1].Value;
            var allowed = current.Type == "histogram" ? new[] { currentName + "_bucket", currentName + "_sum", currentName + "_count" } : [currentName!];
            Assert.Contains(name, allowed);
            var value = sample.Groups[3].Value switch
            {
                "+Inf" => double.PositiveInfinity,
                "-Inf" => double.NegativeInfinity,
                "NaN" => double.NaN,
                var v => double.Parse(v, NumberStyles.Float, CultureInfo.InvariantCulture),
            };
            current.Samples.Add(new Sample(name, sample.Groups[2].Value, value));
        }
        return families;
    }

    [GeneratedRegex(@"^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
    private static partial Regex MetricName();

    [GeneratedRegex(@"^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$")]
    private static partial Regex HelpLine();

    [GeneratedRegex(@"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$")]
    private static partial Regex TypeLine();

    [GeneratedRegex(@"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*=""(?:[^""\\]|\\.)*"",?)*)\})? (\S+)$")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"le=""([^""]*)""")]
    private static partial Regex Le();
}
