using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.Diagnostics;
using LMCache.Storage.Eviction;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Storage.LocalCpu;

/// <summary>
/// The CPU tier: a hot cache of memory objects in one native pool, and the allocator every other tier reads into.
/// </summary>
/// <remarks>
/// <para>Stores are synchronous: the tier takes a reference to the caller's object (zero copy). Reads hand out another
/// reference to the same object (zero copy). The pool's capacity is a hard limit (<c>max_local_cpu_size</c>).</para>
/// <para>Allocation evicts: when the pool is full, <see cref="TryAllocate"/> evicts entries in policy order, skipping
/// pinned entries and entries someone else still references, until the request fits or nothing more can go.</para>
/// <para>With <c>local_cpu = false</c> the tier keeps nothing but still allocates (the original's behaviour).</para>
/// </remarks>
public sealed class LocalCpuBackend : IListableBackend, IPinnableBackend, IMemoryAllocator, IStorageEventSource
{
    /// <summary>The backend name used by <c>store_location</c>/<c>retrieve_locations</c>.</summary>
    public const string BackendName = "LocalCPUBackend";

    private readonly NativeSlabAllocator _allocator;
    private readonly Dictionary<CacheEngineKey, Entry> _entries = [];
    private readonly EvictionPolicy<CacheEngineKey> _policy;
    private readonly Func<CacheEngineKey, bool> _canEvict;
    private readonly Lock _lock = new();
    private readonly ILogger _logger;

    /// <summary>Creates the tier.</summary>
    /// <param name="capacityBytes">Pool size in bytes.</param>
    /// <param name="storesChunks">Whether puts are kept (<c>local_cpu</c>).</param>
    /// <param name="cachePolicy">Eviction policy name.</param>
    /// <param name="logger">Logger; null for none.</param>
    public LocalCpuBackend(long capacityBytes, bool storesChunks = true, string cachePolicy = "LRU", ILogger? logger = null)
    {
        _allocator = new NativeSlabAllocator(capacityBytes);
        _policy = EvictionPolicies.Create<CacheEngineKey>(cachePolicy);
        _canEvict = key => _entries.TryGetValue(key, out var entry) && entry.Object.CanEvict;
        _logger = logger ?? NullLogger.Instance;
        StoresChunks = storesChunks;
        Statistics = new TierStatistics(BackendName, _allocator.Capacity);
        Events = new StorageEvents(BackendName);
    }

    /// <inheritdoc />
    public StorageEvents Events { get; }

    /// <inheritdoc />
    public string Name => BackendName;

    /// <inheritdoc />
    public TierStatistics Statistics { get; }

    /// <summary>Whether puts are kept.</summary>
    public bool StoresChunks { get; }

    /// <inheritdoc />
    public long Capacity => _allocator.Capacity;

    /// <inheritdoc />
    public long Used => _allocator.Used;

    /// <inheritdoc />
    public int OutstandingObjects => _allocator.OutstandingObjects;

    /// <summary>The underlying pool (diagnostics and tests).</summary>
    public NativeSlabAllocator Pool => _allocator;

    /// <summary>Number of entries held.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>
    /// Allocates from the pool, evicting unpinned, unreferenced entries in policy order when it is full.
    /// </summary>
    public bool TryAllocate(in MemoryObjectMetadata metadata, [NotNullWhen(true)] out MemoryObject? memoryObject)
    {
        if (_allocator.TryAllocate(metadata, out memoryObject))
        {
            return true;
        }
        if (metadata.ByteLength > _allocator.Capacity)
        {
            return false;
        }
        var evicted = 0;
        while (true)
        {
            MemoryObject? victim;
            CacheEngineKey victimKey;
            lock (_lock)
            {
                if (!_policy.TryFindVictim(_canEvict, out var key))
                {
                    break;
                }
                victim = _entries[key].Object;
                _entries.Remove(key);
                _policy.OnRemoved(key);
                Statistics.RemoveEntry(victim.Length);
                Statistics.RecordEviction();
                victimKey = key;
            }
            victim.Release();
            Events.Evicted(victimKey, StorageRemovalReason.Evicted);
            evicted++;
            if (_allocator.TryAllocate(metadata, out memoryObject))
            {
                return true;
            }
        }
        StorageLog.CpuAllocationFailed(_logger, metadata.ByteLength, evicted);
        return false;
    }

