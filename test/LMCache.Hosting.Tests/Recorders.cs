using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;

namespace LMCache.Hosting.Tests;

/// <summary>Keeps every log message of the host's category, in order.</summary>
internal sealed class HostLogRecorder : ILoggerProvider
{
    private readonly ConcurrentQueue<string> _messages = new();

    public IReadOnlyList<string> Messages => [.. _messages];

    /// <summary>The components the host reported disposed ("Disposed the X"), in order.</summary>
    public IReadOnlyList<string> Disposed => [.. _messages.Where(m => m.StartsWith("Disposed the ", StringComparison.Ordinal)).Select(m => m["Disposed the ".Length..])];

    public ILogger CreateLogger(string categoryName) => categoryName == typeof(LMCacheHost).FullName ? new Logger(_messages) : Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    public void Dispose()
    {
    }

    private sealed class Logger(ConcurrentQueue<string> messages) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            messages.Enqueue(formatter(state, exception));
    }
}

/// <summary>
/// An <see cref="IMeterFactory"/> that remembers the meters it created and learns, through a <see cref="MeterListener"/>,
/// when each is disposed (the listener's MeasurementsCompleted runs for every instrument of a disposed meter): the cache
/// engine disposes its meters when it is disposed, so this sees whether the host disposed the engine.
/// </summary>
internal sealed class DisposalTrackingMeterFactory : IMeterFactory
{
    private readonly ConcurrentDictionary<Meter, bool> _created = new();
    private readonly ConcurrentDictionary<Meter, bool> _completed = new();
    private readonly MeterListener _listener = new();

    public DisposalTrackingMeterFactory()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (_created.ContainsKey(instrument.Meter))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.MeasurementsCompleted = (instrument, _) => _completed[instrument.Meter] = true;
        _listener.Start();
    }

    public IReadOnlyCollection<string> CreatedNames => [.. _created.Keys.Select(m => m.Name).Order()];

    /// <summary>Meters created here that have instruments and were not disposed yet.</summary>
    public IReadOnlyCollection<string> Undisposed => [.. _created.Keys.Where(m => !_completed.ContainsKey(m)).Select(m => m.Name).Order()];

    public Meter Create(MeterOptions options)
    {
        var meter = new Meter(options);
        _created[meter] = true;
        return meter;
    }

    public void Dispose() => _listener.Dispose();
}
