namespace LMCache.Storage;

/// <summary>
/// Counters of one tier, updated with interlocked operations on the data path and published through
/// <see cref="Diagnostics.StorageMetrics"/>. Snapshots are cheap and allocation-free to read.
/// </summary>
public sealed class TierStatistics
{
    private long _hits, _misses, _bytesRead, _puts, _bytesWritten, _putsDropped, _evictions, _errors, _entries, _usedBytes;

    /// <summary>Creates statistics for <paramref name="tier"/> with a capacity (0 = unbounded or unknown).</summary>
    public TierStatistics(string tier, long capacityBytes)
    {
        Tier = tier;
        CapacityBytes = capacityBytes;
    }

    /// <summary>The tier name.</summary>
    public string Tier { get; }

    /// <summary>Capacity in bytes (0 when unbounded or unknown, as for a remote store).</summary>
    public long CapacityBytes { get; }

    /// <summary>Chunks read successfully.</summary>
    public long Hits => Interlocked.Read(ref _hits);

    /// <summary>Chunks asked for and not returned.</summary>
    public long Misses => Interlocked.Read(ref _misses);

    /// <summary>Bytes returned by reads.</summary>
    public long BytesRead => Interlocked.Read(ref _bytesRead);

    /// <summary>Chunks stored.</summary>
    public long Puts => Interlocked.Read(ref _puts);

    /// <summary>Bytes stored.</summary>
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    /// <summary>Puts dropped (queue full, no space, tier unavailable).</summary>
    public long PutsDropped => Interlocked.Read(ref _putsDropped);

    /// <summary>Entries evicted to make room.</summary>
    public long Evictions => Interlocked.Read(ref _evictions);

    /// <summary>Failures (I/O errors, timeouts, corrupt entries) turned into misses or drops.</summary>
    public long Errors => Interlocked.Read(ref _errors);

    /// <summary>Entries currently held (local tiers).</summary>
    public long Entries => Interlocked.Read(ref _entries);

    /// <summary>Bytes currently held (local tiers).</summary>
    public long UsedBytes => Interlocked.Read(ref _usedBytes);

    /// <summary>Hits / (hits + misses), or 0 before any read.</summary>
    public double HitRate
    {
        get
        {
            var hits = Hits;
            var total = hits + Misses;
            return total == 0 ? 0 : (double)hits / total;
        }
    }

    internal void RecordHit(long bytes)
    {
        Interlocked.Increment(ref _hits);
        Interlocked.Add(ref _bytesRead, bytes);
    }

    internal void RecordMiss() => Interlocked.Increment(ref _misses);

    internal void RecordMisses(long count) => Interlocked.Add(ref _misses, count);

    internal void RecordPut(long bytes)
    {
        Interlocked.Increment(ref _puts);
        Interlocked.Add(ref _bytesWritten, bytes);
    }

    internal void RecordPutDropped() => Interlocked.Increment(ref _putsDropped);

    internal void RecordEviction() => Interlocked.Increment(ref _evictions);

    internal void RecordError() => Interlocked.Increment(ref _errors);

    internal void AddEntry(long bytes)
    {
        Interlocked.Increment(ref _entries);
        Interlocked.Add(ref _usedBytes, bytes);
    }

    internal void RemoveEntry(long bytes)
    {
        Interlocked.Decrement(ref _entries);
        Interlocked.Add(ref _usedBytes, -bytes);
    }

    /// <inheritdoc />
    public override string ToString() =>
        $"{Tier}: {Entries} entries, {UsedBytes} bytes, hits {Hits}, misses {Misses}, puts {Puts}, dropped {PutsDropped}, evictions {Evictions}, errors {Errors}";
}
