using LMCache.Core.Keys;
using LMCache.Core.Memory;

namespace LMCache.Storage.Remote;

/// <summary>
/// An optional capability of a <see cref="IRemoteConnector"/>: enumerate, inspect and delete what the store holds,
/// including entries a read would refuse (half-written pairs, invalid metadata, keys that are not LMCache keys). The
/// <c>lmcache keys</c> tools use it; the data path never does.
/// </summary>
/// <remarks>
/// A connector that implements it says so by type (<c>connector is IRemoteKeyspace</c>). Keys are plain strings here,
/// as stored (without any per-store suffix such as Redis's <c>kv_bytes</c>/<c>metadata</c>), because a store may hold
/// keys that do not parse as a <see cref="CacheEngineKey"/> and the tools must still be able to see and remove them.
/// </remarks>
public interface IRemoteKeyspace
{
    /// <summary>
    /// Waits until the store answers (tools call it before anything else). Credentials the store refuses fail at once
    /// with an exception that says so; when <paramref name="cancellationToken"/> fires first, a <see cref="TimeoutException"/>
    /// carries the last connection error.
    /// </summary>
    Task WaitUntilConnectedAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Enumerates the stored entries without blocking the store (SCAN-style), each with the layout its metadata
    /// declares checked against the stored payload length (the payload itself is not read: <see cref="RemoteEntry.ChecksumMatches"/>
    /// stays null). Complete, invalid and half-written entries are all listed; see <see cref="RemoteEntry.State"/>.
    /// </summary>
    /// <param name="modelName">Only entries whose key names this model (the key's second field); null for all.</param>
    /// <param name="cancellationToken">Stops the enumeration.</param>
    IAsyncEnumerable<RemoteEntry> ListAsync(string? modelName, CancellationToken cancellationToken);

    /// <summary>
    /// Reads one entry completely and reports what a read would do with it: sizes, the decoded metadata, and — when the
    /// entry carries a checksum — whether the payload matches it. A key that is not stored is <see cref="RemoteEntryState.NotFound"/>.
    /// </summary>
    /// <param name="key">The key string as listed.</param>
    /// <param name="cancellationToken">Stops the read.</param>
    ValueTask<RemoteEntry> InspectAsync(string key, CancellationToken cancellationToken);

    /// <summary>Deletes everything stored under <paramref name="key"/> (payload and metadata); true if anything existed.</summary>
    /// <param name="key">The key string as listed (it need not parse as an LMCache key).</param>
    /// <param name="cancellationToken">Stops the removal.</param>
    ValueTask<bool> RemoveAsync(string key, CancellationToken cancellationToken);
}

/// <summary>What a store holds under one key, as <see cref="IRemoteKeyspace"/> sees it.</summary>
public enum RemoteEntryState
{
    /// <summary>Payload and metadata are present and agree (and, for <see cref="IRemoteKeyspace.InspectAsync"/>, the checksum matches): a read serves it.</summary>
    Valid,

    /// <summary>A payload without its metadata (evicted metadata, or a put caught between its two writes): a read misses and deletes it.</summary>
    PayloadWithoutMetadata,

    /// <summary>Metadata without its payload (an evicted payload): a read misses and deletes it.</summary>
    MetadataWithoutPayload,

    /// <summary>Metadata that does not decode, or does not describe the payload or the key: a read misses and deletes it.</summary>
    InvalidMetadata,

    /// <summary>The payload does not match the checksum stored with it (found by <see cref="IRemoteKeyspace.InspectAsync"/> only).</summary>
    ChecksumMismatch,

    /// <summary>Nothing is stored under the key (<see cref="IRemoteKeyspace.InspectAsync"/> only).</summary>
    NotFound,
}

/// <summary>
/// The metadata record of a stored entry as decoded, before any check against the payload — the original's
/// <c>RemoteMetadata</c> fields. Values may be anything a writer put there; <see cref="RemoteEntry.Layout"/> holds the
/// checked interpretation.
/// </summary>
/// <param name="Length">Payload bytes the writer declared.</param>
/// <param name="FormatCode">The declared <see cref="MemoryFormat"/> value.</param>
/// <param name="DTypeCode">The declared wire dtype code.</param>
/// <param name="Shape">The declared four shape integers.</param>
public readonly record struct RemoteEntryHeader(int Length, int FormatCode, int DTypeCode, KvShape Shape)
{
    /// <summary>The fields in words, with format and dtype names where the codes are known.</summary>
    public override string ToString()
    {
        var dtype = KvDTypes.FromWireCode(DTypeCode, out var d) ? d.ToString() : $"dtype code {DTypeCode}";
        var format = Enum.IsDefined(typeof(MemoryFormat), FormatCode) ? ((MemoryFormat)FormatCode).ToString() : $"format {FormatCode}";
        return $"length {Length}, {format}, {dtype}, shape {Shape}";
    }
}

/// <summary>A typed description of one stored entry: what the <c>lmcache keys</c> tools print.</summary>
public sealed record RemoteEntry
{
    /// <summary>The key string as stored (without a per-store suffix).</summary>
    public required string Key { get; init; }

    /// <summary>What a read would do with the entry.</summary>
    public required RemoteEntryState State { get; init; }

    /// <summary>Why the entry is not <see cref="RemoteEntryState.Valid"/>, in words; null when it is.</summary>
    public string? Problem { get; init; }

