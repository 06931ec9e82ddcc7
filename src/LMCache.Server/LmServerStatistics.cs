namespace LMCache.Server;

/// <summary>A snapshot of an <see cref="LmServer"/>'s counters (all counts since start).</summary>
/// <param name="Keys">Entries stored now.</param>
/// <param name="Bytes">Logical payload bytes stored now.</param>
/// <param name="CapacityBytes">Pool size in bytes.</param>
/// <param name="PoolUsedBytes">Pool bytes reserved now (aligned sizes, including payloads being received).</param>
/// <param name="Hits">GETs that found their key.</param>
/// <param name="Misses">GETs that did not.</param>
/// <param name="Puts">PUTs stored.</param>
/// <param name="PutsRejected">PUTs drained and dropped because no room could be made.</param>
/// <param name="Evictions">Entries evicted to make room.</param>
/// <param name="EvictedBytes">Payload bytes evicted.</param>
/// <param name="ActiveConnections">Connections open now.</param>
/// <param name="TotalConnections">Connections accepted.</param>
/// <param name="ConnectionErrors">Connections closed because of a protocol error, a timeout or a broken socket.</param>
/// <param name="BytesReceived">Payload bytes received (PUT).</param>
/// <param name="BytesSent">Payload bytes sent (GET, LIST).</param>
/// <param name="Spilled">Evicted entries handed to the disk spill.</param>
/// <param name="SpillHits">GETs served from the disk spill (and promoted back to memory).</param>
/// <param name="SpillKeys">Entries in the disk spill now.</param>
public sealed record LmServerStatistics(
    long Keys,
    long Bytes,
    long CapacityBytes,
    long PoolUsedBytes,
    long Hits,
    long Misses,
    long Puts,
    long PutsRejected,
    long Evictions,
    long EvictedBytes,
    long ActiveConnections,
    long TotalConnections,
    long ConnectionErrors,
    long BytesReceived,
    long BytesSent,
    long Spilled,
    long SpillHits,
    long SpillKeys);
