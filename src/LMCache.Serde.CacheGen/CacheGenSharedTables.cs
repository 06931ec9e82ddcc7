using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Serde.CacheGen;

/// <summary>
/// The shared-table mode's table provider: profiles a table per model geometry (layers, hidden size, bins) from the
/// first <see cref="ProfileChunks"/> chunks it encodes, then hands it to the encoder so later blobs carry only its id;
/// on the read side it resolves ids from memory or, through an optional <see cref="ICacheGenTableStore"/>, from
/// persistent storage. Thread-safe.
/// </summary>
/// <remarks>
/// A read whose table is not in memory is a miss: the lookup starts a background load from the store (when one is
/// wired) and returns null at once, so the inference path never waits on it; once loaded, later reads decode.
/// Chunks encoded while profiling carry their own tables and decode anywhere.
/// </remarks>
public sealed class CacheGenSharedTables
{
    private readonly ConcurrentDictionary<UInt128, CacheGenTable> _tables = new();
    private readonly ConcurrentDictionary<string, CacheGenTable> _published = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Profile> _profiles = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<UInt128, Task> _loads = new();
    private readonly ICacheGenTableStore? _store;
    private readonly ILogger _logger;
    private readonly Lock _savesLock = new();
    private Task _saves = Task.CompletedTask;

    /// <summary>Creates a provider.</summary>
    /// <param name="profileChunks">Chunks profiled before a table is published (at least 1). Defaults to 8.</param>
    /// <param name="store">Where tables are persisted and looked up by id; null keeps them in this process only.</param>
    /// <param name="logger">Receives save/load failures; defaults to none.</param>
    public CacheGenSharedTables(int profileChunks = 8, ICacheGenTableStore? store = null, ILogger? logger = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(profileChunks, 1);
        ProfileChunks = profileChunks;
        _store = store;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Chunks profiled before a table is published.</summary>
    public int ProfileChunks { get; }

    /// <summary>Tables known in memory (profiled here, added, or loaded).</summary>
    public int Count => _tables.Count;

    /// <summary>Adds a table (e.g. profiled offline) for both encoding its geometry and decoding its id.</summary>
    public void Add(CacheGenTable table)
    {
        ArgumentNullException.ThrowIfNull(table);
        _tables[table.Id] = table;
        _published.TryAdd(GeometryKey(table.Bins, table.Hidden), table);
    }

    /// <summary>The table with <paramref name="id"/> when it is in memory; otherwise null, and a background load starts when a store is wired.</summary>
    public CacheGenTable? TryGet(UInt128 id)
    {
        if (_tables.TryGetValue(id, out var table))
        {
            return table;
        }
        if (_store is not null)
        {
            // At most one load in flight per id (a rare duplicate after a race is harmless); a finished one may be retried.
            if (!_loads.TryGetValue(id, out var running) || running.IsCompleted)
            {
                _loads[id] = Task.Run(() => LoadAsync(id, CancellationToken.None));
            }
        }
        return null;
    }

    /// <summary>Resolves <paramref name="id"/> from memory or the store (waiting for it); null when unavailable or invalid.</summary>
    public async Task<CacheGenTable?> LoadAsync(UInt128 id, CancellationToken cancellationToken)
    {
        if (_tables.TryGetValue(id, out var known))
        {
            return known;
        }
        if (_store is null)
        {
            return null;
        }
        var idText = CacheGenTable.FormatId(id);
        try
        {
            var bytes = await _store.LoadAsync(idText, cancellationToken).ConfigureAwait(false);
            if (bytes is null)
            {
                CacheGenLog.TableNotFound(_logger, idText);
                return null;
            }
            var table = CacheGenTable.TryParse(bytes);
            if (table is null || table.Id != id)
            {
                CacheGenLog.TableInvalid(_logger, idText);
                return null;
            }
            _tables[id] = table;
            return table;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            CacheGenLog.TableLoadFailed(_logger, ex, idText);
            return null;
        }
    }

    /// <summary>The published table for a geometry, or null while it is still being profiled.</summary>
    internal CacheGenTable? ForEncode(CacheGenBins bins, int hidden) =>
        _published.TryGetValue(GeometryKey(bins, hidden), out var table) ? table : null;

    /// <summary>
    /// Adds one chunk's symbol counts <c>[2·layers, hidden, maxBins]</c> (over <paramref name="tokens"/> tokens) to the
    /// geometry's profile; publishes (and persists) the table once <see cref="ProfileChunks"/> chunks were seen.
    /// </summary>
    internal void Observe(CacheGenBins bins, int hidden, ReadOnlySpan<uint> counts, int tokens)
    {
        var key = GeometryKey(bins, hidden);
        if (_published.ContainsKey(key))
        {
            return;
        }
        var length = counts.Length;
        var profile = _profiles.GetOrAdd(key, _ => new Profile(length));
        CacheGenTable? table = null;
        lock (profile)
        {
            if (profile.Done || profile.Counts.Length != counts.Length)
            {
                return;
            }
            for (var i = 0; i < counts.Length; i++)
            {
                profile.Counts[i] += counts[i];
            }
            profile.Tokens += (ulong)tokens;
            profile.Chunks++;
            if (profile.Chunks >= ProfileChunks)
            {
                profile.Done = true;
                table = CacheGenTable.FromCounts(bins, hidden, profile.Counts, profile.Tokens);
            }
        }
        if (table is null)
        {
            return;
        }
        _tables[table.Id] = table;
        _published[key] = table;
        _profiles.TryRemove(key, out _);
        CacheGenLog.TablePublished(_logger, table.IdText, bins.Layers, hidden, ProfileChunks, table.Serialized.Length);
        if (_store is not null)
        {
            var save = SaveAsync(table);
            lock (_savesLock)
            {
                _saves = Task.WhenAll(_saves, save);
            }
        }
    }

    /// <summary>Completes when every table published so far has been handed to the store (saves never fault).</summary>
    internal Task SavesCompleted
    {
        get
        {
            lock (_savesLock)
            {
                return _saves;
            }
        }
    }

    private async Task SaveAsync(CacheGenTable table)
    {
        try
        {
            await _store!.SaveAsync(table.IdText, table.Serialized, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            CacheGenLog.TableSaveFailed(_logger, ex, table.IdText);
        }
    }

    private static string GeometryKey(CacheGenBins bins, int hidden) => $"{hidden}|{bins}";

    private sealed class Profile(int length)
    {
        public ulong[] Counts { get; } = new ulong[length];
        public ulong Tokens { get; set; }
        public int Chunks { get; set; }
        public bool Done { get; set; }
    }
}
