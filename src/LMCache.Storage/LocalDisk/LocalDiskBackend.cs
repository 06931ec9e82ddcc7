using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO.Hashing;
using LMCache.Core.Diagnostics;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.Diagnostics;
using LMCache.Storage.Eviction;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Storage.LocalDisk;

/// <summary>
/// The local-disk tier: one self-describing, checksummed file per chunk (<see cref="DiskChunkFile"/>), published
/// atomically, with a bounded size and policy eviction.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>Stores are asynchronous: the put reserves space (evicting unpinned entries in policy order, or dropping the put
/// when nothing can go), keeps a reference to the chunk, and a writer task writes <c>name.tmp</c> then renames it to
/// <c>name.lmc</c>. Only a complete file is ever visible to lookups.</item>
/// <item>Reads allocate from the CPU tier, read the payload while hashing it, and return the chunk only when the length
/// and the XxHash3 checksum match; a truncated, corrupted or vanished file is a miss and is removed.</item>
/// <item>On start the index is rebuilt from the folder (the original keeps it in memory only and forgets everything):
/// valid files come back in modification-time order, leftovers of interrupted writes and invalid files are deleted.</item>
/// </list>
/// </remarks>
public sealed class LocalDiskBackend : IListableBackend, IPinnableBackend, IStorageEventSource
{
    /// <summary>The backend name used by <c>store_location</c>/<c>retrieve_locations</c>.</summary>
    public const string BackendName = "LocalDiskBackend";

    private const int ReadBlockSize = 1 << 20;

    [ThreadStatic]
    private static XxHash3? s_threadHasher;

    private readonly string _folder;
    private readonly IMemoryAllocator _allocator;
    private readonly ILogger _logger;
    private readonly Dictionary<CacheEngineKey, DiskEntry> _index = [];
    private readonly HashSet<CacheEngineKey> _writing = [];
    private readonly EvictionPolicy<CacheEngineKey> _policy;
    private readonly Func<CacheEngineKey, bool> _canEvict;
    private readonly Lock _lock = new();
    private readonly BlockingCollection<WriteJob> _writes;
    private readonly Thread[] _writers;
    private long _reservedBytes;
    private int _pendingWrites;

