using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.Eviction;
using LMCache.Storage.LocalCpu;
using LMCache.Testing;

namespace LMCache.Storage.Tests;

public sealed class LocalCpuBackendTests
{
    private const int ChunkBytes = 16 * 512;        // TestChunks.SmallChunk(16): 8 KiB, two 4 KiB pages
    private const long FourChunks = 4 * ChunkBytes;

    [Fact]
    public async Task A_stored_chunk_is_read_back_zero_copy_with_its_own_reference()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        var key = TestChunks.Key(1);
        var chunk = TestChunks.Create(cpu, seed: 11);
        cpu.SubmitPut(key, chunk);
        Assert.Equal(2, chunk.RefCount);
        chunk.Release();

        var read = await cpu.GetAsync(key);
        Assert.Same(chunk, read);
        Assert.Equal(2, read!.RefCount);
        Assert.True(TestChunks.Matches(read, 11));
        read.Release();
        Assert.Equal(1, cpu.Statistics.Hits);
        Assert.Null(await cpu.GetAsync(TestChunks.Key(2)));
        Assert.Equal(1, cpu.Statistics.Misses);
        Assert.Equal(1, cpu.Statistics.Puts);
        Assert.Equal(ChunkBytes, cpu.Statistics.UsedBytes);
        AssertNoLeak(cpu);
    }

    [Fact]
    public void A_second_put_of_the_same_key_keeps_the_first_object_and_takes_no_reference()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        var key = TestChunks.Key(1);
        using (var first = TestChunks.Create(cpu, 1))
        using (var second = TestChunks.Create(cpu, 2))
        {
            cpu.SubmitPut(key, first);
            cpu.SubmitPut(key, second);
            Assert.Equal(1, second.RefCount);
        }
        var read = cpu.AcquireReference(key)!;
        Assert.True(TestChunks.Matches(read, 1));
        Assert.Equal(1, cpu.Count);
        Assert.Equal(1, cpu.Statistics.Entries);
        read.Release();
        AssertNoLeak(cpu);
    }

    [Theory]
    [InlineData("LRU", 1)]    // reads k1 k2 k3 k0: k1 is now least recently used
    [InlineData("FIFO", 0)]   // reads do not matter: the first inserted goes
    [InlineData("MRU", 0)]    // the most recently used (k0, read last) goes
    [InlineData("LFU", 3)]    // k3 was read once, the others twice
    public void Allocation_under_pressure_evicts_in_policy_order(string policy, int expectedVictim)
    {
        var cpu = new LocalCpuBackend(FourChunks, cachePolicy: policy);
        var keys = Enumerable.Range(0, 5).Select(i => TestChunks.Key(i)).ToArray();
        for (var i = 0; i < 4; i++)
        {
            Put(cpu, keys[i], seed: i);
        }
        foreach (var i in new[] { 1, 2, 3, 0 })
        {
            Read(cpu, keys[i]);
        }
        if (policy == "LFU")
        {
            Read(cpu, keys[1]);
            Read(cpu, keys[2]);
            Read(cpu, keys[0]);
        }

        Put(cpu, keys[4], seed: 4);   // the pool is full: one entry must go

        Assert.Equal(4, cpu.Count);
        Assert.False(cpu.Contains(keys[expectedVictim]));
        Assert.Equal(1, cpu.Statistics.Evictions);
        foreach (var i in Enumerable.Range(0, 5).Where(i => i != expectedVictim))
        {
            using var read = cpu.AcquireReference(keys[i])!;
            Assert.True(TestChunks.Matches(read, i));
        }
        Assert.True(cpu.Used <= cpu.Capacity);
        AssertNoLeak(cpu);
    }

    [Fact]
    public void Lru_keeps_evicting_from_the_cold_end()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        var keys = Enumerable.Range(0, 8).Select(i => TestChunks.Key(i)).ToArray();
        for (var i = 0; i < 4; i++)
        {
            Put(cpu, keys[i], i);
        }
        Read(cpu, keys[0]);             // order now k1 k2 k3 k0
        Put(cpu, keys[4], 4);           // evicts k1
        Put(cpu, keys[5], 5);           // evicts k2
        Read(cpu, keys[3]);             // order k0 k4 k5 k3
        Put(cpu, keys[6], 6);           // evicts k0
        Assert.True(new[] { keys[3], keys[4], keys[5], keys[6] }.ToHashSet().SetEquals(cpu.Snapshot().Select(e => e.Key)));
        Assert.Equal(3, cpu.Statistics.Evictions);
        AssertNoLeak(cpu);
    }

    [Fact]
    public void Pinned_and_externally_referenced_entries_are_never_evicted()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        var keys = Enumerable.Range(0, 6).Select(i => TestChunks.Key(i)).ToArray();
        for (var i = 0; i < 4; i++)
        {
            Put(cpu, keys[i], i);
        }
        Assert.True(cpu.Pin(keys[0]));
        Assert.True(cpu.IsPinned(keys[0]));
        var reader = cpu.AcquireReference(keys[1])!;   // someone is still reading k1

        Put(cpu, keys[4], 4);
        Assert.True(cpu.Contains(keys[0]));
        Assert.True(cpu.Contains(keys[1]));
        Assert.False(cpu.Contains(keys[2]));

        // Everything left is pinned or referenced: allocation fails cleanly and evicts nothing.
        Assert.True(cpu.Pin(keys[3]));
        Assert.True(cpu.Pin(keys[4]));
        var evictions = cpu.Statistics.Evictions;
        Assert.False(cpu.TryAllocate(TestChunks.SmallChunk(), out _));
        Assert.Equal(evictions, cpu.Statistics.Evictions);
        Assert.Equal(4, cpu.Count);
        Assert.True(TestChunks.Matches(reader, 1));

        // Unpinning and releasing makes them evictable again.
        reader.Release();
        Assert.True(cpu.Unpin(keys[0]));
        Assert.False(cpu.Unpin(keys[0]));
        Assert.False(cpu.Unpin(keys[5]));
        Assert.False(cpu.Pin(keys[5]));
        Put(cpu, keys[5], 5);
        Assert.False(cpu.Contains(keys[0]) && cpu.Contains(keys[1]));
        AssertNoLeak(cpu);
    }

    [Fact]
    public void A_request_larger_than_the_pool_fails_without_evicting_anything()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        Put(cpu, TestChunks.Key(0), 0);
        Assert.False(cpu.TryAllocate(TestChunks.SmallChunk(16 * 5), out _));
        Assert.Equal(1, cpu.Count);
        Assert.Equal(0, cpu.Statistics.Evictions);
        AssertNoLeak(cpu);
    }

    [Fact]
    public void Random_churn_never_exceeds_capacity_and_returns_only_right_bytes()
    {
        var cpu = new LocalCpuBackend(8 * ChunkBytes, cachePolicy: "LRU");
        var random = new Random(7);
        var keys = Enumerable.Range(0, 40).Select(i => TestChunks.Key(i)).ToArray();
        for (var step = 0; step < 2000; step++)
        {
            var index = random.Next(keys.Length);
            if (random.Next(2) == 0)
            {
                if (!cpu.Contains(keys[index]) && cpu.TryAllocate(TestChunks.SmallChunk(1 + random.Next(16)), out var chunk))
                {
                    TestChunks.Fill(chunk, index);
                    cpu.SubmitPut(keys[index], chunk);
                    chunk.Release();
                }
            }
            else if (cpu.AcquireReference(keys[index]) is { } read)
            {
                Assert.True(TestChunks.Matches(read, index));
                read.Release();
            }
            Assert.True(cpu.Used <= cpu.Capacity);
            Assert.True(cpu.Statistics.UsedBytes <= cpu.Capacity);
            Assert.Equal(cpu.Count, cpu.OutstandingObjects);
        }
        Assert.Null(cpu.Pool.CheckConsistency());
        AssertNoLeak(cpu);
    }

    [Fact]
    public void With_local_cpu_false_puts_keep_nothing_but_allocation_works()
    {
        var cpu = new LocalCpuBackend(FourChunks, storesChunks: false);
        Assert.False(cpu.StoresChunks);
        var key = TestChunks.Key(1);
        var chunk = TestChunks.Create(cpu, 1);
        cpu.SubmitPut(key, chunk);
        Assert.Equal(1, chunk.RefCount);
        Assert.Equal(0, cpu.Count);
        Assert.False(cpu.Contains(key));
        Assert.Null(cpu.AcquireReference(key));
        Assert.Equal(0, cpu.Statistics.Puts);
        chunk.Release();
        // The pool is still the whole capacity.
        var all = Enumerable.Range(0, 4).Select(i => TestChunks.Create(cpu, i)).ToList();
        Assert.False(cpu.TryAllocate(TestChunks.SmallChunk(), out _));
        all.ForEach(c => c.Release());
        AssertNoLeak(cpu);
    }

    [Fact]
    public async Task Clear_removes_unpinned_entries_and_keeps_pinned_ones()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        var keys = Enumerable.Range(0, 4).Select(i => TestChunks.Key(i)).ToArray();
        for (var i = 0; i < 4; i++)
        {
            Put(cpu, keys[i], i);
        }
        cpu.Pin(keys[2]);
        Assert.Equal(3, await cpu.ClearAsync());
        Assert.Equal(1, cpu.Count);
        Assert.True(cpu.Contains(keys[2]));
        Assert.Equal(1, cpu.OutstandingObjects);
        Assert.Equal(1, cpu.Statistics.Entries);
        Assert.True(await cpu.RemoveAsync(keys[2]));   // an explicit remove does take a pinned entry
        Assert.False(await cpu.RemoveAsync(keys[2]));
        Assert.Equal(0, cpu.Statistics.Entries);
        Assert.Equal(0, cpu.Statistics.UsedBytes);
        AssertNoLeak(cpu);
    }

    [Fact]
    public async Task Prefix_lookups_and_reads_stop_at_the_first_miss()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        var keys = Enumerable.Range(0, 4).Select(i => TestChunks.Key(i)).ToArray();
        Put(cpu, keys[0], 0);
        Put(cpu, keys[1], 1);
        Put(cpu, keys[3], 3);
        Assert.Equal(2, await cpu.ContainsPrefixAsync(keys));
        Assert.Equal(0, await cpu.ContainsPrefixAsync(keys.AsMemory(2)));
        var destination = new MemoryObject?[4];
        Assert.Equal(2, await cpu.GetPrefixAsync(keys, destination));
        Assert.True(TestChunks.Matches(destination[0]!, 0));
        Assert.True(TestChunks.Matches(destination[1]!, 1));
        Assert.Null(destination[2]);
        Assert.Null(destination[3]);
        destination[0]!.Release();
        destination[1]!.Release();
        AssertNoLeak(cpu);
    }

    [Fact]
    public void Dispose_releases_pinned_entries_too()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        Put(cpu, TestChunks.Key(0), 0);
        cpu.Pin(TestChunks.Key(0));
        cpu.Dispose();
        Assert.Equal(0, cpu.OutstandingObjects);
    }

    [Fact]
    public void Dispose_with_a_reader_still_holding_a_chunk_keeps_the_memory_valid()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        Put(cpu, TestChunks.Key(0), 0);
        var reader = cpu.AcquireReference(TestChunks.Key(0))!;
        cpu.Dispose();
        Assert.Equal(1, cpu.OutstandingObjects);
        Assert.True(TestChunks.Matches(reader, 0));
        reader.Release();
        Assert.Equal(0, cpu.OutstandingObjects);
    }

    [Fact]
    public void Reads_and_repeated_puts_of_existing_keys_allocate_no_managed_memory()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        var keys = Enumerable.Range(0, 4).Select(i => TestChunks.Key(i)).ToArray();
        var chunks = new MemoryObject[4];
        for (var i = 0; i < 4; i++)
        {
            chunks[i] = TestChunks.Create(cpu, i);
            cpu.SubmitPut(keys[i], chunks[i]);
        }
        var destination = new MemoryObject?[4];
        ReadAndPutExisting(cpu, keys, chunks, destination, 100);   // warm up
        var before = GC.GetAllocatedBytesForCurrentThread();
        var hits = ReadAndPutExisting(cpu, keys, chunks, destination, 1000);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(4000, hits);
        Assert.Equal(4, cpu.Count);
        foreach (var chunk in chunks)
        {
            chunk.Release();
        }
        AssertNoLeak(cpu);
    }

    private static int ReadAndPutExisting(LocalCpuBackend cpu, CacheEngineKey[] keys, MemoryObject[] chunks, MemoryObject?[] destination, int rounds)
    {
        var total = 0;
        for (var i = 0; i < rounds; i++)
        {
            var key = keys[i & 3];
            cpu.SubmitPut(key, chunks[i & 3]);
            var read = cpu.AcquireReference(key)!;
            read.Span[0] ^= 0;
            read.Release();
            // The CPU tier's ValueTasks complete synchronously; waiting on them here keeps the whole round on this
            // thread, whose allocation counter the caller reads.
#pragma warning disable VSTHRD002
            var pending = cpu.GetAsync(key);
            pending.GetAwaiter().GetResult()!.Release();
            total += cpu.ContainsPrefixAsync(keys).GetAwaiter().GetResult();
            var count = cpu.GetPrefixAsync(keys, destination).GetAwaiter().GetResult();
#pragma warning restore VSTHRD002
            for (var j = 0; j < count; j++)
            {
                destination[j]!.Release();
                destination[j] = null;
            }
        }
        return total;
    }

    [Fact]
    public void Steady_state_eviction_churn_allocates_no_managed_memory()
    {
        var cpu = new LocalCpuBackend(FourChunks);
        var keys = Enumerable.Range(0, 16).Select(i => TestChunks.Key(i)).ToArray();
        var metadata = TestChunks.SmallChunk();
        void Churn(int rounds)
        {
            for (var i = 0; i < rounds; i++)
            {
                Assert.True(cpu.TryAllocate(metadata, out var chunk));
                cpu.SubmitPut(keys[i & 15], chunk);
                chunk.Release();
            }
        }
        Churn(64);   // warm up: dictionaries, policy nodes and recycled objects reach their steady size
        var before = GC.GetAllocatedBytesForCurrentThread();
        Churn(1000);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(4, cpu.Count);
        AssertNoLeak(cpu);
    }

    [Fact]
    public void Policies_order_victims_and_skip_what_the_predicate_refuses()
    {
        var lru = EvictionPolicies.Create<int>("lru");
        Assert.Equal("LRU", lru.Name);
        foreach (var i in new[] { 1, 2, 3 })
        {
            lru.OnInserted(i);
        }
        lru.OnAccessed(1);
        Assert.Equal(2, Victim(lru, _ => true));
        Assert.Equal(3, Victim(lru, k => k != 2));
        lru.OnInserted(2);   // re-insert moves to the hot end
        Assert.Equal(3, Victim(lru, _ => true));
        lru.OnRemoved(3);
        Assert.Equal(1, Victim(lru, _ => true));
        Assert.False(lru.TryFindVictim(_ => false, out _));

        var fifo = EvictionPolicies.Create<int>("FIFO");
        fifo.OnInserted(1);
        fifo.OnInserted(2);
        fifo.OnAccessed(1);
        Assert.Equal(1, Victim(fifo, _ => true));

        var mru = EvictionPolicies.Create<int>("Mru");
        mru.OnInserted(1);
        mru.OnInserted(2);
        mru.OnAccessed(1);
        Assert.Equal(1, Victim(mru, _ => true));
        Assert.Equal(2, Victim(mru, k => k != 1));

        var lfu = EvictionPolicies.Create<int>("LFU");
        lfu.OnInserted(1);
        lfu.OnInserted(2);
        lfu.OnInserted(3);
        lfu.OnAccessed(1);
        lfu.OnAccessed(3);
        Assert.Equal(2, Victim(lfu, _ => true));
        Assert.Equal(1, Victim(lfu, k => k != 2));   // tie between 1 and 3: the older goes
        lfu.OnRemoved(1);
        Assert.Equal(3, Victim(lfu, k => k != 2));

        var error = Assert.Throws<Core.Diagnostics.LMCacheConfigurationException>(() => EvictionPolicies.Create<int>("ARC"));
        Assert.Contains("'ARC'", error.Message, StringComparison.Ordinal);
    }

    private static int Victim(EvictionPolicy<int> policy, Func<int, bool> canEvict)
    {
        Assert.True(policy.TryFindVictim(canEvict, out var victim));
        return victim;
    }

    internal static void Put(LocalCpuBackend cpu, CacheEngineKey key, int seed)
    {
        Assert.True(cpu.TryAllocate(TestChunks.SmallChunk(), out var chunk));
        TestChunks.Fill(chunk, seed);
        cpu.SubmitPut(key, chunk);
        chunk.Release();
    }

    private static void Read(LocalCpuBackend cpu, CacheEngineKey key) => cpu.AcquireReference(key)!.Release();

    internal static void AssertNoLeak(LocalCpuBackend cpu)
    {
        cpu.Dispose();
        Assert.Equal(0, cpu.OutstandingObjects);
    }
}
