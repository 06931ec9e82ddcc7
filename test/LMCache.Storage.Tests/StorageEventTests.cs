using System.Collections.Concurrent;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.LocalDisk;
using LMCache.Testing;

namespace LMCache.Storage.Tests;

public sealed class StorageEventTests
{
    private const int ChunkBytes = 16 * 512;

    [Fact]
    public async Task The_cpu_tier_reports_admissions_accesses_and_each_kind_of_removal()
    {
        using var cpu = new LocalCpuBackend(2 * ChunkBytes);
        var sink = new RecordingSink();
        cpu.Events.Add(sink);
        for (var i = 0; i < 3; i++)   // the third put evicts the least recently used first chunk
        {
            using var chunk = TestChunks.Create(cpu, i);
            cpu.SubmitPut(TestChunks.Key(i), chunk);
        }
        cpu.AcquireReference(TestChunks.Key(2))!.Release();
        Assert.True(await cpu.RemoveAsync(TestChunks.Key(1)));
        Assert.Equal(1, await cpu.ClearAsync());

        Assert.Equal(
        [
            $"admit {LocalCpuBackend.BackendName} {TestChunks.Key(0)} {ChunkBytes} KV2LTD",
            $"admit {LocalCpuBackend.BackendName} {TestChunks.Key(1)} {ChunkBytes} KV2LTD",
            $"evict {LocalCpuBackend.BackendName} {TestChunks.Key(0)} Evicted",
            $"admit {LocalCpuBackend.BackendName} {TestChunks.Key(2)} {ChunkBytes} KV2LTD",
            $"access {LocalCpuBackend.BackendName} {TestChunks.Key(2)}",
            $"evict {LocalCpuBackend.BackendName} {TestChunks.Key(1)} Removed",
            $"evict {LocalCpuBackend.BackendName} {TestChunks.Key(2)} Cleared",
        ], sink.Events);
        Assert.True(cpu.Events.Remove(sink));
        using (var chunk = TestChunks.Create(cpu, 9))
        {
            cpu.SubmitPut(TestChunks.Key(9), chunk);
        }
        Assert.Equal(7, sink.Events.Count);   // unregistered: nothing more
    }

    [Fact]
    public async Task Snapshots_carry_metadata_and_the_last_access_time()
    {
        using var cpu = new LocalCpuBackend(4 * ChunkBytes);
        using (var chunk = TestChunks.Create(cpu, 1))
        {
            cpu.SubmitPut(TestChunks.Key(1), chunk);
        }
        var stored = Assert.Single(cpu.Snapshot());
        Assert.Equal(TestChunks.SmallChunk(), stored.Metadata);
        Assert.InRange(stored.LastAccess, DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddSeconds(1));
        var before = stored.LastAccess;
        var beforeTicks = System.Diagnostics.Stopwatch.GetTimestamp();
        while (System.Diagnostics.Stopwatch.GetTimestamp() == beforeTicks)
        {
            Thread.SpinWait(10);   // let the clock move so the read is later than the put
        }
        (await cpu.GetAsync(TestChunks.Key(1)))!.Release();
        Assert.True(Assert.Single(cpu.Snapshot()).LastAccess >= before);
    }