    /// <inheritdoc />
    public ValueTask<int> ContainsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken = default)
    {
        var span = keys.Span;
        lock (_lock)
        {
            for (var i = 0; i < span.Length; i++)
            {
                if (!_entries.ContainsKey(span[i]))
                {
                    return ValueTask.FromResult(i);
                }
            }
        }
        return ValueTask.FromResult(span.Length);
    }

    /// <inheritdoc />
    public bool Contains(CacheEngineKey key)
    {
        lock (_lock)
        {
            return _entries.ContainsKey(key);
        }
    }

    /// <inheritdoc />
    public void SubmitPut(CacheEngineKey key, MemoryObject memoryObject)
    {
        ArgumentNullException.ThrowIfNull(memoryObject);
        if (!StoresChunks)
        {
            return;
        }
        lock (_lock)
        {
            if (_entries.ContainsKey(key))
            {
                return;
            }
            _entries.Add(key, new Entry(memoryObject.AddRef(), Stopwatch.GetTimestamp()));
            _policy.OnInserted(key);
        }
        Statistics.AddEntry(memoryObject.Length);
        Statistics.RecordPut(memoryObject.Length);
        Events.Admitted(key, memoryObject.Length, memoryObject.Metadata.Format);
    }

    /// <inheritdoc />
    public ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, CancellationToken cancellationToken = default) => ValueTask.FromResult(AcquireReference(key));

    /// <summary>Synchronous read: another reference to the stored object, or null.</summary>
    public MemoryObject? AcquireReference(CacheEngineKey key)
    {
        MemoryObject? found = null;
        lock (_lock)
        {
            ref var entry = ref CollectionsMarshal.GetValueRefOrNullRef(_entries, key);
            if (!Unsafe.IsNullRef(ref entry))
            {
                found = entry.Object.AddRef();
                entry.LastAccess = Stopwatch.GetTimestamp();
                _policy.OnAccessed(key);
            }
        }
        if (found is null)
        {
            Statistics.RecordMiss();
        }
        else
        {
            Statistics.RecordHit(found.Length);
            Events.Accessed(key);
        }
        return found;
    }

    /// <inheritdoc />
    public ValueTask<int> GetPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, CancellationToken cancellationToken = default)
    {
        var keySpan = keys.Span;
        var output = destination.Span;
        for (var i = 0; i < keySpan.Length; i++)
        {
            var found = AcquireReference(keySpan[i]);
            if (found is null)
            {
                return ValueTask.FromResult(i);
            }
            output[i] = found;
        }
        return ValueTask.FromResult(keySpan.Length);
    }

    /// <inheritdoc />
    public ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken = default)
    {
        MemoryObject removed;
        lock (_lock)
        {
            if (!_entries.Remove(key, out var entry))
            {
                return ValueTask.FromResult(false);
            }
            removed = entry.Object;
            _policy.OnRemoved(key);
        }
        Statistics.RemoveEntry(removed.Length);
        removed.Release();
        Events.Evicted(key, StorageRemovalReason.Removed);
        return ValueTask.FromResult(true);
    }

    /// <inheritdoc />
    public bool Pin(CacheEngineKey key)
    {
        lock (_lock)
        {
            if (_entries.TryGetValue(key, out var entry))
            {
                entry.Object.Pin();
                return true;
            }
            return false;
        }
    }

    /// <inheritdoc />
    public bool Unpin(CacheEngineKey key)
    {
        lock (_lock)
        {
            return _entries.TryGetValue(key, out var entry) && entry.Object.Unpin();
        }
    }

    /// <inheritdoc />
    public bool IsPinned(CacheEngineKey key)
    {
        lock (_lock)
        {
            return _entries.TryGetValue(key, out var entry) && entry.Object.IsPinned;
        }
    }

    /// <inheritdoc />
    public IReadOnlyList<TierEntry> Snapshot()
    {
        var now = DateTimeOffset.UtcNow;
        var nowTimestamp = Stopwatch.GetTimestamp();
        lock (_lock)
        {
            return [.. _entries.Select(e => new TierEntry(
                e.Key, e.Value.Object.Length, e.Value.Object.IsPinned, e.Value.Object.Metadata,
                TierEntry.ToUtc(e.Value.LastAccess, now, nowTimestamp)))];
        }
    }

    /// <inheritdoc />
    public ValueTask<int> ClearAsync(CancellationToken cancellationToken = default)
    {
        List<(CacheEngineKey Key, MemoryObject Object)> removed = [];
        lock (_lock)
        {
            foreach (var (key, entry) in _entries.ToList())
            {
                if (entry.Object.IsPinned)
                {
                    continue;
                }
                _entries.Remove(key);
                _policy.OnRemoved(key);
                removed.Add((key, entry.Object));
            }
        }
        foreach (var (key, entry) in removed)
        {
            Statistics.RemoveEntry(entry.Length);
            entry.Release();
            Events.Evicted(key, StorageRemovalReason.Cleared);
        }
        return ValueTask.FromResult(removed.Count);
    }

    /// <inheritdoc />
    public Task FlushAsync(CancellationToken cancellationToken = default) => Task.CompletedTask;

    /// <summary>Releases every entry (pinned or not) and frees the pool.</summary>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>Releases every entry (pinned or not) and frees the pool.</summary>
    public void Dispose()
    {
        List<MemoryObject> all;
        lock (_lock)
        {
            all = [.. _entries.Values.Select(e => e.Object)];
            foreach (var key in _entries.Keys)
            {
                _policy.OnRemoved(key);
            }
            _entries.Clear();
        }
        foreach (var entry in all)
        {
            Statistics.RemoveEntry(entry.Length);
            entry.Release();
        }
        // Objects still referenced by callers keep the slab alive until their last release (see NativeSlabAllocator.Dispose).
        _allocator.Dispose();
    }

    /// <summary>A held object and when it was last read (a <see cref="Stopwatch"/> timestamp), updated in place.</summary>
    private struct Entry(MemoryObject memoryObject, long lastAccess)
    {
        public readonly MemoryObject Object = memoryObject;
        public long LastAccess = lastAccess;
    }
}
