using LMCache.Core.Keys;
using LMCache.Core.Memory;

namespace LMCache.Storage;

/// <summary>
/// One storage tier. Misses are values (0, null), never exceptions; a tier that fails internally reports a miss.
/// </summary>
/// <remarks>
/// Ownership: <see cref="SubmitPut"/> takes its own reference to the object when it keeps it (the caller keeps
/// theirs); <see cref="GetAsync"/> and <see cref="GetPrefixAsync"/> hand one reference per returned object to the
/// caller, who must release it. Tiers that can list their entries or pin them say so by implementing
/// <see cref="IListableBackend"/> and <see cref="IPinnableBackend"/>.
/// </remarks>
public interface IStorageBackend : IAsyncDisposable
{
    /// <summary>The backend's name, as in the original (<c>LocalCPUBackend</c>, <c>LocalDiskBackend</c>, <c>RemoteBackend</c>).</summary>
    string Name { get; }

    /// <summary>Counters and usage of this tier.</summary>
    TierStatistics Statistics { get; }

    /// <summary>How many of <paramref name="keys"/>, from the first, this tier holds (stops at the first miss).</summary>
    ValueTask<int> ContainsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken = default);

    /// <summary>
    /// Stores <paramref name="memoryObject"/> under <paramref name="key"/>: synchronously for the CPU tier, queued for the
    /// disk and remote tiers. Never throws for storage failures; a dropped put is counted.
    /// </summary>
    void SubmitPut(CacheEngineKey key, MemoryObject memoryObject);

    /// <summary>Reads one chunk; null on a miss or on any doubt about the bytes.</summary>
    ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, CancellationToken cancellationToken = default);

    /// <summary>
    /// Reads <paramref name="keys"/> in order into <paramref name="destination"/> until the first miss; returns the number
    /// of leading hits (later entries stay null).
    /// </summary>
    ValueTask<int> GetPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, CancellationToken cancellationToken = default);

    /// <summary>Removes an entry; true if it was there.</summary>
    ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken = default);

    /// <summary>Removes every unpinned entry this tier holds locally; returns how many were removed.</summary>
    ValueTask<int> ClearAsync(CancellationToken cancellationToken = default);

    /// <summary>Waits until queued puts have finished (tests, benchmarks, orderly shutdown).</summary>
    Task FlushAsync(CancellationToken cancellationToken = default);
}

/// <summary>Shared helpers for backends.</summary>
public static class StorageBackendExtensions
{
    /// <summary>A <see cref="IStorageBackend.GetPrefixAsync"/> built from single gets, for tiers without a batch path.</summary>
    public static async ValueTask<int> GetPrefixSequentiallyAsync(
        this IStorageBackend backend, ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(backend);
        for (var i = 0; i < keys.Length; i++)
        {
            var memoryObject = await backend.GetAsync(keys.Span[i], cancellationToken).ConfigureAwait(false);
            if (memoryObject is null)
            {
                return i;
            }
            destination.Span[i] = memoryObject;
        }
        return keys.Length;
    }
}