    /// <summary>Bytes of the stored payload, or null when there is none.</summary>
    public long? PayloadBytes { get; init; }

    /// <summary>Bytes of the stored metadata record (Redis: 28 in the original's layout, 44 with our checksum trailer), or null when there is none.</summary>
    public int? MetadataBytes { get; init; }

    /// <summary>The decoded metadata record, when it decodes (even when it does not fit the payload).</summary>
    public RemoteEntryHeader? Header { get; init; }

    /// <summary>What a read would allocate — format, dtype and shape — when the metadata agrees with the payload.</summary>
    public MemoryObjectMetadata? Layout { get; init; }

    /// <summary>The payload checksum stored with the entry (XxHash3-64, our trailer), or null when the writer stored none (the original's layout).</summary>
    public ulong? Checksum { get; init; }

    /// <summary>Whether the payload matches <see cref="Checksum"/>: set by <see cref="IRemoteKeyspace.InspectAsync"/> when there is a checksum, else null.</summary>
    public bool? ChecksumMatches { get; init; }

    /// <summary>True when a read would serve the entry.</summary>
    public bool IsValid => State == RemoteEntryState.Valid;

    /// <summary>True when the entry carries our checksum trailer.</summary>
    public bool HasChecksum => Checksum.HasValue;

    /// <summary>Whether <see cref="Checksum"/> covers the key as well as the payload (Redis trailer version 2), so a pair moved to another key is detected.</summary>
    public bool ChecksumCoversKey { get; init; }

    /// <summary>
    /// True when nothing binds the entry to its key: no checksum (the original's layout) or a payload-only checksum (our
    /// earlier trailer). Such entries are read only when the connector accepts unbound entries (Redis: <c>redis_accept_unbound</c>).
    /// </summary>
    public bool IsUnprotected => !ChecksumCoversKey;

    /// <summary>The model the key names (its second field), or null when the key is not an LMCache key string.</summary>
    public string? ModelName => CacheEngineKey.TryParse(Key, out var parsed) ? parsed.ModelName : null;
}

/// <summary>Entry and byte counts of a keyspace, in total and per model (what <c>lmcache keys stats</c> prints).</summary>
/// <param name="Entries">Entries listed.</param>
/// <param name="PayloadBytes">Payload bytes of those entries.</param>
/// <param name="Invalid">Entries a read would not serve (invalid or half-written).</param>
/// <param name="WithChecksum">Valid entries with our checksum trailer.</param>
/// <param name="OriginalLayout">Valid entries in the original's layout (no trailer).</param>
/// <param name="Models">The same counts per model, ordered by model name; keys that are not LMCache keys count under <see cref="RemoteKeyspaceStatistics.NotAnLMCacheKey"/>.</param>
public sealed record RemoteKeyspaceStatistics(
    int Entries, long PayloadBytes, int Invalid, int WithChecksum, int OriginalLayout, IReadOnlyList<RemoteModelStatistics> Models)
{
    /// <summary>The model name under which keys that do not parse are counted.</summary>
    public const string NotAnLMCacheKey = "(not an LMCache key)";

    /// <summary>Counts the entries <paramref name="keyspace"/> lists (for <paramref name="modelName"/>, or all when null).</summary>
    public static async Task<RemoteKeyspaceStatistics> CollectAsync(IRemoteKeyspace keyspace, string? modelName, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(keyspace);
        return From(await keyspace.ListAllAsync(modelName, cancellationToken).ConfigureAwait(false));
    }

    /// <summary>Counts <paramref name="entries"/>.</summary>
    public static RemoteKeyspaceStatistics From(IReadOnlyCollection<RemoteEntry> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var models = entries
            .GroupBy(e => e.ModelName ?? NotAnLMCacheKey)
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => new RemoteModelStatistics(g.Key, g.Count(), g.Sum(e => e.PayloadBytes ?? 0), g.Count(e => !e.IsValid)))
            .ToList();
        return new RemoteKeyspaceStatistics(
            entries.Count,
            entries.Sum(e => e.PayloadBytes ?? 0),
            entries.Count(e => !e.IsValid),
            entries.Count(e => e.IsValid && e.HasChecksum),
            entries.Count(e => e.IsValid && !e.HasChecksum),
            models);
    }
}

/// <summary>Entry and byte counts of one model in a keyspace.</summary>
/// <param name="ModelName">The model (the key's second field).</param>
/// <param name="Entries">Entries listed.</param>
/// <param name="PayloadBytes">Their payload bytes.</param>
/// <param name="Invalid">Entries a read would not serve.</param>
public sealed record RemoteModelStatistics(string ModelName, int Entries, long PayloadBytes, int Invalid);

/// <summary>Helpers over <see cref="IRemoteKeyspace"/>.</summary>
public static class RemoteKeyspaceExtensions
{
    /// <summary>Collects <see cref="IRemoteKeyspace.ListAsync"/> into a list.</summary>
    public static async Task<List<RemoteEntry>> ListAllAsync(this IRemoteKeyspace keyspace, string? modelName, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(keyspace);
        var result = new List<RemoteEntry>();
        await foreach (var entry in keyspace.ListAsync(modelName, cancellationToken).ConfigureAwait(false))
        {
            result.Add(entry);
        }
        return result;
    }
}
