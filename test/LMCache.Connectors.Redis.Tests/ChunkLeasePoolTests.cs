using LMCache.Core.Memory;

namespace LMCache.Connectors.Redis.Tests;

/// <summary>The response buffer pool that lets payload reads land in chunk memory (no server needed).</summary>
public sealed class ChunkLeasePoolTests
{
    private const int Bytes = 1 << 20;

    [Fact]
    public void A_claimed_rent_right_after_its_frame_comes_from_the_allocator_and_can_be_adopted()
    {
        using var allocator = new NativeSlabAllocator(8L << 20);
        using var pool = new ChunkLeasePool();
        Assert.True(pool.Expect(Bytes, allocator));

        using (pool.Rent(Bytes + 12))   // the client buffers the reply frame first
        {
            var lease = pool.Rent(Bytes);
            Assert.True(ChunkMemoryOwner.TryGet(lease.Memory[..Bytes], out var owner));
            Assert.Same(allocator, owner.Allocator);
            Assert.Equal(1, allocator.OutstandingObjects);
            Assert.Equal(0, pool.PendingClaims);

            Assert.True(owner.TryAdopt(out var chunk));
            lease.Dispose();   // adopted: the lease no longer owns the chunk
            Assert.Equal(1, allocator.OutstandingObjects);
            Assert.False(owner.TryAdopt(out _));
            chunk.Release();
        }
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public void A_lease_that_is_not_adopted_gives_its_chunk_back_when_disposed()
    {
        using var allocator = new NativeSlabAllocator(8L << 20);
        using var pool = new ChunkLeasePool();
        pool.Expect(Bytes, allocator);
        using (pool.Rent(Bytes + 12))
        {
            var lease = pool.Rent(Bytes);
            Assert.IsType<ChunkMemoryOwner>(lease);
            lease.Dispose();
        }
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Theory]
    [InlineData(0, "no claim")]
    [InlineData(1, "no frame rent before it (a growing read buffer)")]
    [InlineData(2, "a frame of another size before it")]
    [InlineData(3, "a claim of another size")]
    [InlineData(4, "too small to claim")]
    public void Other_rents_come_from_the_shared_pool(int scenario, string why)
    {
        using var allocator = new NativeSlabAllocator(8L << 20);
        using var pool = new ChunkLeasePool();
        var size = scenario == 4 ? 4096 : Bytes;
        if (scenario != 0)
        {
            pool.Expect(scenario == 3 ? Bytes / 2 : size, allocator);
        }
        using var frame = pool.Rent(scenario switch { 1 => size / 2, 2 => size + 4096, _ => size + 12 });
        using var lease = pool.Rent(size);
        Assert.False(ChunkMemoryOwner.TryGet(lease.Memory[..size], out _), why);
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public void A_full_allocator_falls_back_to_the_shared_pool_and_withdrawn_claims_are_gone()
    {
        using var allocator = new NativeSlabAllocator(Bytes);
        using var pool = new ChunkLeasePool();
        using var taken = allocator.TryAllocate(MemoryObjectMetadata.Opaque(Bytes), out var all) ? all : throw new InvalidOperationException();
        pool.Expect(Bytes, allocator);
        using (pool.Rent(Bytes + 12))
        using (var lease = pool.Rent(Bytes))
        {
            Assert.False(ChunkMemoryOwner.TryGet(lease.Memory[..Bytes], out _));
        }
        Assert.Equal(0, pool.PendingClaims);   // the claim was used up by the attempt

        pool.Expect(Bytes, allocator);
        pool.Expect(Bytes, allocator);
        pool.Withdraw(Bytes, allocator);
        Assert.Equal(1, pool.PendingClaims);
        pool.Withdraw(Bytes, allocator);
        pool.Withdraw(Bytes, allocator);   // nothing left: no effect
        Assert.Equal(0, pool.PendingClaims);
    }
}
