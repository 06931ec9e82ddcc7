using LMCache.Core.Keys;

namespace LMCache.Storage;

/// <summary>
/// A tier that can keep entries from being evicted: the local tiers (CPU, disk). Pins are counted (each
/// <see cref="Pin"/> needs its <see cref="Unpin"/>), live in memory only, and do not stop an explicit removal.
/// </summary>
public interface IPinnableBackend : IStorageBackend
{
    /// <summary>Pins an entry against eviction; true if it was there.</summary>
    bool Pin(CacheEngineKey key);

    /// <summary>Removes one pin; true if the entry was there and pinned.</summary>
    bool Unpin(CacheEngineKey key);

    /// <summary>Whether <paramref name="key"/> is held and pinned.</summary>
    bool IsPinned(CacheEngineKey key);
}