    /// <summary>Opens (or creates) the tier in <paramref name="folder"/> and recovers the entries already there.</summary>
    /// <param name="folder">The folder (<c>local_disk</c>).</param>
    /// <param name="capacityBytes">Size limit of the files (<c>max_local_disk_size</c>).</param>
    /// <param name="allocator">Where reads allocate (the CPU tier).</param>
    /// <param name="cachePolicy">Eviction policy name.</param>
    /// <param name="writeQueueCapacity">Chunks queued for writing before puts are dropped. Defaults to 64.</param>
    /// <param name="writerCount">Concurrent writers. Defaults to 2.</param>
    /// <param name="logger">Logger; null for none.</param>
    /// <exception cref="LMCacheConfigurationException">The folder cannot be created or written.</exception>
    public LocalDiskBackend(
        string folder,
        long capacityBytes,
        IMemoryAllocator allocator,
        string cachePolicy = "LRU",
        int writeQueueCapacity = 64,
        int writerCount = 2,
        ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacityBytes, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(writeQueueCapacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(writerCount, 1);
        _folder = Path.GetFullPath(folder);
        _allocator = allocator;
        _logger = logger ?? NullLogger.Instance;
        _policy = EvictionPolicies.Create<CacheEngineKey>(cachePolicy);
        _canEvict = key => _index.TryGetValue(key, out var entry) && entry.PinCount == 0;
        CapacityBytes = capacityBytes;
        Statistics = new TierStatistics(BackendName, capacityBytes);
        Events = new StorageEvents(BackendName);
        EnsureWritable(_folder);
        Recover();
        // Writers are dedicated threads: their file I/O is synchronous, and on the shared thread pool a busy server
        // could starve them, leaving CPU chunks pinned by pending writes and unevictable.
        _writes = new BlockingCollection<WriteJob>(writeQueueCapacity);
        _writers = new Thread[writerCount];
        for (var i = 0; i < writerCount; i++)
        {
            _writers[i] = new Thread(RunWriter) { IsBackground = true, Name = $"lmcache-disk-writer-{i}" };
            _writers[i].Start();
        }
    }

    /// <inheritdoc />
    public string Name => BackendName;

    /// <inheritdoc />
    public TierStatistics Statistics { get; }

    /// <inheritdoc />
    public StorageEvents Events { get; }

    /// <summary>The folder holding the files.</summary>
    public string Folder => _folder;

    /// <summary>Size limit in bytes (headers included).</summary>
    public long CapacityBytes { get; }

    /// <summary>Number of complete entries.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _index.Count;
            }
        }
    }

    /// <inheritdoc />
    /// <remarks>True when a complete file for <paramref name="key"/> is indexed.</remarks>
    public bool Contains(CacheEngineKey key)
    {
        lock (_lock)
        {
            return _index.ContainsKey(key);
        }
    }

    /// <inheritdoc />
    /// <remarks>Bytes are the file's bytes on disk (header included).</remarks>
    public IReadOnlyList<TierEntry> Snapshot()
    {
        var now = DateTimeOffset.UtcNow;
        var nowTimestamp = Stopwatch.GetTimestamp();
        lock (_lock)
        {
            return [.. _index.Select(e => new TierEntry(
                e.Key, e.Value.FileBytes, e.Value.PinCount > 0, e.Value.Metadata, TierEntry.ToUtc(e.Value.LastAccess, now, nowTimestamp)))];
        }
    }

    /// <inheritdoc />
    public ValueTask<int> ContainsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken = default)
    {
        var span = keys.Span;
        lock (_lock)
        {
            for (var i = 0; i < span.Length; i++)
            {
                if (!_index.ContainsKey(span[i]))
                {
                    return ValueTask.FromResult(i);
                }
            }
        }
        return ValueTask.FromResult(span.Length);
    }

    /// <inheritdoc />
    public void SubmitPut(CacheEngineKey key, MemoryObject memoryObject)
    {
        ArgumentNullException.ThrowIfNull(memoryObject);
        var fileBytes = DiskChunkFile.HeaderSize + (long)memoryObject.Length;
        List<string>? evictedFiles = null;
        List<CacheEngineKey>? evictedKeys = null;
        lock (_lock)
        {
            if (_index.ContainsKey(key) || _writing.Contains(key))
            {
                return;
            }
            while (_reservedBytes + fileBytes > CapacityBytes)
            {
                if (!_policy.TryFindVictim(_canEvict, out var victim))
                {
                    break;
                }
                var entry = RemoveEntryLocked(victim);
                (evictedFiles ??= []).Add(entry.Path);
                (evictedKeys ??= []).Add(victim);
                Statistics.RecordEviction();
            }
            if (_reservedBytes + fileBytes <= CapacityBytes)
            {
                _reservedBytes += fileBytes;
                _writing.Add(key);
            }
            else
            {
                Statistics.RecordPutDropped();
                StorageLog.DiskNoRoom(_logger, fileBytes, CapacityBytes, key.ToString());
                fileBytes = -1;
            }
        }
        DeleteFiles(evictedFiles);
        RaiseEvicted(evictedKeys, StorageRemovalReason.Evicted);
        if (fileBytes < 0)
        {
            return;
        }
        memoryObject.AddRef();
        Interlocked.Increment(ref _pendingWrites);
        if (!TryQueue(new WriteJob(key, memoryObject, fileBytes)))
        {
            AbandonWrite(key, memoryObject, fileBytes);
            Statistics.RecordPutDropped();
        }
    }

    /// <inheritdoc />
    public ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, CancellationToken cancellationToken = default) => ValueTask.FromResult(Read(key));

    /// <inheritdoc />
    public ValueTask<int> GetPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, CancellationToken cancellationToken = default)
    {
        var keySpan = keys.Span;
        for (var i = 0; i < keySpan.Length; i++)
        {
            var chunk = Read(keySpan[i]);
            if (chunk is null)
            {
                return ValueTask.FromResult(i);
            }
            destination.Span[i] = chunk;
        }
        return ValueTask.FromResult(keySpan.Length);
    }

    /// <inheritdoc />
    public ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken = default) => ValueTask.FromResult(Remove(key));

    /// <summary>
    /// Removes <paramref name="key"/> from the index and deletes its file, synchronously (an index update and one
    /// unlink: nothing to wait for), so a caller holding a lock — the lm:// server's spill — need not block on a task.
    /// </summary>
    /// <returns>True when the key was present.</returns>
    public bool Remove(CacheEngineKey key)
    {
        DiskEntry? entry;
        lock (_lock)
        {
            if (!_index.ContainsKey(key))
            {
                return false;
            }
            entry = RemoveEntryLocked(key);
        }
        TryDelete(entry.Path);
        Events.Evicted(key, StorageRemovalReason.Removed);
        return true;
    }

    /// <inheritdoc />
    public bool Pin(CacheEngineKey key)
    {
        lock (_lock)
        {
            if (_index.TryGetValue(key, out var entry))
            {
                entry.PinCount++;
                return true;
            }
            return false;
        }
    }

    /// <inheritdoc />
    public bool Unpin(CacheEngineKey key)
    {
        lock (_lock)
        {
            if (_index.TryGetValue(key, out var entry) && entry.PinCount > 0)
            {
                entry.PinCount--;
                return true;
            }
            return false;
        }
    }

    /// <inheritdoc />
    public bool IsPinned(CacheEngineKey key)
    {
        lock (_lock)
        {
            return _index.TryGetValue(key, out var entry) && entry.PinCount > 0;
        }
    }

    /// <inheritdoc />
    public ValueTask<int> ClearAsync(CancellationToken cancellationToken = default)
    {
        List<string> paths = [];
        List<CacheEngineKey> keys = [];
        lock (_lock)
        {
            foreach (var (key, entry) in _index.ToList())
            {
                if (entry.PinCount == 0)
                {
                    paths.Add(RemoveEntryLocked(key).Path);
                    keys.Add(key);
                }
            }
        }
        DeleteFiles(paths);
        RaiseEvicted(keys, StorageRemovalReason.Cleared);
        return ValueTask.FromResult(paths.Count);
    }

    /// <inheritdoc />
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        while (Volatile.Read(ref _pendingWrites) > 0)
        {
            await Task.Delay(1, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Finishes queued writes, then stops the writers. Files stay on disk for the next run.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_writes.IsAddingCompleted)
        {
            _writes.CompleteAdding();
        }
        await Task.Run(() =>
        {
            foreach (var writer in _writers)
            {
                writer.Join();
            }
        }).ConfigureAwait(false);
        _writes.Dispose();
    }

    private bool TryQueue(WriteJob job)
    {
        try
        {
            return _writes.TryAdd(job);
        }
        catch (InvalidOperationException)
        {
            return false;   // disposed: adding is complete
        }
    }

    private MemoryObject? Read(CacheEngineKey key)
    {
        DiskEntry? entry;
        lock (_lock)
        {
            if (_index.TryGetValue(key, out entry))
            {
                _policy.OnAccessed(key);
                entry.LastAccess = Stopwatch.GetTimestamp();
            }
        }
        if (entry is null)
        {
            Statistics.RecordMiss();
            return null;
        }
        if (!_allocator.TryAllocate(entry.Metadata, out var chunk))
        {
            Statistics.RecordMiss();
            return null;
        }
        string? problem;
        try
        {
            problem = ReadInto(entry, key, chunk);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            StorageLog.DiskReadFailed(_logger, ex, entry.Path);
            problem = ex is FileNotFoundException or DirectoryNotFoundException ? "file vanished" : null;
            if (problem is null)
            {
                chunk.Release();
                Statistics.RecordError();
                Statistics.RecordMiss();
                return null;
            }
        }
        if (problem is not null)
        {
            chunk.Release();
            Invalidate(key, entry, problem);
            Statistics.RecordMiss();
            return null;
        }
        Statistics.RecordHit(chunk.Length);
        Events.Accessed(key);
        return chunk;
    }

    // The file's key is the requested key, or another spelling of its hash (a file written before keys dropped the
    // hash's leading zeros, indexed under the canonical key at start).
    private static bool SameKey(string storedKey, CacheEngineKey key) =>
        storedKey == key.ToString()
        || (CacheEngineKey.TryParse(storedKey, out var stored) && stored.ToCanonical() == key.ToCanonical());

    private static string? ReadInto(DiskEntry entry, CacheEngineKey key, MemoryObject chunk)
    {
        using var handle = File.OpenHandle(entry.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        var header = ArrayPool<byte>.Shared.Rent(DiskChunkFile.HeaderSize);
        try
        {
            if (RandomAccess.Read(handle, header.AsSpan(0, DiskChunkFile.HeaderSize), 0) != DiskChunkFile.HeaderSize)
            {
                return "header is truncated";
            }
            var reason = DiskChunkFile.TryReadHeader(header, out var storedKey, out var metadata, out var length, out var checksum);
            if (reason is not null)
            {
                return reason;
            }
            if (metadata != entry.Metadata || length != chunk.Length || !SameKey(storedKey, key))
            {
                return "header does not match the index";
            }
            var hasher = s_threadHasher ??= new XxHash3();
            hasher.Reset();
            var payload = chunk.Span;
            var offset = 0;
            while (offset < payload.Length)
            {
                var block = payload.Slice(offset, Math.Min(ReadBlockSize, payload.Length - offset));
                var read = RandomAccess.Read(handle, block, DiskChunkFile.HeaderSize + (long)offset);
                if (read == 0)
                {
                    return $"payload is truncated at {offset} of {payload.Length} bytes";
                }
                hasher.Append(block[..read]);
                offset += read;
            }
            return hasher.GetCurrentHashAsUInt64() == checksum ? null : "payload checksum mismatch";
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(header);
        }
    }

    private void RunWriter()
    {
        var header = new byte[DiskChunkFile.HeaderSize];
        foreach (var job in _writes.GetConsumingEnumerable())
        {
            Write(job, header);
        }
    }

    private void Write(WriteJob job, byte[] header)
    {
        var finalPath = Path.Combine(_folder, DiskChunkFile.FileNameOf(job.Key));
        var temporaryPath = finalPath + "." + Environment.CurrentManagedThreadId + DiskChunkFile.TemporaryExtension;
        var metadata = job.Chunk.Metadata;
        var length = job.Chunk.Length;
        var published = false;
        try
        {
            var payload = job.Chunk.Memory;
            var checksum = XxHash3.HashToUInt64(payload.Span);
            DiskChunkFile.WriteHeader(header, job.Key.ToString(), metadata, length, checksum);
            using (var handle = File.OpenHandle(temporaryPath, FileMode.Create, FileAccess.Write, FileShare.None, FileOptions.None, DiskChunkFile.HeaderSize + (long)length))
            {
                RandomAccess.Write(handle, header, 0);
                RandomAccess.Write(handle, payload.Span, DiskChunkFile.HeaderSize);
            }
            File.Move(temporaryPath, finalPath, overwrite: true);
            published = true;
            lock (_lock)
            {
                _writing.Remove(job.Key);
                _index[job.Key] = new DiskEntry(finalPath, metadata, job.FileBytes) { LastAccess = Stopwatch.GetTimestamp() };
                _policy.OnInserted(job.Key);
            }
            Statistics.AddEntry(job.FileBytes);
            Statistics.RecordPut(length);
            Events.Admitted(job.Key, job.FileBytes, metadata.Format);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            StorageLog.DiskWriteFailed(_logger, ex, temporaryPath, job.Key.ToString());
            Statistics.RecordError();
            Statistics.RecordPutDropped();
            TryDelete(temporaryPath);
        }
        finally
        {
            if (!published)
            {
                lock (_lock)
                {
                    _writing.Remove(job.Key);
                    _reservedBytes -= job.FileBytes;
                }
            }
            job.Chunk.Release();
            Interlocked.Decrement(ref _pendingWrites);
        }
    }

    private void AbandonWrite(CacheEngineKey key, MemoryObject memoryObject, long fileBytes)
    {
        lock (_lock)
        {
            _writing.Remove(key);
            _reservedBytes -= fileBytes;
        }
        memoryObject.Release();
        Interlocked.Decrement(ref _pendingWrites);
    }

    private void Invalidate(CacheEngineKey key, DiskEntry entry, string reason)
    {
        StorageLog.DiskEntryInvalid(_logger, entry.Path, reason);
        Statistics.RecordError();
        var removed = false;
        lock (_lock)
        {
            if (_index.TryGetValue(key, out var current) && ReferenceEquals(current, entry))
            {
                RemoveEntryLocked(key);
                removed = true;
            }
        }
        TryDelete(entry.Path);
        if (removed)
        {
            Events.Evicted(key, StorageRemovalReason.Invalid);
        }
    }

    private DiskEntry RemoveEntryLocked(CacheEngineKey key)
    {
        _index.Remove(key, out var entry);
        _policy.OnRemoved(key);
        _reservedBytes -= entry!.FileBytes;
        Statistics.RemoveEntry(entry.FileBytes);
        return entry;
    }

    private void Recover()
    {
        var removed = 0;
        var recovered = new List<(CacheEngineKey Key, DiskEntry Entry, DateTime Written)>();
        var header = new byte[DiskChunkFile.HeaderSize];
        foreach (var path in Directory.EnumerateFiles(_folder))
        {
            if (path.EndsWith(DiskChunkFile.TemporaryExtension, StringComparison.Ordinal))
            {
                removed += TryDelete(path) ? 1 : 0;
                continue;
            }
            if (!path.EndsWith(DiskChunkFile.Extension, StringComparison.Ordinal))
            {
                continue;
            }
            string? problem;
            CacheEngineKey key = default;
            MemoryObjectMetadata metadata = default;
            long fileBytes = 0;
            try
            {
                using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                fileBytes = RandomAccess.GetLength(handle);
                long length = 0;
                var keyText = "";
                problem = RandomAccess.Read(handle, header, 0) != DiskChunkFile.HeaderSize
                    ? "header is truncated"
                    : DiskChunkFile.TryReadHeader(header, out keyText, out metadata, out length, out _);
                if (problem is null && fileBytes != DiskChunkFile.HeaderSize + length)
                {
                    problem = $"file is {fileBytes} bytes, expected {DiskChunkFile.HeaderSize + length}";
                }
                if (problem is null && !CacheEngineKey.TryParse(keyText, out key, out var keyError))
                {
                    problem = $"bad key ({keyError})";
                }
                if (problem is null && Path.GetFileName(path) != DiskChunkFile.FileNameOf(key))
                {
                    problem = "file name does not match its key";
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                problem = ex.Message;
            }
            if (problem is not null)
            {
                StorageLog.DiskEntryInvalid(_logger, path, problem);
                removed += TryDelete(path) ? 1 : 0;
                continue;
            }
            // Indexed under the canonical spelling of its hash: files written before keys carried the original's
            // spelling (64 digits, leading zeros kept) are found by the keys written now, which drop the zeros.
            recovered.Add((key.ToCanonical(), new DiskEntry(path, metadata, fileBytes), File.GetLastWriteTimeUtc(path)));
        }
        long bytes = 0;
        var kept = new List<(CacheEngineKey Key, DiskEntry Entry)>(recovered.Count);
        var seen = new HashSet<CacheEngineKey>();
        foreach (var (key, entry, _) in recovered.OrderByDescending(r => r.Written))
        {
            if (!seen.Add(key))
            {
                // Two spellings of one key on disk (written before and after the spelling changed): keep the newer.
                removed += TryDelete(entry.Path) ? 1 : 0;
                continue;
            }
            if (_reservedBytes + entry.FileBytes > CapacityBytes)
            {
                // The capacity shrank since the last run: keep the most recent entries that fit.
                removed += TryDelete(entry.Path) ? 1 : 0;
                continue;
            }
            kept.Add((key, entry));
            _reservedBytes += entry.FileBytes;
            bytes += entry.FileBytes;
        }
        // The policy learns the entries oldest first, so recency survives the restart.
        for (var i = kept.Count - 1; i >= 0; i--)
        {
            var (key, entry) = kept[i];
            entry.LastAccess = Stopwatch.GetTimestamp();
            _index[key] = entry;
            _policy.OnInserted(key);
            Statistics.AddEntry(entry.FileBytes);
        }
        if (recovered.Count > 0 || removed > 0)
        {
            StorageLog.DiskRecovered(_logger, _folder, _index.Count, bytes, removed);
        }
    }

    private static void EnsureWritable(string folder)
    {
        try
        {
            Directory.CreateDirectory(folder);
            var probe = Path.Combine(folder, $".probe-{Environment.ProcessId}-{Guid.NewGuid():N}{DiskChunkFile.TemporaryExtension}");
            File.WriteAllBytes(probe, [1]);
            File.Delete(probe);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw new LMCacheConfigurationException($"local_disk = '{folder}': the folder cannot be created or written ({ex.Message}).");
        }
    }

    private void RaiseEvicted(List<CacheEngineKey>? keys, StorageRemovalReason reason)
    {
        if (keys is null)
        {
            return;
        }
        foreach (var key in keys)
        {
            Events.Evicted(key, reason);
        }
    }

    private static void DeleteFiles(List<string>? paths)
    {
        if (paths is null)
        {
            return;
        }
        foreach (var path in paths)
        {
            TryDelete(path);
        }
    }

    private static bool TryDelete(string path)
    {
        try
        {
            File.Delete(path);
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private sealed class DiskEntry(string path, MemoryObjectMetadata metadata, long fileBytes)
    {
        public string Path { get; } = path;
        public MemoryObjectMetadata Metadata { get; } = metadata;
        public long FileBytes { get; } = fileBytes;
        public int PinCount { get; set; }

        /// <summary>When the entry was last read or written (a <see cref="Stopwatch"/> timestamp).</summary>
        public long LastAccess { get; set; }
    }

    private readonly record struct WriteJob(CacheEngineKey Key, MemoryObject Chunk, long FileBytes);
}
