using System.Diagnostics.Metrics;

namespace LMCache.Connectors.Redis;

/// <summary>
/// Metrics of one Redis connector (Meter <c>LMCache.Connectors.Redis</c>), created from the engine's
/// <see cref="IMeterFactory"/> so they are exported with the engine's meters; a connector made without a factory (the
/// <c>keys</c> tools, direct use) owns a meter of its own and disposes it with itself.
/// </summary>
internal sealed class RedisMetrics : IDisposable
{
    /// <summary>The meter name.</summary>
    public const string MeterName = "LMCache.Connectors.Redis";

    private readonly Meter? _ownedMeter;

    /// <summary>Creates the instruments on a meter of <paramref name="meterFactory"/>, or on an owned meter when it is null.</summary>
    public RedisMetrics(IMeterFactory? meterFactory)
    {
        Meter meter;
        if (meterFactory is null)
        {
            meter = _ownedMeter = new Meter(MeterName);
        }
        else
        {
            meter = meterFactory.Create(new MeterOptions(MeterName));
        }
        InvalidEntries = meter.CreateCounter<long>("lmcache.redis.invalid_entries", "{entry}", "Entries found invalid on read (treated as misses and removed).");
        ConnectionFailures = meter.CreateCounter<long>("lmcache.redis.connection_failures", "{failure}", "Connection failures reported by the Redis client.");
        BytesRead = meter.CreateCounter<long>("lmcache.redis.bytes_read", "By", "Payload bytes read and validated.");
        DirectReads = meter.CreateCounter<long>("lmcache.redis.direct_reads", "{read}", "Payload reads received straight into chunk memory, without a copy.");
        BytesWritten = meter.CreateCounter<long>("lmcache.redis.bytes_written", "By", "Payload bytes written.");
    }

    /// <summary>Entries found invalid on read and removed, tagged <c>reason</c> (checksum, metadata, payload_missing, metadata_missing).</summary>
    public Counter<long> InvalidEntries { get; }

    /// <summary>Connection failures reported by the client, tagged <c>type</c>.</summary>
    public Counter<long> ConnectionFailures { get; }

    /// <summary>Bytes read from payloads (after validation).</summary>
    public Counter<long> BytesRead { get; }

    /// <summary>Payload reads the client wrote straight into chunk memory (no copy by the connector).</summary>
    public Counter<long> DirectReads { get; }

    /// <summary>Bytes written as payloads.</summary>
    public Counter<long> BytesWritten { get; }

    /// <summary>Disposes the owned meter, if any (a factory's meters are the factory's to dispose).</summary>
    public void Dispose() => _ownedMeter?.Dispose();
}
