using System.Diagnostics.Metrics;

namespace LMCache.Connectors.Redis;

/// <summary>Metrics of the Redis connectors (Meter <c>LMCache.Connectors.Redis</c>).</summary>
internal static class RedisMetrics
{
    /// <summary>The meter name.</summary>
    public const string MeterName = "LMCache.Connectors.Redis";

    private static readonly Meter s_meter = new(MeterName);

    /// <summary>Entries found invalid on read and removed, tagged <c>reason</c> (checksum, metadata, payload_missing, metadata_missing).</summary>
    public static readonly Counter<long> InvalidEntries = s_meter.CreateCounter<long>(
        "lmcache.redis.invalid_entries", "{entry}", "Entries found invalid on read (treated as misses and removed).");

    /// <summary>Connection failures reported by the client, tagged <c>type</c>.</summary>
    public static readonly Counter<long> ConnectionFailures = s_meter.CreateCounter<long>(
        "lmcache.redis.connection_failures", "{failure}", "Connection failures reported by the Redis client.");

    /// <summary>Bytes read from payloads (after validation).</summary>
    public static readonly Counter<long> BytesRead = s_meter.CreateCounter<long>("lmcache.redis.bytes_read", "By", "Payload bytes read and validated.");

    /// <summary>Payload reads the client wrote straight into chunk memory (no copy by the connector).</summary>
    public static readonly Counter<long> DirectReads = s_meter.CreateCounter<long>(
        "lmcache.redis.direct_reads", "{read}", "Payload reads received straight into chunk memory, without a copy.");

    /// <summary>Bytes written as payloads.</summary>
    public static readonly Counter<long> BytesWritten = s_meter.CreateCounter<long>("lmcache.redis.bytes_written", "By", "Payload bytes written.");
}
