using LMCache.Core.Keys;

namespace LMCache.Storage;

/// <summary>
/// A tier that knows every entry it holds and can list them: the local tiers (CPU, disk). A remote store is shared with
/// other writers, so its tier is not listable (its connector may offer <see cref="Remote.IRemoteKeyspace"/> to tools).
/// The controller worker lists, reports and walks exactly the tiers that implement this.
/// </summary>
public interface IListableBackend : IStorageBackend
{
    /// <summary>True when this tier holds a complete entry for <paramref name="key"/> (no I/O; an index lookup).</summary>
    bool Contains(CacheEngineKey key);

    /// <summary>A point-in-time copy of the entries (key, bytes held, pinned, metadata, last access), for inspection.</summary>
    IReadOnlyList<TierEntry> Snapshot();
}
