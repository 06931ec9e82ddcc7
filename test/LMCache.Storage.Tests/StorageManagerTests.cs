using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Core.Serde;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.LocalDisk;
using LMCache.Storage.Remote;
using LMCache.Testing;

namespace LMCache.Storage.Tests;

public sealed class StorageManagerTests : IDisposable
{
    private readonly TempFolder _folder = new("lmcache-manager");
    private readonly FaultInjectingConnector _connector = new();

    public void Dispose() => _folder.Dispose();

    private async Task<(StorageManager Manager, LocalCpuBackend Cpu, LocalDiskBackend Disk, RemoteBackend Remote)> CreateAsync(
        string? storeLocation = null, IReadOnlyList<string>? retrieveLocations = null, bool localCpu = true)
    {
        var cpu = new LocalCpuBackend(64 * 16 * 512, localCpu);
        var disk = new LocalDiskBackend(_folder.Path, 1 << 20, cpu);
        var remote = new RemoteBackend(_connector, new NaiveSerde(), cpu, new RemoteBackendOptions());
        await Task.CompletedTask;
        return (new StorageManager(cpu, [disk, remote], storeLocation, retrieveLocations), cpu, disk, remote);
    }

    private static CacheEngineKey[] Keys(int count) => [.. Enumerable.Range(0, count).Select(i => TestChunks.Key(i))];

    [Fact]
    public async Task A_prefix_continues_from_tier_to_tier_and_lower_hits_are_promoted_into_cpu_only()
    {
        var (manager, cpu, disk, remote) = await CreateAsync();
        var keys = Keys(7);
        // The remote holds 0..5, the disk 0..3, the CPU 0..1.
        for (var i = 0; i < 6; i++)
        {
            var chunk = TestChunks.Create(cpu, i);
            remote.SubmitPut(keys[i], chunk);
            if (i < 4)
            {
                disk.SubmitPut(keys[i], chunk);
            }
            if (i < 2)
            {
                cpu.SubmitPut(keys[i], chunk);
            }
            chunk.Release();
        }
        await manager.FlushAsync();

        Assert.Equal(6, await manager.ContainsPrefixAsync(keys));
        var destination = new MemoryObject?[7];
        var (count, hits) = await manager.GetPrefixAsync(keys, destination);
        Assert.Equal(6, count);
        Assert.Equal(new TierHits(2, 2, 2), hits);
        for (var i = 0; i < 6; i++)
        {
            Assert.True(TestChunks.Matches(destination[i]!, i), $"chunk {i}");
            destination[i]!.Release();
        }
        Assert.Null(destination[6]);
        // Promotion: the CPU now holds all six; the disk is never a promotion target.
        Assert.Equal(6, await cpu.ContainsPrefixAsync(keys));
        Assert.False(disk.Contains(keys[4]));
        var again = new MemoryObject?[7];
        Assert.Equal((6, new TierHits(6, 0, 0)), await manager.GetPrefixAsync(keys, again));
        foreach (var chunk in again.Take(6))
        {
            chunk!.Release();
        }
        await manager.DisposeAsync();
        Assert.Equal(0, cpu.OutstandingObjects);
    }

    [Fact]
    public async Task Puts_go_to_every_tier_or_only_to_the_store_location()
    {
        var (manager, cpu, disk, _) = await CreateAsync();
        var keys = Keys(2);
        var chunk = TestChunks.Create(cpu, 0);
        manager.Put(keys.AsSpan(0, 1), [chunk]);
        chunk.Release();
        await manager.FlushAsync();
        Assert.True(cpu.Contains(keys[0]));
        Assert.True(disk.Contains(keys[0]));
        Assert.Contains(keys[0], _connector.Keys);
        Assert.Throws<ArgumentException>(() => manager.Put(keys, []));
        await manager.DisposeAsync();

        var (diskOnly, cpu2, disk2, _) = await CreateAsync(storeLocation: LocalDiskBackend.BackendName);
        var other = TestChunks.Create(cpu2, 1);
        diskOnly.Put(keys.AsSpan(1, 1), [other]);
        other.Release();
        await diskOnly.FlushAsync();
        Assert.False(cpu2.Contains(keys[1]));
        Assert.True(disk2.Contains(keys[1]));
        Assert.DoesNotContain(keys[1], _connector.Keys);
        await diskOnly.DisposeAsync();
        Assert.Equal(0, cpu2.OutstandingObjects);
    }