    [Fact]
    public async Task The_disk_tier_reports_completed_writes_reads_evictions_and_invalid_files()
    {
        using var folder = new TempFolder("lmcache-events");
        using var cpu = new LocalCpuBackend(16 * ChunkBytes);
        var sink = new RecordingSink();
        await using (var disk = new LocalDiskBackend(folder.Path, 2 * (DiskChunkFile.HeaderSize + ChunkBytes), cpu))
        {
            var manager = new StorageManager(cpu, [disk]);
            manager.AddEventSink(sink);
            for (var i = 0; i < 3; i++)
            {
                using var chunk = TestChunks.Create(cpu, i);
                disk.SubmitPut(TestChunks.Key(i), chunk);
                await disk.FlushAsync();
            }
            (await disk.GetAsync(TestChunks.Key(2)))!.Release();
            File.WriteAllBytes(Path.Combine(folder.Path, DiskChunkFile.FileNameOf(TestChunks.Key(1))), [1, 2, 3]);   // corrupt it
            Assert.Null(await disk.GetAsync(TestChunks.Key(1)));
            manager.RemoveEventSink(sink);
        }
        var disk0 = LocalDiskBackend.BackendName;
        var fileBytes = DiskChunkFile.HeaderSize + ChunkBytes;
        Assert.Equal(
        [
            $"admit {disk0} {TestChunks.Key(0)} {fileBytes} KV2LTD",
            $"admit {disk0} {TestChunks.Key(1)} {fileBytes} KV2LTD",
            $"evict {disk0} {TestChunks.Key(0)} Evicted",
            $"admit {disk0} {TestChunks.Key(2)} {fileBytes} KV2LTD",
            $"access {disk0} {TestChunks.Key(2)}",
            $"evict {disk0} {TestChunks.Key(1)} Invalid",
        ], sink.Events);
    }

    [Fact]
    public async Task A_throwing_sink_never_reaches_the_storage_operation()
    {
        using var cpu = new LocalCpuBackend(4 * ChunkBytes);
        var throwing = new ThrowingSink();
        var recording = new RecordingSink();
        cpu.Events.Add(throwing);
        cpu.Events.Add(recording);
        using (var chunk = TestChunks.Create(cpu, 1))
        {
            cpu.SubmitPut(TestChunks.Key(1), chunk);
        }
        var read = await cpu.GetAsync(TestChunks.Key(1));
        Assert.True(TestChunks.Matches(read!, 1));
        read!.Release();
        Assert.True(await cpu.RemoveAsync(TestChunks.Key(1)));
        Assert.Equal(3, cpu.Events.SinkFailures);
        Assert.Equal(3, recording.Events.Count);   // the sink after the throwing one still got every event
    }

    [Fact]
    public void Raising_events_on_the_read_path_allocates_nothing()
    {
        using var cpu = new LocalCpuBackend(4 * ChunkBytes);
        var counting = new CountingSink();
        cpu.Events.Add(counting);
        var key = TestChunks.Key(1);
        using (var chunk = TestChunks.Create(cpu, 1))
        {
            cpu.SubmitPut(key, chunk);
        }
        for (var i = 0; i < 100; i++)
        {
            cpu.AcquireReference(key)!.Release();   // warm up
        }
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1000; i++)
        {
            cpu.AcquireReference(key)!.Release();
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(1100, counting.Accesses);
    }

    private sealed class RecordingSink : IStorageEventSink
    {
        private readonly ConcurrentQueue<string> _events = new();

        public List<string> Events => [.. _events];

        public void OnAdmitted(string tier, in CacheEngineKey key, long bytes, MemoryFormat format) => _events.Enqueue($"admit {tier} {key} {bytes} {format}");

        public void OnEvicted(string tier, in CacheEngineKey key, StorageRemovalReason reason) => _events.Enqueue($"evict {tier} {key} {reason}");

        public void OnAccessed(string tier, in CacheEngineKey key) => _events.Enqueue($"access {tier} {key}");
    }

    private sealed class ThrowingSink : IStorageEventSink
    {
        public void OnAdmitted(string tier, in CacheEngineKey key, long bytes, MemoryFormat format) => throw new InvalidOperationException("sink failure (test)");

        public void OnEvicted(string tier, in CacheEngineKey key, StorageRemovalReason reason) => throw new InvalidOperationException("sink failure (test)");

        public void OnAccessed(string tier, in CacheEngineKey key) => throw new InvalidOperationException("sink failure (test)");
    }

    private sealed class CountingSink : IStorageEventSink
    {
        public int Accesses;

        public void OnAdmitted(string tier, in CacheEngineKey key, long bytes, MemoryFormat format)
        {
        }

        public void OnEvicted(string tier, in CacheEngineKey key, StorageRemovalReason reason)
        {
        }

        public void OnAccessed(string tier, in CacheEngineKey key) => Accesses++;
    }
}
