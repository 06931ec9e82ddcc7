using System.Diagnostics;
using LMCache.Core.Diagnostics;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.LocalDisk;
using LMCache.Testing;

namespace LMCache.Storage.Tests;

[IntegrationTest]
public sealed class LocalDiskBackendTests : IDisposable
{
    private const int ChunkBytes = 16 * 512;
    private const long FileBytes = DiskChunkFile.HeaderSize + ChunkBytes;
    private readonly TempFolder _folder = new("lmcache-disk");
    private readonly LocalCpuBackend _cpu = new(64 * ChunkBytes);

    public void Dispose()
    {
        _cpu.Dispose();
        Assert.Equal(0, _cpu.OutstandingObjects);   // every test ends without a leaked chunk
        _folder.Dispose();
    }

    [Fact]
    public async Task A_stored_chunk_is_written_flushed_and_read_back_byte_exact()
    {
        await using (var disk = Open())
        {
            await StoreAsync(disk, 1, 2, 3);
            Assert.Equal(3, disk.Count);
            Assert.Equal(3, disk.Statistics.Puts);
            Assert.Equal(3 * FileBytes, disk.Statistics.UsedBytes);
            Assert.Equal(3, Directory.GetFiles(_folder.Path, "*" + DiskChunkFile.Extension).Length);
            Assert.Empty(Directory.GetFiles(_folder.Path, "*" + DiskChunkFile.TemporaryExtension));
            Assert.True(File.Exists(PathOf(TestChunks.Key(2))));
            Assert.Equal(FileBytes, new FileInfo(PathOf(TestChunks.Key(2))).Length);

            await AssertReadsAsync(disk, 1, 2, 3);
            Assert.Null(await disk.GetAsync(TestChunks.Key(4)));
            Assert.Equal(3, disk.Statistics.Hits);
            Assert.Equal(1, disk.Statistics.Misses);
            Assert.Equal(0, disk.Statistics.Errors);
        }
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task A_read_allocates_a_new_cpu_object_with_the_stored_metadata()
    {
        await using var disk = Open();
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(3, 5, 7), KvDType.Float32, MemoryFormat.KV2LTD);
        var chunk = TestChunks.Create(_cpu, 9, metadata);
        disk.SubmitPut(TestChunks.Key(9), chunk);
        await disk.FlushAsync();
        var read = await disk.GetAsync(TestChunks.Key(9));
        Assert.NotNull(read);
        Assert.NotSame(chunk, read);
        Assert.Equal(metadata, read.Metadata);
        Assert.True(read.Span.SequenceEqual(chunk.Span));
        read.Release();
        chunk.Release();
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task After_a_restart_the_index_is_rebuilt_and_reads_return_the_same_bytes()
    {
        await using (var disk = Open())
        {
            await StoreAsync(disk, 1, 2, 3, 4);
            Assert.True(disk.Pin(TestChunks.Key(1)));
        }
        await using (var reopened = Open())
        {
            Assert.Equal(4, reopened.Count);
            Assert.Equal(4, reopened.Statistics.Entries);
            Assert.Equal(4 * FileBytes, reopened.Statistics.UsedBytes);
            Assert.Equal(4, await reopened.ContainsPrefixAsync(Keys(1, 2, 3, 4)));
            await AssertReadsAsync(reopened, 1, 2, 3, 4);
            Assert.DoesNotContain(reopened.Snapshot(), e => e.Pinned);   // pins are not persistent
        }
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task Files_written_under_the_old_64_digit_hash_spelling_are_found_by_todays_keys_after_a_restart()
    {
        // Keys used to carry the hash as 64 digits; now its leading zeros are dropped, as the original writes them.
        var canonical = TestChunks.Key(3);
        var padded = canonical with { ChunkHash = canonical.ChunkHash.PadLeft(64, '0') };
        Assert.NotEqual(canonical.ChunkHash, padded.ChunkHash);
        var other = TestChunks.Key(5);
        var otherPadded = other with { ChunkHash = other.ChunkHash.PadLeft(64, '0') };
        await using (var disk = Open())
        {
            Put(disk, padded, 3);
            Put(disk, otherPadded, 50);   // an old copy of key 5 ...
            await disk.FlushAsync();
            File.SetLastWriteTimeUtc(PathOf(otherPadded), DateTime.UtcNow.AddMinutes(-5));
            Put(disk, other, 5);          // ... and a newer one under today's spelling
            await disk.FlushAsync();
        }
        await using (var reopened = Open())
        {
            Assert.Equal(2, reopened.Count);
            Assert.Equal(2, await reopened.ContainsPrefixAsync(Keys(3, 5)));
            await AssertReadsAsync(reopened, 3, 5);   // key 5 reads the newer copy
            Assert.False(File.Exists(PathOf(otherPadded)));   // the older spelling's file was removed
            Assert.Equal(2 * FileBytes, reopened.Statistics.UsedBytes);
        }
        Assert.Equal(0, _cpu.OutstandingObjects);

        void Put(LocalDiskBackend disk, CacheEngineKey key, int seed)
        {
            var chunk = TestChunks.Create(_cpu, seed);
            disk.SubmitPut(key, chunk);
            chunk.Release();
        }
    }

    [Fact]
    public async Task Recovery_removes_truncated_corrupt_misnamed_and_temporary_files()
    {
        await using (var disk = Open())
        {
            await StoreAsync(disk, 1, 2, 3, 4, 5, 6);
        }
        // 1: truncated payload. 2: truncated inside the header. 3: a flipped header byte.
        // 4: renamed over key 5's name (5's own file is replaced). 6: intact.
        Truncate(PathOf(TestChunks.Key(1)), FileBytes - 1);
        Truncate(PathOf(TestChunks.Key(2)), 100);
        FlipByte(PathOf(TestChunks.Key(3)), 20);
        File.Move(PathOf(TestChunks.Key(4)), PathOf(TestChunks.Key(5)), overwrite: true);
        var leftover = Path.Combine(_folder.Path, DiskChunkFile.FileNameOf(TestChunks.Key(7)) + ".12" + DiskChunkFile.TemporaryExtension);
        File.WriteAllBytes(leftover, new byte[FileBytes]);
        var foreign = Path.Combine(_folder.Path, "README.txt");
        File.WriteAllText(foreign, "not ours");

        await using (var reopened = Open())
        {
            Assert.Equal(1, reopened.Count);
            Assert.True(reopened.Contains(TestChunks.Key(6)));
            foreach (var i in new[] { 1, 2, 3, 4, 5 })
            {
                Assert.False(reopened.Contains(TestChunks.Key(i)));
                Assert.False(File.Exists(PathOf(TestChunks.Key(i))), $"file of key {i} should be removed");
            }
            Assert.False(File.Exists(leftover));
            Assert.True(File.Exists(foreign));
            await AssertReadsAsync(reopened, 6);
            Assert.Equal(FileBytes, reopened.Statistics.UsedBytes);
        }
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task A_flipped_payload_byte_survives_recovery_but_the_read_is_a_miss_and_removes_the_file()
    {
        await using (var disk = Open())
        {
            await StoreAsync(disk, 1, 2);
        }
        FlipByte(PathOf(TestChunks.Key(2)), DiskChunkFile.HeaderSize + 1234);
        await using var reopened = Open();
        Assert.Equal(2, await reopened.ContainsPrefixAsync(Keys(1, 2)));
        var destination = new MemoryObject?[2];
        Assert.Equal(1, await reopened.GetPrefixAsync(Keys(1, 2), destination));
        Assert.True(TestChunks.Matches(destination[0]!, 1));
        Assert.Null(destination[1]);
        destination[0]!.Release();
        Assert.False(reopened.Contains(TestChunks.Key(2)));
        Assert.False(File.Exists(PathOf(TestChunks.Key(2))));
        Assert.Equal(1, reopened.Statistics.Errors);
        Assert.Equal(FileBytes, reopened.Statistics.UsedBytes);
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    public static TheoryData<string> Corruptions => ["truncated payload", "truncated header", "flipped payload byte", "flipped header byte", "flipped key byte", "another key's file", "vanished"];

    [Theory]
    [MemberData(nameof(Corruptions))]
    public async Task A_file_damaged_while_running_is_a_miss_at_read_and_is_removed(string corruption)
    {
        await using var disk = Open();
        await StoreAsync(disk, 1, 2);
        var path = PathOf(TestChunks.Key(1));
        switch (corruption)
        {
            case "truncated payload": Truncate(path, FileBytes - 100); break;
            case "truncated header": Truncate(path, 10); break;
            case "flipped payload byte": FlipByte(path, FileBytes - 1); break;
            case "flipped header byte": FlipByte(path, 4); break;
            case "flipped key byte": FlipByte(path, 60); break;
            case "another key's file": File.Copy(PathOf(TestChunks.Key(2)), path, overwrite: true); break;
            case "vanished": File.Delete(path); break;
        }

        Assert.Null(await disk.GetAsync(TestChunks.Key(1)));

        Assert.False(disk.Contains(TestChunks.Key(1)));
        Assert.False(File.Exists(path));
        Assert.Equal(1, disk.Count);
        Assert.Equal(FileBytes, disk.Statistics.UsedBytes);
        Assert.Equal(0, _cpu.OutstandingObjects);
        await AssertReadsAsync(disk, 2);
        // The key can be stored again.
        await StoreAsync(disk, 1);
        await AssertReadsAsync(disk, 1);
    }

    [Fact]
    public async Task Capacity_is_kept_by_evicting_in_policy_order_and_skipping_pinned_entries()
    {
        await using var disk = Open(capacity: 3 * FileBytes);
        await StoreAsync(disk, 0, 1, 2);
        Assert.True(disk.Pin(TestChunks.Key(0)));
        using (var read = await disk.GetAsync(TestChunks.Key(1)))
        {
            Assert.NotNull(read);   // k1 is now more recently used than k2
        }

        await StoreAsync(disk, 3);   // evicts k2: k0 is pinned, k1 was read
        Assert.True(disk.Contains(TestChunks.Key(0)));
        Assert.True(disk.Contains(TestChunks.Key(1)));
        Assert.False(disk.Contains(TestChunks.Key(2)));
        Assert.False(File.Exists(PathOf(TestChunks.Key(2))));
        Assert.Equal(1, disk.Statistics.Evictions);
        Assert.Equal(3, Directory.GetFiles(_folder.Path, "*" + DiskChunkFile.Extension).Length);

        // Everything pinned: the put is dropped and counted, nothing is evicted.
        Assert.True(disk.Pin(TestChunks.Key(1)));
        Assert.True(disk.Pin(TestChunks.Key(3)));
        await StoreAsync(disk, 4);
        Assert.False(disk.Contains(TestChunks.Key(4)));
        Assert.Equal(1, disk.Statistics.PutsDropped);
        Assert.Equal(1, disk.Statistics.Evictions);
        Assert.True(disk.Statistics.UsedBytes <= disk.CapacityBytes);

        // Clear keeps pinned entries; unpin then clear removes them.
        Assert.Equal(0, await disk.ClearAsync());
        Assert.True(disk.IsPinned(TestChunks.Key(0)));
        Assert.True(disk.Unpin(TestChunks.Key(0)));
        Assert.False(disk.IsPinned(TestChunks.Key(0)));   // pins are counted: one pin, one unpin
        Assert.False(disk.Unpin(TestChunks.Key(0)));
        Assert.Equal(1, await disk.ClearAsync());
        Assert.False(File.Exists(PathOf(TestChunks.Key(0))));
        Assert.True(await disk.RemoveAsync(TestChunks.Key(1)));
        Assert.False(await disk.RemoveAsync(TestChunks.Key(1)));
        Assert.False(File.Exists(PathOf(TestChunks.Key(1))));
        Assert.Equal(1, disk.Count);
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task A_chunk_larger_than_the_whole_tier_is_dropped()
    {
        await using var disk = Open(capacity: FileBytes - 1);
        await StoreAsync(disk, 1);
        Assert.Equal(0, disk.Count);
        Assert.Equal(1, disk.Statistics.PutsDropped);
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task Recovery_into_a_smaller_capacity_keeps_the_newest_entries_that_fit()
    {
        await using (var disk = Open())
        {
            foreach (var i in new[] { 1, 2, 3, 4 })
            {
                await StoreAsync(disk, i);
                File.SetLastWriteTimeUtc(PathOf(TestChunks.Key(i)), new DateTime(2026, 1, 1, 0, i, 0, DateTimeKind.Utc));
            }
        }
        await using var smaller = Open(capacity: 2 * FileBytes);
        Assert.Equal(2, smaller.Count);
        Assert.True(smaller.Contains(TestChunks.Key(3)), "the second-newest entry should be kept");
        Assert.True(smaller.Contains(TestChunks.Key(4)), "the newest entry should be kept");
        Assert.False(smaller.Contains(TestChunks.Key(1)));
        Assert.False(smaller.Contains(TestChunks.Key(2)));
        Assert.False(File.Exists(PathOf(TestChunks.Key(1))));
        await AssertReadsAsync(smaller, 3, 4);
        Assert.True(smaller.Statistics.UsedBytes <= smaller.CapacityBytes);
        Assert.Equal(2, Directory.GetFiles(_folder.Path, "*" + DiskChunkFile.Extension).Length);
    }

    [Fact]
    public async Task A_repeated_put_of_a_key_being_written_or_stored_writes_once()
    {
        await using var disk = Open();
        var chunk = TestChunks.Create(_cpu, 1);
        disk.SubmitPut(TestChunks.Key(1), chunk);
        disk.SubmitPut(TestChunks.Key(1), chunk);
        await disk.FlushAsync();
        disk.SubmitPut(TestChunks.Key(1), chunk);
        await disk.FlushAsync();
        chunk.Release();
        Assert.Equal(1, disk.Statistics.Puts);
        Assert.Equal(1, disk.Count);
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task A_read_when_the_cpu_pool_cannot_hold_the_chunk_is_a_miss()
    {
        using var tinyCpu = new LocalCpuBackend(ChunkBytes);
        await using var disk = new LocalDiskBackend(_folder.Path, 1 << 20, tinyCpu);
        var chunk = TestChunks.Create(tinyCpu, 1);
        disk.SubmitPut(TestChunks.Key(1), chunk);
        await disk.FlushAsync();
        // The caller still holds the only block of the pool.
        Assert.Null(await disk.GetAsync(TestChunks.Key(1)));
        Assert.True(disk.Contains(TestChunks.Key(1)));   // not the file's fault: it stays
        chunk.Release();
        using var read = await disk.GetAsync(TestChunks.Key(1));
        Assert.NotNull(read);
        Assert.True(TestChunks.Matches(read, 1));
    }

    [Fact]
    public void A_folder_that_cannot_be_created_is_a_configuration_error()
    {
        // Tests run as root, so permissions do not block writes; a path below a regular file cannot exist for anyone.
        var file = _folder.Combine("a-file");
        File.WriteAllText(file, "x");
        var folder = Path.Combine(file, "sub");
        var error = Assert.Throws<LMCacheConfigurationException>(() => new LocalDiskBackend(folder, 1 << 20, _cpu));
        Assert.Contains("local_disk", error.Message, StringComparison.Ordinal);
        Assert.Contains(folder, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_full_disk_drops_and_counts_puts_keeps_reads_correct_and_throws_nothing()
    {
        using var mountPoint = new TempFolder("lmcache-tmpfs");
        if (!TryRun("mount", $"-t tmpfs -o size=1m tmpfs {mountPoint.Path}", out var why))
        {
            Assert.Skip($"cannot mount a 1 MiB tmpfs to fill a disk ({why}); this test needs root and mount permission");
        }
        try
        {
            await using (var disk = new LocalDiskBackend(mountPoint.Path, 64L << 20, _cpu, writerCount: 2))
            {
                var keys = Enumerable.Range(0, 200).ToArray();
                foreach (var i in keys)
                {
                    var chunk = TestChunks.Create(_cpu, i);
                    disk.SubmitPut(TestChunks.Key(i), chunk);   // must not throw, even with the disk full
                    chunk.Release();
                    if (i % 32 == 31)
                    {
                        await disk.FlushAsync();
                    }
                }
                await disk.FlushAsync();

                var stored = keys.Where(i => disk.Contains(TestChunks.Key(i))).ToList();
                Assert.NotEmpty(stored);
                Assert.True(stored.Count < keys.Length, "a 1 MiB disk cannot hold 200 files of 12 KiB");
                Assert.Equal(keys.Length, disk.Statistics.Puts + disk.Statistics.PutsDropped);
                Assert.True(disk.Statistics.Errors > 0);
                Assert.Empty(Directory.GetFiles(mountPoint.Path, "*" + DiskChunkFile.TemporaryExtension));
                Assert.Equal(stored.Count, Directory.GetFiles(mountPoint.Path, "*" + DiskChunkFile.Extension).Length);
                foreach (var i in keys)
                {
                    var read = await disk.GetAsync(TestChunks.Key(i));
                    Assert.Equal(stored.Contains(i), read is not null);
                    if (read is not null)
                    {
                        Assert.True(TestChunks.Matches(read, i));
                        read.Release();
                    }
                }
                Assert.Equal(0, _cpu.OutstandingObjects);
            }
        }
        finally
        {
            TryRun("umount", mountPoint.Path, out _);
        }
    }

    [Fact]
    public async Task Dispose_finishes_queued_writes()
    {
        await using (var disk = Open())
        {
            foreach (var i in Enumerable.Range(0, 20))
            {
                var chunk = TestChunks.Create(_cpu, i);
                disk.SubmitPut(TestChunks.Key(i), chunk);
                chunk.Release();
            }
        }
        Assert.Equal(0, _cpu.OutstandingObjects);
        await using var reopened = Open();
        Assert.Equal(20, reopened.Count);
        await AssertReadsAsync(reopened, [.. Enumerable.Range(0, 20)]);
    }

    // ---------------------------------------------------------------- helpers

    private LocalDiskBackend Open(long capacity = 1 << 20) => new(_folder.Path, capacity, _cpu);

    private string PathOf(CacheEngineKey key) => Path.Combine(_folder.Path, DiskChunkFile.FileNameOf(key));

    private static CacheEngineKey[] Keys(params int[] indexes) => [.. indexes.Select(i => TestChunks.Key(i))];

    private async Task StoreAsync(LocalDiskBackend disk, params int[] indexes)
    {
        foreach (var i in indexes)
        {
            var chunk = TestChunks.Create(_cpu, i);
            disk.SubmitPut(TestChunks.Key(i), chunk);
            chunk.Release();
        }
        await disk.FlushAsync();
    }

    private static async Task AssertReadsAsync(LocalDiskBackend disk, params int[] indexes)
    {
        foreach (var i in indexes)
        {
            var read = await disk.GetAsync(TestChunks.Key(i));
            Assert.NotNull(read);
            Assert.Equal(TestChunks.SmallChunk(), read.Metadata);
            Assert.True(TestChunks.Matches(read, i), $"chunk {i} came back with wrong bytes");
            read.Release();
        }
    }

    private static void Truncate(string path, long length)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Write);
        stream.SetLength(length);
    }

    private static void FlipByte(string path, long offset)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        stream.Position = offset;
        var value = stream.ReadByte();
        stream.Position = offset;
        stream.WriteByte((byte)(value ^ 0x40));
    }

    private static bool TryRun(string program, string arguments, out string error)
    {
        try
        {
            using var process = Process.Start(new ProcessStartInfo(program, arguments) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            error = process.StandardError.ReadToEnd();
            process.WaitForExit();
            return process.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            error = ex.Message;
            return false;
        }
    }
}
