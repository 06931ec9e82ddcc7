using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.Diagnostics;
using LMCache.Storage.LocalCpu;

namespace LMCache.Storage;

/// <summary>Where the chunks of one read came from.</summary>
/// <param name="Cpu">Chunks served by the CPU tier.</param>
/// <param name="Disk">Chunks served by the disk tier.</param>
/// <param name="Remote">Chunks served by the remote tier.</param>
public readonly record struct TierHits(int Cpu, int Disk, int Remote)
{
    /// <summary>All chunks served.</summary>
    public int Total => Cpu + Disk + Remote;
}

/// <summary>
/// The ordered tiers (CPU → local disk → remote) and the operations across them: write-through stores, prefix lookups
/// that continue from tier to tier, and prefix reads that promote lower-tier hits into the CPU tier.
/// </summary>
/// <remarks>
/// <para>Lookup and read walk the tiers in order: a tier is asked about the keys the tiers before it did not have, so a
/// prefix may be split CPU → disk → remote, as in the original's <c>batched_contains</c>.</para>
/// <para>Promotion: a chunk read from disk or remote is also put into the CPU tier (when <c>local_cpu</c> is on). The
/// disk tier is never a promotion target (the original's rule): it only receives stores.</para>
/// </remarks>
public sealed class StorageManager : IAsyncDisposable
{
    private readonly IStorageBackend[] _storeTargets;
    private readonly IStorageBackend[] _readSources;
    private readonly IStorageBackend[] _all;

