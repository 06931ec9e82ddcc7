using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace LMCache.Core.Diagnostics;

/// <summary>
/// The one Prometheus writer of LMCache.NET: listens (<see cref="MeterListener"/>) to the instruments that the meters
/// of the given <see cref="IMeterFactory"/> scopes publish and that <see cref="LMCacheMetrics.Table"/> names, aggregates
/// their measurements, and writes them in the text exposition format 0.0.4 under the table's names, types and help
/// strings. Serve, the lm:// server and the controller each own one over their own meters.
/// </summary>
/// <remarks>
/// <para>Counters and up-down counters are summed per tag set; observable instruments are read at each
/// <see cref="Write()"/> (their series are those the last collection reported: a series that stops being reported
/// disappears); histograms keep the table's bucket bounds, written cumulatively with <c>+Inf</c>, <c>_sum</c> and
/// <c>_count</c>. Tags become labels after the exporter's constant labels.</para>
/// <para>Thread-safe: measurements arrive from any thread; <see cref="Write()"/> may run concurrently with them.</para>
/// </remarks>
public sealed class PrometheusExporter : IDisposable
{
    /// <summary>The content type of <see cref="Write()"/>'s output.</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    private readonly MeterListener _listener;
    private readonly HashSet<object> _scopes;
    private readonly IReadOnlyList<LMCacheMetric> _table;
    private readonly Dictionary<(string Meter, string Instrument), LMCacheMetric> _byInstrument;
    private readonly Dictionary<LMCacheMetric, MetricState> _states = [];
    private readonly string _constantLabels;
    private readonly Lock _lock = new();