    [Fact]
    public async Task Chunks_that_differ_from_the_expected_metadata_end_the_prefix_and_are_neither_returned_nor_promoted()
    {
        var (manager, cpu, disk, _) = await CreateAsync();
        var keys = Keys(3);
        var expected = TestChunks.SmallChunk();
        var other = new MemoryObjectMetadata(KvShape.Kv2Ltd(4, 8, 64), KvDType.BFloat16, MemoryFormat.KV2LTD);   // same length
        Assert.Equal(expected.ByteLength, other.ByteLength);
        // CPU: 0 right, 1 wrong. Disk: 0 and 1 right, 2 wrong.
        foreach (var (backend, index, metadata) in new (IStorageBackend, int, MemoryObjectMetadata)[]
                 { (cpu, 0, expected), (cpu, 1, other), (disk, 0, expected), (disk, 1, expected), (disk, 2, other) })
        {
            var chunk = TestChunks.Create(cpu, index, metadata);
            backend.SubmitPut(keys[index], chunk);
            chunk.Release();
        }
        await manager.FlushAsync();
        var expectations = new[] { expected, expected, expected };

        var destination = new MemoryObject?[3];
        Assert.Equal((1, new TierHits(1, 0, 0, Rejected: 1)), await manager.GetPrefixAsync(keys, destination, expectations));
        Assert.True(TestChunks.Matches(destination[0]!, 0));
        Assert.Null(destination[1]);
        destination[0]!.Release();
        Assert.False(cpu.Contains(keys[1]));   // the wrong CPU entry is gone, so the disk's right one is read next time

        Assert.Equal((2, new TierHits(1, 1, 0, Rejected: 1)), await manager.GetPrefixAsync(keys, destination, expectations));
        Assert.True(TestChunks.Matches(destination[1]!, 1));
        Assert.Null(destination[2]);
        destination[0]!.Release();
        destination[1]!.Release();
        await manager.FlushAsync();
        Assert.True(cpu.Contains(keys[1]));    // the right chunk was promoted
        Assert.False(cpu.Contains(keys[2]));   // the wrong one was not,
        Assert.False(disk.Contains(keys[2]));  // and it left the disk, so a store can write the right one

        using (var again = TestChunks.Create(cpu, 2, other))
        {
            disk.SubmitPut(keys[2], again);
        }
        await manager.FlushAsync();
        Assert.Equal((3, new TierHits(2, 1, 0)), await manager.GetPrefixAsync(keys, destination));   // no expectations: taken as is
        foreach (var item in destination)
        {
            item!.Release();
        }
        await manager.DisposeAsync();
        Assert.Equal(0, cpu.OutstandingObjects);
    }

    [Fact]
    public async Task Compressed_chunks_are_decoded_for_the_caller_and_kept_in_their_tier_when_they_cannot_be()
    {
        var (manager, cpu, disk, _) = await CreateAsync();
        var keys = Keys(2);
        var raw = TestChunks.SmallChunk();
        var compressed = MemoryObjectMetadata.Opaque((int)raw.ByteLength);
        foreach (var (backend, index) in new (IStorageBackend, int)[] { (cpu, 0), (disk, 1) })
        {
            var chunk = TestChunks.Create(cpu, index, compressed);
            backend.SubmitPut(keys[index], chunk);
            chunk.Release();
        }
        await manager.FlushAsync();
        var expectations = new[] { raw, raw };
        var destination = new MemoryObject?[2];

        // No decoder: the compressed chunk ends the prefix but stays (it is not wrong, only undecodable here).
        Assert.Equal((0, new TierHits(0, 0, 0, Rejected: 1)), await manager.GetPrefixAsync(keys, destination, expectations));
        Assert.True(cpu.Contains(keys[0]));
        manager.CompressedChunkSerde = new UndecodableSerde();
        Assert.Equal((0, new TierHits(0, 0, 0, Rejected: 1)), await manager.GetPrefixAsync(keys, destination, expectations));
        Assert.True(cpu.Contains(keys[0]));

        // With a decoder the caller gets raw chunks; the CPU entry stays compressed, the disk hit is promoted decoded.
        manager.CompressedChunkSerde = new UnwrappingSerde(raw);
        Assert.Equal((2, new TierHits(1, 1, 0)), await manager.GetPrefixAsync(keys, destination, expectations));
        for (var i = 0; i < 2; i++)
        {
            Assert.Equal(raw, destination[i]!.Metadata);
            Assert.True(TestChunks.Matches(destination[i]!, i));
            destination[i]!.Release();
        }
        var formats = cpu.Snapshot().ToDictionary(e => e.Key, e => e.Metadata.Format);
        Assert.Equal(MemoryFormat.BinaryBuffer, formats[keys[0]]);
        Assert.Equal(MemoryFormat.KV2LTD, formats[keys[1]]);
        await manager.DisposeAsync();
        Assert.Equal(0, cpu.OutstandingObjects);
    }