    /// <summary>Creates the manager over the given tiers.</summary>
    /// <param name="cpu">The CPU tier (always present: it is the allocator).</param>
    /// <param name="lowerTiers">Further tiers in search order (disk, then remote).</param>
    /// <param name="storeLocation">Only store into this backend (<c>store_location</c>); null for all.</param>
    /// <param name="retrieveLocations">Only read from these backends (<c>retrieve_locations</c>); null for all.</param>
    /// <param name="metrics">Metrics to register the tiers with; null for none.</param>
    public StorageManager(
        LocalCpuBackend cpu,
        IReadOnlyList<IStorageBackend> lowerTiers,
        string? storeLocation = null,
        IReadOnlyList<string>? retrieveLocations = null,
        StorageMetrics? metrics = null)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        ArgumentNullException.ThrowIfNull(lowerTiers);
        Cpu = cpu;
        _all = [cpu, .. lowerTiers];
        _storeTargets = [.. _all.Where(b => storeLocation is null || b.Name == storeLocation)];
        _readSources = [.. _all.Where(b => retrieveLocations is null || retrieveLocations.Contains(b.Name))];
        Metrics = metrics;
        foreach (var backend in _all)
        {
            metrics?.Register(backend.Statistics);
        }
    }

    /// <summary>The CPU tier, which is also the allocator of every chunk.</summary>
    public LocalCpuBackend Cpu { get; }

    /// <summary>All tiers in search order.</summary>
    public IReadOnlyList<IStorageBackend> Backends => _all;

    /// <summary>The metrics the tiers are published through, if any.</summary>
    public StorageMetrics? Metrics { get; }

    /// <summary>
    /// Registers <paramref name="sink"/> on every tier that raises events (<see cref="IStorageEventSource"/>: the CPU and
    /// disk tiers; the remote tier cannot tell what other writers do to it and raises none).
    /// </summary>
    public void AddEventSink(IStorageEventSink sink)
    {
        ArgumentNullException.ThrowIfNull(sink);
        foreach (var backend in _all)
        {
            (backend as IStorageEventSource)?.Events.Add(sink);
        }
    }

    /// <summary>Unregisters <paramref name="sink"/> from every tier.</summary>
    public void RemoveEventSink(IStorageEventSink sink)
    {
        ArgumentNullException.ThrowIfNull(sink);
        foreach (var backend in _all)
        {
            (backend as IStorageEventSource)?.Events.Remove(sink);
        }
    }

    /// <summary>Finds a tier by its backend name.</summary>
    public IStorageBackend? Find(string name) => Array.Find(_all, b => b.Name == name);

    /// <summary>How many of <paramref name="keys"/>, from the first, some tier holds (continuing from tier to tier).</summary>
    public async ValueTask<int> ContainsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken = default)
    {
        var found = 0;
        foreach (var backend in _readSources)
        {
            if (found == keys.Length)
            {
                break;
            }
            found += await backend.ContainsPrefixAsync(keys[found..], cancellationToken).ConfigureAwait(false);
        }
        return found;
    }

    /// <summary>
    /// Stores each object in every store tier (each takes its own reference; the caller keeps and releases its own).
    /// </summary>
    public void Put(ReadOnlySpan<CacheEngineKey> keys, ReadOnlySpan<MemoryObject> objects)
    {
        if (keys.Length != objects.Length)
        {
            throw new ArgumentException("keys and objects must have the same length.", nameof(objects));
        }
        foreach (var backend in _storeTargets)
        {
            for (var i = 0; i < keys.Length; i++)
            {
                backend.SubmitPut(keys[i], objects[i]);
            }
        }
    }

    /// <summary>
    /// Reads the longest prefix of <paramref name="keys"/> that the tiers hold, tier after tier, into
    /// <paramref name="destination"/> (the caller owns one reference per returned object). Returns the count and
    /// where the chunks came from.
    /// </summary>
    public async ValueTask<(int Count, TierHits Hits)> GetPrefixAsync(
        ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, CancellationToken cancellationToken = default)
    {
        var found = 0;
        int cpu = 0, disk = 0, remote = 0;
        foreach (var backend in _readSources)
        {
            if (found == keys.Length)
            {
                break;
            }
            var count = await backend.GetPrefixAsync(keys[found..], destination[found..], cancellationToken).ConfigureAwait(false);
            if (count == 0)
            {
                continue;
            }
            if (backend != Cpu)
            {
                var promoted = destination.Span.Slice(found, count);
                var promotedKeys = keys.Span.Slice(found, count);
                for (var i = 0; i < count; i++)
                {
                    Cpu.SubmitPut(promotedKeys[i], promoted[i]!);
                }
            }
            switch (backend.Name)
            {
                case LocalCpuBackend.BackendName: cpu += count; break;
                case Remote.RemoteBackend.BackendName: remote += count; break;
                default: disk += count; break;
            }
            found += count;
        }
        return (found, new TierHits(cpu, disk, remote));
    }

    /// <summary>Pins <paramref name="key"/> in every tier that holds it; returns how many tiers pinned it.</summary>
    public int Pin(CacheEngineKey key) => _all.Count(b => b.Pin(key));

    /// <summary>Unpins <paramref name="key"/> in every tier; returns how many tiers unpinned it.</summary>
    public int Unpin(CacheEngineKey key) => _all.Count(b => b.Unpin(key));

    /// <summary>Removes <paramref name="key"/> from every local tier (and the remote, when asked); returns how many removed it.</summary>
    public async ValueTask<int> RemoveAsync(CacheEngineKey key, bool includeRemote = false, CancellationToken cancellationToken = default)
    {
        var removed = 0;
        foreach (var backend in _all)
        {
            if (!includeRemote && backend is Remote.RemoteBackend)
            {
                continue;
            }
            if (await backend.RemoveAsync(key, cancellationToken).ConfigureAwait(false))
            {
                removed++;
            }
        }
        return removed;
    }

    /// <summary>Clears the named tiers (all local tiers when null); returns the number of entries removed.</summary>
    public async ValueTask<int> ClearAsync(IReadOnlyCollection<string>? locations = null, CancellationToken cancellationToken = default)
    {
        var removed = 0;
        foreach (var backend in _all)
        {
            if (locations is null || locations.Contains(backend.Name))
            {
                removed += await backend.ClearAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        return removed;
    }

    /// <summary>Waits until every tier has finished its queued writes.</summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        foreach (var backend in _all)
        {
            await backend.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Disposes the lower tiers first (they may still hold CPU objects), then the CPU tier.</summary>
    public async ValueTask DisposeAsync()
    {
        for (var i = _all.Length - 1; i >= 0; i--)
        {
            await _all[i].DisposeAsync().ConfigureAwait(false);
        }
    }
}
