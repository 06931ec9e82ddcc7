using LMCache.Core.Memory;
using LMCache.Testing;

namespace LMCache.Core.Tests.Memory;

public sealed class NativeSlabAllocatorTests
{
    [Fact]
    public void Allocations_are_aligned_bounded_and_returned_on_release()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        var metadata = TestChunks.SmallChunk(16); // 16 × 512 = 8 KiB
        var objects = new List<MemoryObject>();
        while (allocator.TryAllocate(metadata, out var memoryObject))
        {
            Assert.Equal(0, memoryObject.Offset % allocator.Alignment);
            objects.Add(memoryObject);
        }
        Assert.Equal(128, objects.Count);
        Assert.Equal(allocator.Capacity, allocator.Used);
        Assert.Null(allocator.CheckConsistency());

        // Release every other object, then the rest: the free list must coalesce back into one block.
        for (var i = 0; i < objects.Count; i += 2)
        {
            objects[i].Release();
        }
        Assert.Null(allocator.CheckConsistency());
        Assert.Equal(64, allocator.OutstandingObjects);
        for (var i = 1; i < objects.Count; i += 2)
        {
            objects[i].Release();
        }
        Assert.Equal(0, allocator.Used);
        Assert.Equal(0, allocator.OutstandingObjects);
        Assert.Equal(allocator.Capacity, allocator.LargestFreeBlock);
        Assert.Null(allocator.CheckConsistency());
    }

    [Fact]
    public void A_request_larger_than_the_pool_fails_without_throwing()
    {
        using var allocator = new NativeSlabAllocator(64 * 1024);
        Assert.False(allocator.TryAllocate(TestChunks.SmallChunk(1024), out _));
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public void References_keep_the_block_until_the_last_release()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        var memoryObject = TestChunks.Create(allocator, seed: 1);
        memoryObject.AddRef();
        memoryObject.Release();
        Assert.Equal(1, allocator.OutstandingObjects);
        Assert.True(TestChunks.Matches(memoryObject, 1));
        memoryObject.Release();
        Assert.Equal(0, allocator.OutstandingObjects);
        Assert.Throws<InvalidOperationException>(() => memoryObject.AddRef());
    }

    [Fact]
    public void Steady_state_allocate_and_release_allocates_no_managed_memory()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        var metadata = TestChunks.SmallChunk(16);
        for (var i = 0; i < 16; i++)
        {
            Assert.True(allocator.TryAllocate(metadata, out var warm));
            warm.Release();
        }
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1000; i++)
        {
            Assert.True(allocator.TryAllocate(metadata, out var memoryObject));
            memoryObject.Span[0] = 1;
            memoryObject.Release();
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
