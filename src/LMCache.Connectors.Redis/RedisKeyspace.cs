using System.IO.Hashing;
using System.Runtime.CompilerServices;
using System.Text;
using LMCache.Core.Keys;
using LMCache.Storage.Remote;
using StackExchange.Redis;

namespace LMCache.Connectors.Redis;

/// <summary>
/// The keyspace half of <see cref="RedisConnector"/> (<see cref="IRemoteKeyspace"/>): lists entries with <c>SCAN</c> on
/// every master (never <c>KEYS</c>), inspects and deletes them, describing each with the same rules the data path reads
/// by (<see cref="RemoteMetadata.TryRead"/>, <see cref="RemoteMetadata.TryValidate"/>, the checksum trailer). It shares
/// the connector's <see cref="RedisConnection"/> and never touches chunk memory.
/// </summary>
internal sealed class RedisKeyspace
{
    private const int ScanPageSize = 512;

    private readonly RedisConnection _connection;
    private readonly int _database;

    public RedisKeyspace(RedisConnection connection, int database)
    {
        _connection = connection;
        _database = database;
    }

    /// <inheritdoc cref="IRemoteKeyspace.ListAsync"/>
    /// <remarks>
    /// Two passes per master: keys ending in <c>metadata</c> (complete pairs, invalid metadata, metadata without
    /// payload), then keys ending in <c>kv_bytes</c> whose metadata is missing. With a model, the SCAN pattern already
    /// narrows to keys containing <c>@model@</c>; the parsed key decides.
    /// </remarks>
    public async IAsyncEnumerable<RemoteEntry> ListAsync(string? modelName, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var db = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var servers = RedisConnection.DistinctMasters(db.Multiplexer);
        if (servers.Count == 0)
        {
            throw new InvalidOperationException($"{_connection.Description}: no master is connected");
        }
        var pattern = modelName is null ? "*" : "*@" + GlobEscape(modelName) + "@*";
        foreach (var server in servers)
        {
            var page = new List<string>(ScanPageSize);
            await foreach (var redisKey in server.KeysAsync(_database, pattern + RedisConnector.MetadataSuffix, ScanPageSize).WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                page.Add(((string)redisKey!)[..^RedisConnector.MetadataSuffix.Length]);
                if (page.Count == ScanPageSize)
                {
                    foreach (var entry in await DescribeAsync(db, page, modelName, cancellationToken).ConfigureAwait(false))
                    {
                        yield return entry;
                    }
                    page.Clear();
                }
            }
            foreach (var entry in await DescribeAsync(db, page, modelName, cancellationToken).ConfigureAwait(false))
            {
                yield return entry;
            }
            page.Clear();
            await foreach (var redisKey in server.KeysAsync(_database, pattern + RedisConnector.PayloadSuffix, ScanPageSize).WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                page.Add(((string)redisKey!)[..^RedisConnector.PayloadSuffix.Length]);
                if (page.Count == ScanPageSize)
                {
                    foreach (var entry in await DescribeOrphansAsync(db, page, modelName, cancellationToken).ConfigureAwait(false))
                    {
                        yield return entry;
                    }
                    page.Clear();
                }
            }
            foreach (var entry in await DescribeOrphansAsync(db, page, modelName, cancellationToken).ConfigureAwait(false))
            {
                yield return entry;
            }
        }
    }

