using LMCache.Core.Memory;

namespace LMCache.Server;

/// <summary>What the server keeps per key: the payload and the wire fields it must return on GET.</summary>
/// <param name="Object">The payload (one reference owned by the store); null for a zero-length PUT.</param>
/// <param name="Length">Payload bytes.</param>
/// <param name="Format">The PUT's raw <c>fmt</c>.</param>
/// <param name="DTypeCode">The PUT's dtype code (1 is stored as 2, as the original does).</param>
/// <param name="Shape">The PUT's shape.</param>
internal sealed record StoredEntry(MemoryObject? Object, int Length, int Format, int DTypeCode, KvShape Shape);

/// <summary>
/// The server's storage: one native pool of <c>capacity</c> bytes and a key map with LRU eviction by bytes.
/// </summary>
/// <remarks>
/// Ownership: the store holds one reference per entry. <see cref="TryAcquire"/> hands the caller another one (a GET in
/// progress), which also keeps the entry from being evicted (<see cref="MemoryObject.CanEvict"/>) until the caller
/// releases it. <see cref="TryAllocate"/> returns a block the caller owns until <see cref="Commit"/> takes it over.
/// One lock guards the map and the LRU list; every operation under it is O(1) except eviction scans.
/// </remarks>
internal sealed class LmEntryStore : IDisposable
{
    private readonly NativeSlabAllocator _allocator;
    private readonly Dictionary<string, LinkedListNode<(string Key, StoredEntry Entry)>> _map = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Key, StoredEntry Entry)> _lru = new();   // first = most recently used
    private readonly Lock _lock = new();
    private long _bytes;
    private long _hits;
    private long _misses;
    private long _evictions;
    private long _evictedBytes;
    private long _puts;

    public LmEntryStore(long capacityBytes)
    {
        _allocator = new NativeSlabAllocator(capacityBytes);
    }

    /// <summary>Pool size in bytes.</summary>
    public long Capacity => _allocator.Capacity;

    /// <summary>Bytes reserved in the pool (aligned), including payloads still being received.</summary>
    public long PoolUsed => _allocator.Used;

    /// <summary>Logical payload bytes of the stored entries.</summary>
    public long Bytes => Interlocked.Read(ref _bytes);

    public long Hits => Interlocked.Read(ref _hits);

    public long Misses => Interlocked.Read(ref _misses);

    public long Evictions => Interlocked.Read(ref _evictions);

    public long EvictedBytes => Interlocked.Read(ref _evictedBytes);

    public long Puts => Interlocked.Read(ref _puts);

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _map.Count;
            }
        }
    }

    /// <summary>Pool objects alive (stored plus in flight); 0 after disposal when nothing leaked.</summary>
    public int OutstandingObjects => _allocator.OutstandingObjects;

    /// <summary>
    /// Reserves <paramref name="length"/> bytes for an incoming payload, evicting least-recently-used entries that no
    /// GET is reading until it fits. False when it cannot fit (larger than the pool, or everything left is being read).
    /// A zero-length payload needs no block (<paramref name="block"/> is null).
    /// </summary>
    public bool TryAllocate(int length, out MemoryObject? block)
    {
        block = null;
        if (length == 0)
        {
            return true;
        }
        if (length > _allocator.Capacity)
        {
            return false;
        }
        var metadata = MemoryObjectMetadata.Opaque(length);
        if (_allocator.TryAllocate(metadata, out block))
        {
            return true;
        }
        lock (_lock)
        {
            var node = _lru.Last;
            while (node is not null)
            {
                var previous = node.Previous;
                var entry = node.Value.Entry;
                if (entry.Object is { CanEvict: true })
                {
                    RemoveLocked(node);
                    Interlocked.Increment(ref _evictions);
                    Interlocked.Add(ref _evictedBytes, entry.Length);
                    entry.Object.Release();
                    if (_allocator.TryAllocate(metadata, out block))
                    {
                        return true;
                    }
                }
                node = previous;
            }
        }
        // Blocks freed by GETs finishing while we scanned may make room now.
        return _allocator.TryAllocate(metadata, out block);
    }

    /// <summary>Stores <paramref name="entry"/> under <paramref name="key"/> (taking over its reference), replacing any older entry.</summary>
    public void Commit(string key, StoredEntry entry)
    {
        StoredEntry? replaced = null;
        lock (_lock)
        {
            if (_map.TryGetValue(key, out var existing))
            {
                replaced = existing.Value.Entry;
                RemoveLocked(existing);
            }
            _map[key] = _lru.AddFirst((key, entry));
            _bytes += entry.Length;
        }
        Interlocked.Increment(ref _puts);
        replaced?.Object?.Release();
    }

    /// <summary>Finds <paramref name="key"/>; on a hit the caller owns one more reference to the payload and must release it.</summary>
    public bool TryAcquire(string key, out StoredEntry? entry)
    {
        lock (_lock)
        {
            if (_map.TryGetValue(key, out var node))
            {
                entry = node.Value.Entry;
                entry.Object?.AddRef();
                _lru.Remove(node);
                _lru.AddFirst(node);
                _hits++;
                return true;
            }
            _misses++;
        }
        entry = null;
        return false;
    }

    /// <summary>True when <paramref name="key"/> is stored (does not count as a use for LRU, like a lookup).</summary>
    public bool Contains(string key)
    {
        lock (_lock)
        {
            return _map.ContainsKey(key);
        }
    }

    /// <summary>A snapshot of the stored keys, most recently used first.</summary>
    public List<string> Keys()
    {
        lock (_lock)
        {
            var keys = new List<string>(_map.Count);
            foreach (var (key, _) in _lru)
            {
                keys.Add(key);
            }
            return keys;
        }
    }

    /// <summary>Releases every entry and frees the pool if nothing is still in flight.</summary>
    public void Dispose()
    {
        List<StoredEntry> entries;
        lock (_lock)
        {
            entries = [.. _lru.Select(n => n.Entry)];
            _lru.Clear();
            _map.Clear();
            _bytes = 0;
        }
        foreach (var entry in entries)
        {
            entry.Object?.Release();
        }
        if (_allocator.OutstandingObjects == 0)
        {
            _allocator.Dispose();
        }
    }

    private void RemoveLocked(LinkedListNode<(string Key, StoredEntry Entry)> node)
    {
        _lru.Remove(node);
        _map.Remove(node.Value.Key);
        _bytes -= node.Value.Entry.Length;
    }
}
