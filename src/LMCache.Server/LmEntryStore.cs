using System.Diagnostics.CodeAnalysis;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.LocalDisk;

namespace LMCache.Server;

/// <summary>What the server keeps per key: the payload and the wire fields it must return on GET.</summary>
/// <param name="Key">The parsed key (used by the disk spill).</param>
/// <param name="Object">The payload (one reference owned by the store); null for a zero-length PUT.</param>
/// <param name="Length">Payload bytes.</param>
/// <param name="Format">The PUT's raw <c>fmt</c>.</param>
/// <param name="DTypeCode">The PUT's dtype code (1 is stored as 2, as the original does).</param>
/// <param name="Shape">The PUT's shape.</param>
/// <param name="Spillable">
/// True when the object's metadata carries exactly these wire fields (a known format and dtype whose shape describes
/// <paramref name="Length"/> bytes), so the disk spill can restore them; other entries are dropped on eviction.
/// </param>
internal sealed record StoredEntry(CacheEngineKey Key, MemoryObject? Object, int Length, int Format, int DTypeCode, KvShape Shape, bool Spillable);

/// <summary>
/// The server's storage: one native pool of <c>capacity</c> bytes and a key map with LRU eviction by bytes.
/// </summary>
/// <remarks>
/// Ownership: the store holds one reference per entry. <see cref="TryAcquire"/> hands the caller another one (a GET in
/// progress), which also keeps the entry from being evicted (<see cref="MemoryObject.CanEvict"/>) until the caller
/// releases it. <see cref="TryAllocate"/> returns a block the caller owns until <see cref="Commit"/> takes it over.
/// One lock guards the map and the LRU list; every operation under it is O(1) except eviction scans.
/// With a spill tier, evicted entries are queued to it (it takes its own reference and writes in the background),
/// and <see cref="TryAllocate(in MemoryObjectMetadata, out MemoryObject?)"/> is also how the spill allocates its reads.
/// </remarks>
internal sealed class LmEntryStore : IMemoryAllocator
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
    private long _spilled;

    public LmEntryStore(long capacityBytes)
    {
        _allocator = new NativeSlabAllocator(capacityBytes);
    }

    /// <summary>
    /// The text entries are indexed by: the key with its hash in the canonical spelling
    /// (<see cref="CacheEngineKey.ToCanonical"/>), so every spelling of one key (<c>...@0ab@half</c> and
    /// <c>...@ab@half</c>, <c>-0</c> and <c>0</c>) names one entry — as in the original server, which indexes by the
    /// parsed key with an integer hash. Returns <paramref name="text"/> itself when it is already canonical.
    /// </summary>
    /// <param name="text">The key text as received.</param>
    /// <param name="key">The parsed key; replaced by its canonical form (what the spill stores under).</param>
    public static string Identity(string text, ref CacheEngineKey key)
    {
        var canonical = key.ToCanonical();
        if (ReferenceEquals(canonical.ChunkHash, key.ChunkHash))
        {
            return text;
        }
        key = canonical;
        return canonical.ToString();
    }

    /// <summary>The disk tier evicted entries go to; null when spilling is off. Set once, before serving.</summary>
    public LocalDiskBackend? Spill { get; set; }

    /// <summary>Pool size in bytes.</summary>
    public long Capacity => _allocator.Capacity;

    /// <inheritdoc />
    long IMemoryAllocator.Used => _allocator.Used;

    /// <summary>Entries handed to the spill tier on eviction.</summary>
    public long Spilled => Interlocked.Read(ref _spilled);

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
    /// Reserves a block for an incoming payload described by <paramref name="metadata"/>, evicting least-recently-used
    /// entries that no GET is reading until it fits. False when it cannot fit (larger than the pool, or everything left
    /// is being read or written to the spill).
    /// </summary>
    public bool TryAllocate(in MemoryObjectMetadata metadata, [NotNullWhen(true)] out MemoryObject? memoryObject)
    {
        var length = metadata.ByteLength;
        if (length > _allocator.Capacity || length <= 0)
        {
            memoryObject = null;
            return false;
        }
        if (_allocator.TryAllocate(metadata, out memoryObject))
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
                    if (Spill is { } spill && entry.Spillable)
                    {
                        // A stale file of this key (from before an overwrite) must not survive this newer copy.
                        spill.Remove(entry.Key);
                        spill.SubmitPut(entry.Key, entry.Object);
                        Interlocked.Increment(ref _spilled);
                    }
                    entry.Object.Release();
                    if (_allocator.TryAllocate(metadata, out memoryObject))
                    {
                        return true;
                    }
                }
                node = previous;
            }
        }
        // Blocks freed by GETs (or spill writes) finishing while we scanned may make room now.
        return _allocator.TryAllocate(metadata, out memoryObject);
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
        if (Spill is { } spill)
        {
            spill.Remove(entry.Key);
        }
    }

    /// <summary>Puts an entry read back from the spill into memory and hands the caller one more reference.</summary>
    public StoredEntry Promote(string key, StoredEntry entry)
    {
        entry.Object?.AddRef();
        lock (_lock)
        {
            if (_map.TryGetValue(key, out var existing))
            {
                // A PUT got there first: serve that, drop what came from disk.
                var current = existing.Value.Entry;
                current.Object?.AddRef();
                entry.Object?.Release();
                entry.Object?.Release();
                _hits++;
                return current;
            }
            _map[key] = _lru.AddFirst((key, entry));
            _bytes += entry.Length;
            _hits++;
        }
        return entry;
    }

    /// <summary>Counts a GET that found nothing (in memory or spill).</summary>
    public void RecordMiss() => Interlocked.Increment(ref _misses);

    /// <summary>
    /// Finds <paramref name="key"/> in memory; on a hit the caller owns one more reference to the payload and must release
    /// it. A miss is not counted here (the spill may still have it): see <see cref="RecordMiss"/>.
    /// </summary>
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
