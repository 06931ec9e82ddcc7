namespace LMCache.Serde.CacheGen;

/// <summary>
/// Persists shared cachegen tables (<see cref="CacheGenTable.Serialized"/>) under their id, so that other processes
/// reading blobs that reference a table can load it. The host wires it: a folder (<see cref="FileCacheGenTableStore"/>),
/// or an adapter that keeps tables under their own key in the remote store.
/// </summary>
/// <remarks>Implementations may throw; <see cref="CacheGenSharedTables"/> logs failures and treats them as "table not available".</remarks>
public interface ICacheGenTableStore
{
    /// <summary>Stores <paramref name="table"/> under <paramref name="tableId"/> (32 hex digits). Overwriting with the same bytes is harmless.</summary>
    ValueTask SaveAsync(string tableId, ReadOnlyMemory<byte> table, CancellationToken cancellationToken);

    /// <summary>Loads the bytes stored under <paramref name="tableId"/>, or null when there are none.</summary>
    ValueTask<byte[]?> LoadAsync(string tableId, CancellationToken cancellationToken);
}

/// <summary>Keeps shared tables as files <c>&lt;id&gt;.lmct</c> in a folder (local or a shared file system).</summary>
public sealed class FileCacheGenTableStore : ICacheGenTableStore
{
    private readonly string _folder;

    /// <summary>Uses <paramref name="folder"/>, creating it when absent.</summary>
    public FileCacheGenTableStore(string folder)
    {
        _folder = folder;
        Directory.CreateDirectory(folder);
    }

    /// <inheritdoc />
    public async ValueTask SaveAsync(string tableId, ReadOnlyMemory<byte> table, CancellationToken cancellationToken)
    {
        var path = PathOf(tableId);
        var temporary = path + "." + Environment.ProcessId + ".tmp";
        await File.WriteAllBytesAsync(temporary, table.ToArray(), cancellationToken).ConfigureAwait(false);
        File.Move(temporary, path, overwrite: true);
    }

    /// <inheritdoc />
    public async ValueTask<byte[]?> LoadAsync(string tableId, CancellationToken cancellationToken)
    {
        var path = PathOf(tableId);
        return File.Exists(path) ? await File.ReadAllBytesAsync(path, cancellationToken).ConfigureAwait(false) : null;
    }

    private string PathOf(string tableId)
    {
        if (tableId.Length != 32 || !tableId.All(char.IsAsciiHexDigitLower))
        {
            throw new ArgumentException($"'{tableId}' is not a table id (32 lower-case hex digits).", nameof(tableId));
        }
        return Path.Combine(_folder, tableId + ".lmct");
    }
}
