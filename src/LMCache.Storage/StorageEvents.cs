using System.Diagnostics;
using LMCache.Core.Keys;
using LMCache.Core.Memory;

namespace LMCache.Storage;

/// <summary>Why an entry left a tier (<see cref="IStorageEventSink.OnEvicted"/>).</summary>
public enum StorageRemovalReason
{
    /// <summary>Evicted by the tier's policy to make room.</summary>
    Evicted = 0,

    /// <summary>Removed by a caller (<see cref="IStorageBackend.RemoveAsync"/>: a delete, a move or a re-encode).</summary>
    Removed = 1,

    /// <summary>Removed by <see cref="IStorageBackend.ClearAsync"/>.</summary>
    Cleared = 2,

    /// <summary>Dropped because its stored bytes failed validation (truncated, corrupted or vanished file).</summary>
    Invalid = 3,
}

/// <summary>
/// Receives what happens to the entries of the local tiers: admissions, removals and hits (the original's
/// <c>KVAdmitMsg</c>/<c>KVEvictMsg</c> notifications, plus accesses). Register one with
/// <see cref="StorageManager.AddEventSink"/>.
/// </summary>
/// <remarks>
/// <para>Calls arrive on the thread that changed the tier — an inference request, a disk writer, an eviction inside an
/// allocation — after the tier's lock was released. An implementation must be cheap, must not block and must not call
/// back into storage; it should hand the event to its own thread (e.g. a queue). <see cref="OnAccessed"/> is on the
/// read hot path.</para>
/// <para>Exceptions thrown by a sink are caught and counted (<see cref="StorageEvents.SinkFailures"/>); they never reach
/// the storage operation that raised the event.</para>
/// </remarks>
public interface IStorageEventSink
{
    /// <summary>An entry became readable in <paramref name="tier"/> (a CPU put, a completed disk write).</summary>
    /// <param name="tier">The tier's backend name (<c>LocalCPUBackend</c>, <c>LocalDiskBackend</c>).</param>
    /// <param name="key">The entry's key.</param>
    /// <param name="bytes">Bytes the entry takes in that tier (disk: the file, header included).</param>
    /// <param name="format">The layout of the stored chunk (<see cref="MemoryFormat.BinaryBuffer"/> for a compressed one).</param>
    void OnAdmitted(string tier, in CacheEngineKey key, long bytes, MemoryFormat format);

    /// <summary>An entry left <paramref name="tier"/>.</summary>
    /// <param name="tier">The tier's backend name.</param>
    /// <param name="key">The entry's key.</param>
    /// <param name="reason">Why it left.</param>
    void OnEvicted(string tier, in CacheEngineKey key, StorageRemovalReason reason);

    /// <summary>A read of <paramref name="key"/> hit in <paramref name="tier"/>.</summary>
    /// <param name="tier">The tier's backend name.</param>
    /// <param name="key">The entry's key.</param>
    void OnAccessed(string tier, in CacheEngineKey key);
}

/// <summary>A tier that raises <see cref="IStorageEventSink"/> events (the CPU and disk tiers).</summary>
public interface IStorageEventSource
{
    /// <summary>The tier's event fan-out.</summary>
    StorageEvents Events { get; }
}

/// <summary>
/// The sinks registered on one tier and the raising of events to them: copy-on-write registration, no allocation and no
/// lock when raising, and no sink exception escapes.
/// </summary>
public sealed class StorageEvents
{
    private readonly string _tier;
    private readonly Lock _gate = new();
    private volatile IStorageEventSink[] _sinks = [];
    private long _sinkFailures;

    /// <summary>Creates the fan-out of the tier named <paramref name="tier"/>.</summary>
    public StorageEvents(string tier)
    {
        _tier = tier;
    }

    /// <summary>True when at least one sink is registered (raisers may skip preparing an event otherwise).</summary>
    public bool HasSinks => _sinks.Length > 0;

    /// <summary>Exceptions thrown by sinks and swallowed here since the tier was created.</summary>
    public long SinkFailures => Interlocked.Read(ref _sinkFailures);

    /// <summary>Registers <paramref name="sink"/> (once; a second registration of the same sink is ignored).</summary>
    public void Add(IStorageEventSink sink)
    {
        ArgumentNullException.ThrowIfNull(sink);
        lock (_gate)
        {
            if (Array.IndexOf(_sinks, sink) < 0)
            {
                _sinks = [.. _sinks, sink];
            }
        }
    }

    /// <summary>Unregisters <paramref name="sink"/>; true when it was registered.</summary>
    public bool Remove(IStorageEventSink sink)
    {
        lock (_gate)
        {
            var index = Array.IndexOf(_sinks, sink);
            if (index < 0)
            {
                return false;
            }
            _sinks = [.. _sinks.Where((_, i) => i != index)];
            return true;
        }
    }

    /// <summary>Raises <see cref="IStorageEventSink.OnAdmitted"/>.</summary>
    public void Admitted(in CacheEngineKey key, long bytes, MemoryFormat format)
    {
        foreach (var sink in _sinks)
        {
            try
            {
                sink.OnAdmitted(_tier, key, bytes, format);
            }
            catch (Exception ex)
            {
                Failed(ex);
            }
        }
    }

    /// <summary>Raises <see cref="IStorageEventSink.OnEvicted"/>.</summary>
    public void Evicted(in CacheEngineKey key, StorageRemovalReason reason)
    {
        foreach (var sink in _sinks)
        {
            try
            {
                sink.OnEvicted(_tier, key, reason);
            }
            catch (Exception ex)
            {
                Failed(ex);
            }
        }
    }

    /// <summary>Raises <see cref="IStorageEventSink.OnAccessed"/>.</summary>
    public void Accessed(in CacheEngineKey key)
    {
        foreach (var sink in _sinks)
        {
            try
            {
                sink.OnAccessed(_tier, key);
            }
            catch (Exception ex)
            {
                Failed(ex);
            }
        }
    }

    private void Failed(Exception exception)
    {
        Interlocked.Increment(ref _sinkFailures);
        Debug.WriteLine($"IStorageEventSink failed on tier {_tier}: {exception}");
    }
}

/// <summary>One entry of a local tier, as <c>Snapshot()</c> reports it.</summary>
/// <param name="Key">The entry's key.</param>
/// <param name="Bytes">Bytes it takes in the tier (disk: the file, header included).</param>
/// <param name="Pinned">Whether it is pinned against eviction.</param>
/// <param name="Metadata">What the stored object holds (format, dtype, shape).</param>
/// <param name="LastAccess">When it was last read or, never read, stored (UTC; disk entries recovered at start: when the tier opened).</param>
public readonly record struct TierEntry(CacheEngineKey Key, long Bytes, bool Pinned, MemoryObjectMetadata Metadata, DateTimeOffset LastAccess)
{
    /// <summary>Converts a <see cref="Stopwatch"/> timestamp of this process to wall-clock UTC.</summary>
    internal static DateTimeOffset ToUtc(long timestamp, DateTimeOffset now, long nowTimestamp) =>
        now - TimeSpan.FromSeconds((nowTimestamp - timestamp) / (double)Stopwatch.Frequency);
}
