using System.Collections.Concurrent;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage;

namespace LMCache.Controller.Worker;

/// <summary>One admission or eviction raised by a tier.</summary>
internal readonly record struct TierEvent(bool Admitted, string Tier, CacheEngineKey Key);

/// <summary>
/// The storage event sink: queues admissions and evictions for the worker thread (accesses are not reported: the
/// tiers keep last-access times in their snapshots). Bounded: past <see cref="MaxQueuedEvents"/> it stops queueing
/// and flags an overflow, which the worker repairs with a snapshot.
/// </summary>
internal sealed class TierEventQueue : IStorageEventSink
{
    /// <summary>Events queued before the queue stops and flags an overflow.</summary>
    public const int MaxQueuedEvents = 100_000;

    private readonly ConcurrentQueue<TierEvent> _queue = new();
    private int _count;
    private volatile bool _overflowed;

    public bool Overflowed => _overflowed;

    public void OnAdmitted(string tier, in CacheEngineKey key, long bytes, MemoryFormat format) => Add(new TierEvent(true, tier, key));

    public void OnEvicted(string tier, in CacheEngineKey key, StorageRemovalReason reason) => Add(new TierEvent(false, tier, key));

    public void OnAccessed(string tier, in CacheEngineKey key)
    {
        // Last access is in the tiers' snapshots; nothing to queue on the read hot path.
    }

    public bool TryDequeue(out TierEvent e)
    {
        if (_queue.TryDequeue(out e))
        {
            Interlocked.Decrement(ref _count);
            return true;
        }
        return false;
    }

    public void Reset()
    {
        _overflowed = false;
        while (TryDequeue(out _))
        {
        }
    }

    private void Add(TierEvent e)
    {
        if (_overflowed)
        {
            return;
        }
        if (Interlocked.Increment(ref _count) > MaxQueuedEvents)
        {
            Interlocked.Decrement(ref _count);
            _overflowed = true;
            return;
        }
        _queue.Enqueue(e);
    }
}
