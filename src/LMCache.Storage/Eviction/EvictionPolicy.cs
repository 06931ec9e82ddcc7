using LMCache.Core.Diagnostics;

namespace LMCache.Storage.Eviction;

/// <summary>
/// Orders a tier's entries for eviction. Not thread-safe: the owning tier calls it under its own lock.
/// </summary>
/// <typeparam name="TKey">The entry key.</typeparam>
public abstract class EvictionPolicy<TKey> where TKey : notnull
{
    /// <summary>The policy name (<c>cache_policy</c>).</summary>
    public abstract string Name { get; }

    /// <summary>An entry was added.</summary>
    public abstract void OnInserted(TKey key);

    /// <summary>An entry was read.</summary>
    public abstract void OnAccessed(TKey key);

    /// <summary>An entry was removed (evicted or deleted).</summary>
    public abstract void OnRemoved(TKey key);

    /// <summary>
    /// Finds the first entry in eviction order that <paramref name="canEvict"/> accepts (pinned and in-use entries are
    /// skipped by the caller's predicate). Does not remove it.
    /// </summary>
    public abstract bool TryFindVictim(Func<TKey, bool> canEvict, out TKey victim);
}

/// <summary>Creates eviction policies by name.</summary>
public static class EvictionPolicies
{
    /// <summary>
    /// Creates the policy named <paramref name="name"/> (case-insensitive): <c>LRU</c> (default), <c>FIFO</c>,
    /// <c>MRU</c> or <c>LFU</c>.
    /// </summary>
    public static EvictionPolicy<TKey> Create<TKey>(string name) where TKey : notnull => name.ToUpperInvariant() switch
    {
        "LRU" => new LinkedListPolicy<TKey>("LRU", moveOnAccess: true, evictNewestFirst: false),
        "FIFO" => new LinkedListPolicy<TKey>("FIFO", moveOnAccess: false, evictNewestFirst: false),
        "MRU" => new LinkedListPolicy<TKey>("MRU", moveOnAccess: true, evictNewestFirst: true),
        "LFU" => new LfuPolicy<TKey>(),
        _ => throw new LMCacheConfigurationException($"cache_policy = '{name}': must be one of LRU, FIFO, LFU, MRU."),
    };
}

/// <summary>
/// LRU, FIFO and MRU over one recency list. List nodes are recycled, so steady-state churn creates no garbage.
/// </summary>
internal sealed class LinkedListPolicy<TKey> : EvictionPolicy<TKey> where TKey : notnull
{
    private readonly LinkedList<TKey> _order = new();
    private readonly Dictionary<TKey, LinkedListNode<TKey>> _nodes = [];
    private readonly Stack<LinkedListNode<TKey>> _spare = new();
    private readonly bool _moveOnAccess;
    private readonly bool _evictNewestFirst;

    public LinkedListPolicy(string name, bool moveOnAccess, bool evictNewestFirst)
    {
        Name = name;
        _moveOnAccess = moveOnAccess;
        _evictNewestFirst = evictNewestFirst;
    }

    public override string Name { get; }

    public override void OnInserted(TKey key)
    {
        if (_nodes.TryGetValue(key, out var existing))
        {
            _order.Remove(existing);
            _order.AddLast(existing);
            return;
        }
        LinkedListNode<TKey> node;
        if (_spare.Count > 0)
        {
            node = _spare.Pop();
            node.Value = key;
        }
        else
        {
            node = new LinkedListNode<TKey>(key);
        }
        _order.AddLast(node);
        _nodes[key] = node;
    }

    public override void OnAccessed(TKey key)
    {
        if (_moveOnAccess && _nodes.TryGetValue(key, out var node) && node != _order.Last)
        {
            _order.Remove(node);
            _order.AddLast(node);
        }
    }

    public override void OnRemoved(TKey key)
    {
        if (_nodes.Remove(key, out var node))
        {
            _order.Remove(node);
            node.Value = default!;
            _spare.Push(node);
        }
    }

    public override bool TryFindVictim(Func<TKey, bool> canEvict, out TKey victim)
    {
        var node = _evictNewestFirst ? _order.Last : _order.First;
        while (node is not null)
        {
            if (canEvict(node.Value))
            {
                victim = node.Value;
                return true;
            }
            node = _evictNewestFirst ? node.Previous : node.Next;
        }
        victim = default!;
        return false;
    }
}

/// <summary>Least-frequently-used, ties broken by age (oldest first).</summary>
internal sealed class LfuPolicy<TKey> : EvictionPolicy<TKey> where TKey : notnull
{
    private readonly Dictionary<TKey, (long Count, long Sequence)> _entries = [];
    private long _sequence;

    public override string Name => "LFU";

    public override void OnInserted(TKey key) => _entries[key] = (1, _sequence++);

    public override void OnAccessed(TKey key)
    {
        if (_entries.TryGetValue(key, out var entry))
        {
            _entries[key] = (entry.Count + 1, entry.Sequence);
        }
    }

    public override void OnRemoved(TKey key) => _entries.Remove(key);

    public override bool TryFindVictim(Func<TKey, bool> canEvict, out TKey victim)
    {
        var found = false;
        victim = default!;
        (long Count, long Sequence) best = (long.MaxValue, long.MaxValue);
        foreach (var (key, entry) in _entries)
        {
            if ((entry.Count < best.Count || (entry.Count == best.Count && entry.Sequence < best.Sequence)) && canEvict(key))
            {
                best = entry;
                victim = key;
                found = true;
            }
        }
        return found;
    }
}
