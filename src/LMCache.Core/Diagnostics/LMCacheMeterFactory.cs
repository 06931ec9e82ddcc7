using System.Diagnostics.Metrics;

namespace LMCache.Core.Diagnostics;

/// <summary>
/// A minimal <see cref="IMeterFactory"/> for hosts without dependency injection: every meter it creates has this
/// factory as its <see cref="Meter.Scope"/>, so a <see cref="PrometheusExporter"/> over the factory sees exactly the
/// meters of one server (tests run several in one process), and disposing the factory disposes them.
/// </summary>
/// <remarks>Hosts with a service provider use its <see cref="IMeterFactory"/> instead (<c>services.AddMetrics()</c>).</remarks>
public sealed class LMCacheMeterFactory : IMeterFactory
{
    private readonly List<Meter> _meters = [];
    private readonly Lock _lock = new();
    private bool _disposed;

    /// <inheritdoc />
    public Meter Create(MeterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var meter = new Meter(new MeterOptions(options.Name) { Version = options.Version, Tags = options.Tags, Scope = this });
            _meters.Add(meter);
            return meter;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Meter[] meters;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            meters = [.. _meters];
            _meters.Clear();
        }
        foreach (var meter in meters)
        {
            meter.Dispose();
        }
    }
}