    /// <summary>A stand-in codec whose "compressed" form is the raw bytes in an opaque buffer.</summary>
    private sealed class UnwrappingSerde(MemoryObjectMetadata raw) : IKvSerde
    {
        public string Name => "unwrap";

        public MemoryObject? Serialize(MemoryObject chunk, IMemoryAllocator allocator) => throw new NotSupportedException("decode only");

        public MemoryObject? Deserialize(MemoryObject stored, IMemoryAllocator allocator)
        {
            if (!allocator.TryAllocate(raw, out var output))
            {
                return null;
            }
            stored.Span.CopyTo(output.Span);
            return output;
        }
    }

    /// <summary>A codec that cannot decode anything (a blob of an unknown version, a missing table).</summary>
    private sealed class UndecodableSerde : IKvSerde
    {
        public string Name => "undecodable";

        public MemoryObject? Serialize(MemoryObject chunk, IMemoryAllocator allocator) => null;

        public MemoryObject? Deserialize(MemoryObject stored, IMemoryAllocator allocator) => null;
    }

    [Fact]
    public async Task Retrieve_locations_limit_which_tiers_are_read()
    {
        var (manager, cpu, disk, _) = await CreateAsync(retrieveLocations: [LocalDiskBackend.BackendName]);
        var keys = Keys(2);
        var chunk = TestChunks.Create(cpu, 0);
        cpu.SubmitPut(keys[0], chunk);   // only in CPU: invisible
        disk.SubmitPut(keys[1], chunk);
        chunk.Release();
        await manager.FlushAsync();
        Assert.Equal(0, await manager.ContainsPrefixAsync(keys));
        Assert.Equal(1, await manager.ContainsPrefixAsync(keys.AsMemory(1)));
        var destination = new MemoryObject?[1];
        Assert.Equal((1, new TierHits(0, 1, 0)), await manager.GetPrefixAsync(keys.AsMemory(1), destination));
        destination[0]!.Release();
        await manager.DisposeAsync();
        Assert.Equal(0, cpu.OutstandingObjects);
    }

    [Fact]
    public async Task With_local_cpu_off_nothing_is_promoted()
    {
        var (manager, cpu, disk, _) = await CreateAsync(localCpu: false);
        var keys = Keys(1);
        var chunk = TestChunks.Create(cpu, 0);
        manager.Put(keys, [chunk]);
        chunk.Release();
        await manager.FlushAsync();
        Assert.True(disk.Contains(keys[0]));
        var destination = new MemoryObject?[1];
        Assert.Equal((1, new TierHits(0, 1, 0)), await manager.GetPrefixAsync(keys, destination));
        destination[0]!.Release();
        Assert.Equal(0, cpu.Count);
        Assert.Equal(0, cpu.OutstandingObjects);
        await manager.DisposeAsync();
    }

    [Fact]
    public async Task Remove_pin_and_clear_act_on_the_local_tiers()
    {
        var (manager, cpu, disk, _) = await CreateAsync();
        var keys = Keys(3);
        for (var i = 0; i < 3; i++)
        {
            var chunk = TestChunks.Create(cpu, i);
            manager.Put(keys.AsSpan(i, 1), [chunk]);
            chunk.Release();
        }
        await manager.FlushAsync();
        Assert.Equal(2, manager.Pin(keys[0]));        // CPU and disk; the remote cannot pin
        Assert.Equal(2, await manager.RemoveAsync(keys[1]));
        Assert.Contains(keys[1], _connector.Keys);    // the shared remote is left alone by default
        Assert.Equal(3, await manager.RemoveAsync(keys[2], includeRemote: true));
        Assert.DoesNotContain(keys[2], _connector.Keys);
        Assert.Equal(0, await manager.ClearAsync());  // only the pinned key 0 is left locally
        Assert.Equal(2, manager.Unpin(keys[0]));
        Assert.Equal(1, await manager.ClearAsync([LocalCpuBackend.BackendName]));
        Assert.True(disk.Contains(keys[0]));
        Assert.Equal(1, await manager.ClearAsync());
        Assert.False(disk.Contains(keys[0]));
        Assert.Same(disk, manager.Find(LocalDiskBackend.BackendName));
        Assert.Null(manager.Find("GdsBackend"));
        await manager.DisposeAsync();
        Assert.Equal(0, cpu.OutstandingObjects);
        Assert.True(_connector.Disposed);
    }
}