    /// <inheritdoc cref="IRemoteKeyspace.InspectAsync"/>
    public async ValueTask<RemoteEntry> InspectAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var db = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var batch = db.CreateBatch();
        var metaTask = batch.StringGetAsync(RedisConnector.MetadataKey(key));
        var payloadTask = batch.StringGetLeaseAsync(RedisConnector.PayloadKey(key));
        batch.Execute();
        var meta = await metaTask.WaitAsync(cancellationToken).ConfigureAwait(false);
        using var lease = await payloadTask.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (meta.IsNull)
        {
            return lease is null
                ? new RemoteEntry { Key = key, State = RemoteEntryState.NotFound, Problem = "not found" }
                : new RemoteEntry { Key = key, State = RemoteEntryState.PayloadWithoutMetadata, Problem = "payload without metadata", PayloadBytes = lease.Length };
        }
        var entry = Describe(key, (byte[])meta!, lease?.Length);
        if (entry is { IsValid: true, Checksum: not null } && lease is not null && RemoteMetadata.TryRead((byte[])meta!, out var stored, out _))
        {
            var matches = stored.Verifies(XxHash3.HashToUInt64(lease.Span), key);
            entry = matches
                ? entry with { ChecksumMatches = true }
                : entry with { ChecksumMatches = false, State = RemoteEntryState.ChecksumMismatch, Problem = "checksum mismatch", Layout = null };
        }
        return entry;
    }

    /// <inheritdoc cref="IRemoteKeyspace.RemoveAsync"/>
    public async ValueTask<bool> RemoveAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var db = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var batch = db.CreateBatch();
        var payload = batch.KeyDeleteAsync(RedisConnector.PayloadKey(key));
        var metadata = batch.KeyDeleteAsync(RedisConnector.MetadataKey(key));
        batch.Execute();
        var results = await Task.WhenAll(payload, metadata).WaitAsync(cancellationToken).ConfigureAwait(false);
        return results[0] || results[1];
    }

    /// <summary>
    /// Describes an entry from its metadata bytes and its payload length (null: no payload), by the data path's rules;
    /// the checksum is reported but not verified here.
    /// </summary>
    internal static RemoteEntry Describe(string key, byte[] metadata, long? payloadLength)
    {
        if (!RemoteMetadata.TryRead(metadata, out var stored, out var error))
        {
            return new RemoteEntry
            {
                Key = key,
                State = RemoteEntryState.InvalidMetadata,
                Problem = error ?? "invalid metadata",
                PayloadBytes = payloadLength,
                MetadataBytes = metadata.Length,
            };
        }
        var entry = new RemoteEntry
        {
            Key = key,
            State = RemoteEntryState.Valid,
            PayloadBytes = payloadLength,
            MetadataBytes = metadata.Length,
            Header = new RemoteEntryHeader(stored.Length, stored.FormatCode, stored.DTypeCode, stored.Shape),
            Checksum = stored.Checksum,
            ChecksumCoversKey = stored.KeyBound,
        };
        if (payloadLength is not { } length)
        {
            return entry with { State = RemoteEntryState.MetadataWithoutPayload, Problem = "metadata without payload" };
        }
        CacheEngineKey.TryParse(key, out var parsed);
        return stored.TryValidate(length, parsed, out var layout, out error)
            ? entry with { Layout = layout }
            : entry with { State = RemoteEntryState.InvalidMetadata, Problem = error ?? "invalid metadata" };
    }

    private static async Task<List<RemoteEntry>> DescribeAsync(IDatabase db, List<string> names, string? modelName, CancellationToken cancellationToken)
    {
        var result = new List<RemoteEntry>(names.Count);
        if (names.Count == 0)
        {
            return result;
        }
        var batch = db.CreateBatch();
        var metas = new Task<RedisValue>[names.Count];
        var lengths = new Task<long>[names.Count];
        for (var i = 0; i < names.Count; i++)
        {
            metas[i] = batch.StringGetAsync(RedisConnector.MetadataKey(names[i]));
            lengths[i] = batch.StringLengthAsync(RedisConnector.PayloadKey(names[i]));
        }
        batch.Execute();
        await Task.WhenAll(Task.WhenAll(metas), Task.WhenAll(lengths)).WaitAsync(cancellationToken).ConfigureAwait(false);
        for (var i = 0; i < names.Count; i++)
        {
            if (!IsOfModel(names[i], modelName))
            {
                continue;
            }
            var meta = await metas[i].ConfigureAwait(false);
            if (meta.IsNull)
            {
                continue; // Deleted between SCAN and GET.
            }
            var payloadLength = await lengths[i].ConfigureAwait(false);
            result.Add(Describe(names[i], (byte[])meta!, payloadLength == 0 ? null : payloadLength));
        }
        return result;
    }

    private static async Task<List<RemoteEntry>> DescribeOrphansAsync(IDatabase db, List<string> names, string? modelName, CancellationToken cancellationToken)
    {
        var result = new List<RemoteEntry>();
        if (names.Count == 0)
        {
            return result;
        }
        var batch = db.CreateBatch();
        var exists = new Task<bool>[names.Count];
        var lengths = new Task<long>[names.Count];
        for (var i = 0; i < names.Count; i++)
        {
            exists[i] = batch.KeyExistsAsync(RedisConnector.MetadataKey(names[i]));
            lengths[i] = batch.StringLengthAsync(RedisConnector.PayloadKey(names[i]));
        }
        batch.Execute();
        await Task.WhenAll(Task.WhenAll(exists), Task.WhenAll(lengths)).WaitAsync(cancellationToken).ConfigureAwait(false);
        for (var i = 0; i < names.Count; i++)
        {
            var payloadLength = await lengths[i].ConfigureAwait(false);
            if (await exists[i].ConfigureAwait(false) || payloadLength == 0 || !IsOfModel(names[i], modelName))
            {
                continue;
            }
            result.Add(new RemoteEntry
            {
                Key = names[i],
                State = RemoteEntryState.PayloadWithoutMetadata,
                Problem = "payload without metadata",
                PayloadBytes = payloadLength,
            });
        }
        return result;
    }

    private static bool IsOfModel(string name, string? modelName) =>
        modelName is null || (CacheEngineKey.TryParse(name, out var key) && key.ModelName == modelName);

    private static string GlobEscape(string text)
    {
        var builder = new StringBuilder(text.Length + 4);
        foreach (var c in text)
        {
            if (c is '*' or '?' or '[' or ']' or '\\')
            {
                builder.Append('\\');
            }
            builder.Append(c);
        }
        return builder.ToString();
    }
}
