using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Core.Serde;
using LMCache.Storage.Diagnostics;
using LMCache.Storage.LocalCpu;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Storage;

/// <summary>Where the chunks of one read came from.</summary>
/// <param name="Cpu">Chunks served by the CPU tier.</param>
/// <param name="Disk">Chunks served by the disk tier.</param>
/// <param name="Remote">Chunks served by the remote tier.</param>
/// <param name="Rejected">
/// Chunks a tier returned that did not match the expected metadata (0 or 1: the read stops at the first). They are
/// neither returned nor promoted, and a rejected CPU or disk entry is removed so a fresh store can replace it.
/// </param>
public readonly record struct TierHits(int Cpu, int Disk, int Remote, int Rejected = 0)
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
    private readonly ILogger _logger;
    private IKvSerde? _compressedChunkSerde;

    /// <summary>Creates the manager over the given tiers.</summary>
    /// <param name="cpu">The CPU tier (always present: it is the allocator).</param>
    /// <param name="lowerTiers">Further tiers in search order (disk, then remote).</param>
    /// <param name="storeLocation">Only store into this backend (<c>store_location</c>); null for all.</param>
    /// <param name="retrieveLocations">Only read from these backends (<c>retrieve_locations</c>); null for all.</param>
    /// <param name="metrics">Metrics to register the tiers with; null for none.</param>
    /// <param name="logger">Where rejected chunks are reported; null for none.</param>
    public StorageManager(
        LocalCpuBackend cpu,
        IReadOnlyList<IStorageBackend> lowerTiers,
        string? storeLocation = null,
        IReadOnlyList<string>? retrieveLocations = null,
        StorageMetrics? metrics = null,
        ILogger<StorageManager>? logger = null)
    {
        _logger = logger ?? (ILogger)NullLogger.Instance;
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

    /// <summary>
    /// Decodes chunks a local tier holds compressed (<see cref="MemoryFormat.BinaryBuffer"/>, e.g. re-encoded in place by
    /// the controller's <c>/compress</c>) when <see cref="GetPrefixAsync"/> is asked for raw chunks: the caller gets the
    /// decoded chunk, validated like any other (a disk hit is promoted decoded; the CPU tier keeps its compressed entry).
    /// Defaults to null: a compressed chunk then ends the prefix (it is kept, not removed). Safe to set while reads run.
    /// </summary>
    public IKvSerde? CompressedChunkSerde
    {
        get => Volatile.Read(ref _compressedChunkSerde);
        set => Volatile.Write(ref _compressedChunkSerde, value);
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
    /// <param name="keys">The chunk keys, in prefix order.</param>
    /// <param name="destination">Receives one object per returned chunk; at least as long as <paramref name="keys"/>.</param>
    /// <param name="expected">
    /// The metadata each chunk must have (format, dtype, shape; the length follows), one per key; empty to accept
    /// whatever the tiers hold. The prefix ends at the first chunk that differs: it is released, not promoted into
    /// the CPU tier, and removed from its tier when that is the CPU or disk tier, so the next store replaces it.
    /// </param>
    /// <param name="cancellationToken">Cancels the read.</param>
    public async ValueTask<(int Count, TierHits Hits)> GetPrefixAsync(
        ReadOnlyMemory<CacheEngineKey> keys,
        Memory<MemoryObject?> destination,
        ReadOnlyMemory<MemoryObjectMetadata> expected = default,
        CancellationToken cancellationToken = default)
    {
        if (!expected.IsEmpty && expected.Length < keys.Length)
        {
            throw new ArgumentException("expected must be empty or hold one entry per key.", nameof(expected));
        }
        var found = 0;
        int cpu = 0, disk = 0, remote = 0, rejected = 0;
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
            if (!expected.IsEmpty)
            {
                var valid = CountValid(
                    keys.Span.Slice(found, count), destination.Span.Slice(found, count), expected.Span.Slice(found, count), backend, out var wrongEntries);
                if (valid < count)
                {
                    rejected = 1;
                    // A local tier's wrong entries would shadow (CPU) or block (disk: puts of a present key are skipped)
                    // the right chunks forever: remove them so the next store replaces them. The remote tier is shared
                    // with other engines, which may expect that layout: it keeps its entries. A compressed chunk is not
                    // wrong, only undecodable here: it stays.
                    if (backend is not Remote.RemoteBackend && wrongEntries is not null)
                    {
                        foreach (var key in wrongEntries)
                        {
                            await backend.RemoveAsync(key, cancellationToken).ConfigureAwait(false);
                        }
                    }
                    count = valid;
                }
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
            if (rejected > 0)
            {
                break;
            }
        }
        return (found, new TierHits(cpu, disk, remote, rejected));
    }

    /// <summary>
    /// How many of <paramref name="objects"/>, from the first, match <paramref name="expected"/>; the first that does
    /// not and every one after it are released and cleared. <paramref name="wrongEntries"/> lists the keys, from the
    /// first mismatch on, whose stored chunk has other metadata (compressed chunks that could not be decoded excluded);
    /// null when there are none.
    /// </summary>
    private int CountValid(
        ReadOnlySpan<CacheEngineKey> keys, Span<MemoryObject?> objects, ReadOnlySpan<MemoryObjectMetadata> expected, IStorageBackend backend,
        out List<CacheEngineKey>? wrongEntries)
    {
        wrongEntries = null;
        for (var i = 0; i < objects.Length; i++)
        {
            var item = objects[i]!;
            var storedAs = item.Metadata;
            if (storedAs.Format == MemoryFormat.BinaryBuffer && expected[i].Format != MemoryFormat.BinaryBuffer)
            {
                // A chunk kept compressed in its tier (the controller's /compress): the caller gets it decoded.
                var decoded = DecodeCompressed(item);
                item.Release();
                objects[i] = decoded;
                if (decoded is null)
                {
                    StorageLog.ChunkRejected(_logger, keys[i].ToString(), backend.Name, $"{storedAs} that could not be decoded", expected[i].ToString());
                    ReleaseFrom(objects, i + 1);
                    return i;
                }
                item = decoded;
            }
            if (item.Metadata == expected[i] && item.Length == expected[i].ByteLength)
            {
                continue;
            }
            StorageLog.ChunkRejected(_logger, keys[i].ToString(), backend.Name, item.Metadata.ToString(), expected[i].ToString());
            for (var j = i; j < objects.Length; j++)
            {
                var other = objects[j]!.Metadata;
                var compressed = other.Format == MemoryFormat.BinaryBuffer && expected[j].Format != MemoryFormat.BinaryBuffer;
                if (!compressed && (other != expected[j] || objects[j]!.Length != expected[j].ByteLength))
                {
                    (wrongEntries ??= []).Add(keys[j]);
                }
            }
            ReleaseFrom(objects, i);
            return i;
        }
        return objects.Length;
    }

    private static void ReleaseFrom(Span<MemoryObject?> objects, int start)
    {
        for (var j = start; j < objects.Length; j++)
        {
            objects[j]?.Release();
            objects[j] = null;
        }
    }

    /// <summary>A compressed chunk decoded into a fresh CPU object (the caller owns it), or null when it cannot be.</summary>
    private MemoryObject? DecodeCompressed(MemoryObject compressed)
    {
        if (CompressedChunkSerde is not { } serde)
        {
            return null;
        }
        try
        {
            return serde.Deserialize(compressed, Cpu);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A decoder defect is a miss: the request recomputes from this chunk.
            StorageLog.ChunkRejected(_logger, "(compressed chunk)", Cpu.Name, ex.Message, "a decodable chunk");
            return null;
        }
    }

    /// <summary>Pins <paramref name="key"/> in every pinnable tier that holds it; returns how many tiers pinned it.</summary>
    public int Pin(CacheEngineKey key) => _all.OfType<IPinnableBackend>().Count(b => b.Pin(key));

    /// <summary>Unpins <paramref name="key"/> in every pinnable tier; returns how many tiers unpinned it.</summary>
    public int Unpin(CacheEngineKey key) => _all.OfType<IPinnableBackend>().Count(b => b.Unpin(key));

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