    /// <summary>Starts listening.</summary>
    /// <param name="scopes">The meter factories whose meters are exported (a meter's <see cref="Meter.Scope"/> must be one of them).</param>
    /// <param name="constantLabels">Labels written on every sample first (e.g. <c>model_name</c>); null for none.</param>
    /// <param name="table">The metric table; null for <see cref="LMCacheMetrics.Table"/>.</param>
    public PrometheusExporter(IEnumerable<IMeterFactory> scopes, IEnumerable<KeyValuePair<string, string>>? constantLabels = null, IReadOnlyList<LMCacheMetric>? table = null)
    {
        ArgumentNullException.ThrowIfNull(scopes);
        _scopes = [.. scopes];
        _table = table ?? LMCacheMetrics.Table;
        _byInstrument = _table.ToDictionary(m => (m.Meter, m.Instrument));
        var labels = new StringBuilder();
        foreach (var (name, value) in constantLabels ?? [])
        {
            AppendLabel(labels, name, value);
        }
        _constantLabels = labels.ToString();
        _listener = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Scope is { } scope && _scopes.Contains(scope)
                    && _byInstrument.TryGetValue((instrument.Meter.Name, instrument.Name), out var metric))
                {
                    MetricState? state;
                    lock (_lock)
                    {
                        if (!_states.TryGetValue(metric, out state))
                        {
                            state = new MetricState(metric);
                            _states.Add(metric, state);
                        }
                    }
                    listener.EnableMeasurementEvents(instrument, new InstrumentState(state, instrument.IsObservable));
                }
            },
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, state) => Record(state, value, tags));
        _listener.SetMeasurementEventCallback<int>((instrument, value, tags, state) => Record(state, value, tags));
        _listener.SetMeasurementEventCallback<double>((instrument, value, tags, state) => Record(state, value, tags));
        _listener.Start();
    }

    /// <summary>Convenience overload for one scope.</summary>
    public PrometheusExporter(IMeterFactory scope, IEnumerable<KeyValuePair<string, string>>? constantLabels = null)
        : this([scope], constantLabels)
    {
    }

    /// <summary>Collects the observable instruments and returns every exported metric as exposition text.</summary>
    public string Write()
    {
        var text = new StringBuilder(4096);
        Write(text);
        return text.ToString();
    }

    /// <summary>Collects the observable instruments and appends every exported metric to <paramref name="text"/>.</summary>
    public void Write(StringBuilder text)
    {
        ArgumentNullException.ThrowIfNull(text);
        MetricState[] states;
        lock (_lock)
        {
            states = [.. _states.Values];
        }
        foreach (var state in states)
        {
            state.BeginCollection();
        }
        _listener.RecordObservableInstruments();
        foreach (var metric in _table)
        {
            MetricState? state;
            lock (_lock)
            {
                _states.TryGetValue(metric, out state);
            }
            state?.Write(text, _constantLabels);
        }
    }

    /// <inheritdoc />
    public void Dispose() => _listener.Dispose();

    private static void Record(object? state, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (state is InstrumentState instrument)
        {
            instrument.Metric.Record(value, tags, instrument.IsObservable);
        }
    }

    internal static void AppendLabel(StringBuilder text, string name, string value)
    {
        if (text.Length > 0)
        {
            text.Append(',');
        }
        text.Append(name).Append("=\"");
        foreach (var c in value)
        {
            _ = c switch
            {
                '\\' => text.Append("\\\\"),
                '"' => text.Append("\\\""),
                '\n' => text.Append("\\n"),
                _ => text.Append(c),
            };
        }
        text.Append('"');
    }

    internal static string FormatValue(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf"
        : double.IsNegativeInfinity(value) ? "-Inf"
        : double.IsNaN(value) ? "NaN"
        : value.ToString("R", CultureInfo.InvariantCulture);

    private sealed record InstrumentState(MetricState Metric, bool IsObservable);

    /// <summary>The series of one table row, keyed by their rendered tag labels.</summary>
    private sealed class MetricState(LMCacheMetric metric)
    {
        private readonly Lock _lock = new();
        private readonly Dictionary<string, Series> _series = new(StringComparer.Ordinal);

        public void BeginCollection()
        {
            lock (_lock)
            {
                // Observable series are re-reported by the collection that follows; a series not reported again is gone.
                foreach (var key in _series.Where(s => s.Value.Observed).Select(s => s.Key).ToList())
                {
                    _series.Remove(key);
                }
            }
        }

        public void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags, bool observed)
        {
            var labels = new StringBuilder();
            foreach (var tag in tags)
            {
                AppendLabel(labels, tag.Key, Convert.ToString(tag.Value, CultureInfo.InvariantCulture) ?? "");
            }
            var key = labels.ToString();
            lock (_lock)
            {
                if (!_series.TryGetValue(key, out var series))
                {
                    series = new Series(observed, metric.Type == LMCacheMetricType.Histogram ? new long[metric.Buckets.Count + 1] : null);
                    _series.Add(key, series);
                }
                if (series.Buckets is { } buckets)
                {
                    var bucket = 0;
                    while (bucket < metric.Buckets.Count && value > metric.Buckets[bucket])
                    {
                        bucket++;
                    }
                    buckets[bucket]++;
                    series.Sum += value;
                    series.Count++;
                }
                else if (observed)
                {
                    series.Value = value;   // an observable reports its current value (a total, for counters)
                }
                else
                {
                    series.Value += value;
                }
            }
        }

        public void Write(StringBuilder text, string constantLabels)
        {
            var type = metric.Type switch
            {
                LMCacheMetricType.Counter => "counter",
                LMCacheMetricType.Gauge => "gauge",
                _ => "histogram",
            };
            text.Append("# HELP ").Append(metric.Name).Append(' ').Append(metric.Help.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal)).Append('\n');
            text.Append("# TYPE ").Append(metric.Name).Append(' ').Append(type).Append('\n');
            lock (_lock)
            {
                foreach (var (tags, series) in _series.OrderBy(s => s.Key, StringComparer.Ordinal))
                {
                    var labels = constantLabels.Length == 0 ? tags : tags.Length == 0 ? constantLabels : constantLabels + "," + tags;
                    if (series.Buckets is not { } buckets)
                    {
                        Sample(text, metric.Name, labels, series.Value);
                        continue;
                    }
                    long cumulative = 0;
                    for (var i = 0; i <= metric.Buckets.Count; i++)
                    {
                        cumulative += buckets[i];
                        var bound = new StringBuilder(labels);
                        AppendLabel(bound, "le", i < metric.Buckets.Count ? FormatValue(metric.Buckets[i]) : "+Inf");
                        Sample(text, metric.Name + "_bucket", bound.ToString(), cumulative);
                    }
                    Sample(text, metric.Name + "_sum", labels, series.Sum);
                    Sample(text, metric.Name + "_count", labels, series.Count);
                }
            }
        }

        private static void Sample(StringBuilder text, string name, string labels, double value)
        {
            text.Append(name);
            if (labels.Length > 0)
            {
                text.Append('{').Append(labels).Append('}');
            }
            text.Append(' ').Append(FormatValue(value)).Append('\n');
        }
    }

    private sealed class Series(bool observed, long[]? buckets)
    {
        public bool Observed { get; } = observed;

        public long[]? Buckets { get; } = buckets;

        public double Value { get; set; }

        public double Sum { get; set; }

        public long Count { get; set; }
    }
}
