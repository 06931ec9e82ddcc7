using LMCache.Core.Memory;
using LMCache.Testing;

namespace LMCache.Core.Tests.Memory;

public sealed class MemoryObjectTests
{
    [Fact]
    public void A_fresh_object_has_one_reference_no_pins_and_can_be_evicted_by_its_single_holder()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        var memoryObject = TestChunks.Create(allocator, seed: 3);
        Assert.Equal(1, memoryObject.RefCount);
        Assert.Equal(0, memoryObject.PinCount);
        Assert.False(memoryObject.IsPinned);
        Assert.True(memoryObject.CanEvict);
        memoryObject.Release();
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public void A_second_reference_or_a_pin_forbids_eviction_until_given_back()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        var memoryObject = TestChunks.Create(allocator, seed: 4);
        var reader = memoryObject.AddRef();
        Assert.Same(memoryObject, reader);
        Assert.Equal(2, memoryObject.RefCount);
        Assert.False(memoryObject.CanEvict);
        reader.Release();
        Assert.True(memoryObject.CanEvict);

        memoryObject.Pin();
        memoryObject.Pin();
        Assert.Equal(2, memoryObject.PinCount);
        Assert.False(memoryObject.CanEvict);
        Assert.True(memoryObject.Unpin());
        Assert.False(memoryObject.CanEvict);
        Assert.True(memoryObject.Unpin());
        Assert.True(memoryObject.CanEvict);
        Assert.False(memoryObject.Unpin());
        Assert.Equal(0, memoryObject.PinCount);
        memoryObject.Release();
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public void Using_a_released_object_throws()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        var memoryObject = TestChunks.Create(allocator, seed: 5);
        memoryObject.Dispose();   // Dispose is Release
        Assert.Equal(0, allocator.OutstandingObjects);
        Assert.Throws<InvalidOperationException>(() => memoryObject.AddRef());
        Assert.Throws<InvalidOperationException>(() => memoryObject.Release());
        Assert.Equal(0, allocator.OutstandingObjects);
        Assert.Equal(0, allocator.Used);
        Assert.Null(allocator.CheckConsistency());
        Assert.Equal(0, memoryObject.Span.Length);   // the view is cleared, so a stale span cannot reach the slab
    }

    [Fact]
    public void The_last_release_returns_a_pinned_object_and_clears_its_pins()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        var first = TestChunks.Create(allocator, seed: 6);
        first.Pin();
        first.Release();
        Assert.Equal(0, allocator.OutstandingObjects);
        var second = TestChunks.Create(allocator, seed: 7);   // recycles the same instance
        Assert.Equal(0, second.PinCount);
        Assert.True(second.CanEvict);
        second.Release();
    }

    [Fact]
    public void Concurrent_add_ref_and_release_balance_exactly()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        var memoryObject = TestChunks.Create(allocator, seed: 8);
        Parallel.For(0, 8, _ =>
        {
            for (var i = 0; i < 10_000; i++)
            {
                memoryObject.AddRef();
                memoryObject.Pin();
                memoryObject.Unpin();
                memoryObject.Release();
            }
        });
        Assert.Equal(1, memoryObject.RefCount);
        Assert.Equal(0, memoryObject.PinCount);
        Assert.Equal(1, allocator.OutstandingObjects);
        memoryObject.Release();
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public void Length_span_and_memory_match_the_metadata_and_physical_size_is_aligned()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(3, 5, 7), KvDType.Float32, MemoryFormat.KV2LTD);   // 840 bytes
        Assert.True(allocator.TryAllocate(metadata, out var memoryObject));
        Assert.Equal(2L * 3 * 5 * 7 * 4, metadata.ByteLength);
        Assert.Equal(840, memoryObject.Length);
        Assert.Equal(840, memoryObject.Span.Length);
        Assert.Equal(840, memoryObject.Memory.Length);
        Assert.Equal(4096, memoryObject.PhysicalSize);
        Assert.Equal(metadata, memoryObject.Metadata);
        Assert.Equal(5, memoryObject.Metadata.TokenCount);
        Assert.Equal(4096, allocator.Used);
        memoryObject.Span.Fill(0xAB);
        Assert.All(memoryObject.Memory.ToArray(), b => Assert.Equal(0xAB, b));
        memoryObject.Release();
    }

    [Fact]
    public void Reshape_accepts_what_fits_the_block_and_rejects_the_rest()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        Assert.True(allocator.TryAllocate(MemoryObjectMetadata.Opaque(5000), out var memoryObject));
        Assert.Equal(8192, memoryObject.PhysicalSize);
        var smaller = new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 4, 64), KvDType.BFloat16, MemoryFormat.KV2LTD);   // 2048 bytes
        memoryObject.Reshape(smaller);
        Assert.Equal(2048, memoryObject.Length);
        Assert.Equal(2048, memoryObject.Span.Length);
        memoryObject.Reshape(MemoryObjectMetadata.Opaque(8192));
        Assert.Equal(8192, memoryObject.Span.Length);
        Assert.Throws<ArgumentException>(() => memoryObject.Reshape(MemoryObjectMetadata.Opaque(8193)));
        Assert.Equal(8192, memoryObject.Length);
        memoryObject.Release();
        Assert.Equal(0, allocator.Used);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(32)]
    [InlineData(100)]
    [InlineData(4095)]
    public void Alignment_must_be_a_power_of_two_of_at_least_64(int alignment)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new NativeSlabAllocator(1 << 20, alignment));
    }

    [Fact]
    public void Capacity_rounds_down_to_the_alignment_and_must_hold_one_block()
    {
        using var allocator = new NativeSlabAllocator((1 << 20) + 100);
        Assert.Equal(1 << 20, allocator.Capacity);
        Assert.Throws<ArgumentOutOfRangeException>(() => new NativeSlabAllocator(4095));
        using var small = new NativeSlabAllocator(640, alignment: 64);
        Assert.Equal(640, small.Capacity);
        Assert.True(small.TryAllocate(MemoryObjectMetadata.Opaque(65), out var memoryObject));
        Assert.Equal(128, memoryObject.PhysicalSize);
        Assert.Equal(0, memoryObject.Offset % 64);
        memoryObject.Release();
    }

    [Fact]
    public void Empty_or_invalid_requests_fail_without_side_effects()
    {
        using var allocator = new NativeSlabAllocator(1 << 20);
        Assert.False(allocator.TryAllocate(new MemoryObjectMetadata(new KvShape(0, 0, 0, 0), KvDType.BFloat16, MemoryFormat.KV2LTD), out _));
        Assert.False(allocator.TryAllocate(new MemoryObjectMetadata(new KvShape(int.MaxValue, 2, 0, 0), KvDType.Float32, MemoryFormat.KV2LTD), out _));
        Assert.Equal(0, allocator.OutstandingObjects);
        Assert.Equal(0, allocator.Used);
    }

    [Fact]
    public void First_fit_reuses_holes_and_coalesces_neighbours_on_free()
    {
        using var allocator = new NativeSlabAllocator(8 * 4096);
        var one = MemoryObjectMetadata.Opaque(4096);
        var blocks = Enumerable.Range(0, 8).Select(_ => Allocate(allocator, one)).ToList();
        Assert.False(allocator.TryAllocate(one, out _));
        Assert.Equal(0, allocator.LargestFreeBlock);

        // Free blocks 2 and 4: two one-block holes; a two-block request still fails (no fragmentation lie).
        blocks[2].Release();
        blocks[4].Release();
        Assert.Equal(4096, allocator.LargestFreeBlock);
        Assert.False(allocator.TryAllocate(MemoryObjectMetadata.Opaque(8192), out _));
        // Freeing block 3 merges 2..4 into one three-block hole.
        blocks[3].Release();
        Assert.Equal(3 * 4096, allocator.LargestFreeBlock);
        Assert.Null(allocator.CheckConsistency());
        var big = Allocate(allocator, MemoryObjectMetadata.Opaque(3 * 4096));
        Assert.Equal(2 * 4096, big.Offset);
        big.Release();
        // First fit: the lowest hole is used first.
        var again = Allocate(allocator, one);
        Assert.Equal(2 * 4096, again.Offset);
        again.Release();
        foreach (var i in new[] { 0, 1, 5, 6, 7 })
        {
            blocks[i].Release();
        }
        Assert.Equal(allocator.Capacity, allocator.LargestFreeBlock);
        Assert.Equal(0, allocator.OutstandingObjects);
        Assert.Null(allocator.CheckConsistency());
    }

    [Fact]
    public void Random_churn_keeps_the_allocator_consistent_and_never_overlaps_live_blocks()
    {
        using var allocator = new NativeSlabAllocator(64 * 4096);
        var random = new Random(42);
        var live = new List<(MemoryObject Object, int Seed)>();
        for (var step = 0; step < 3000; step++)
        {
            if (live.Count > 0 && (random.Next(3) == 0 || !TryAdd()))
            {
                var index = random.Next(live.Count);
                Assert.True(TestChunks.Matches(live[index].Object, live[index].Seed));
                live[index].Object.Release();
                live.RemoveAt(index);
            }
            if (step % 100 == 0)
            {
                Assert.Null(allocator.CheckConsistency());
            }
        }
        foreach (var (memoryObject, seed) in live)
        {
            Assert.True(TestChunks.Matches(memoryObject, seed));
            memoryObject.Release();
        }
        Assert.Equal(0, allocator.OutstandingObjects);
        Assert.Equal(allocator.Capacity, allocator.LargestFreeBlock);

        bool TryAdd()
        {
            var seed = random.Next();
            if (!allocator.TryAllocate(MemoryObjectMetadata.Opaque(random.Next(1, 5 * 4096)), out var memoryObject))
            {
                return false;
            }
            TestChunks.Fill(memoryObject, seed);
            live.Add((memoryObject, seed));
            return true;
        }
    }

    [Fact]
    public void Dtype_wire_codes_item_sizes_and_key_tokens()
    {
        Assert.True(KvDTypes.FromWireCode(1, out var legacyHalf));
        Assert.Equal(KvDType.Float16, legacyHalf);
        Assert.Equal(2, KvDType.Float16.ToWireCode());
        foreach (var dtype in Enum.GetValues<KvDType>())
        {
            Assert.True(KvDTypes.FromWireCode(dtype.ToWireCode(), out var back));
            Assert.Equal(dtype, back);
            Assert.True(KvDTypes.TryParseToken(dtype.ToKeyToken(), out var parsed));
            Assert.Equal(dtype, parsed);
        }
        Assert.False(KvDTypes.FromWireCode(9, out _));
        Assert.False(KvDTypes.FromWireCode(-1, out _));
        Assert.Equal(2, KvDType.BFloat16.ItemSize());
        Assert.Equal(4, KvDType.Float32.ItemSize());
        Assert.Equal(1, KvDType.Float8E4M3.ItemSize());
        Assert.True(KvDTypes.TryParseToken("bf16", out var bf16));
        Assert.Equal(KvDType.BFloat16, bf16);
        Assert.False(KvDTypes.TryParseToken("int4", out _));
    }

    [Fact]
    public void Shapes_parse_and_count_elements()
    {
        Assert.True(KvShape.TryParse("2x32x256x1024", out var shape));
        Assert.Equal(KvShape.Kv2Ltd(32, 256, 1024), shape);
        Assert.Equal(2L * 32 * 256 * 1024, shape.ElementCount);
        Assert.True(KvShape.TryParse("100", out var bytes));
        Assert.Equal(KvShape.Bytes(100), bytes);
        Assert.Equal(100, bytes.ElementCount);
        Assert.False(KvShape.TryParse("1x2x3x4x5", out _));
        Assert.False(KvShape.TryParse("0x2", out _));
        Assert.False(KvShape.TryParse("2x-1", out _));
        Assert.False(KvShape.TryParse("", out _));
        Assert.Equal("[2, 32, 256, 1024]", shape.ToString());
        // Llama-3.1-8B bf16: 32 MiB per 256-token chunk (reference, section 4.2).
        Assert.Equal(32L << 20, new MemoryObjectMetadata(KvShape.Kv2Ltd(32, 256, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD).ByteLength);
    }

    private static MemoryObject Allocate(NativeSlabAllocator allocator, MemoryObjectMetadata metadata)
    {
        Assert.True(allocator.TryAllocate(metadata, out var memoryObject));
        return memoryObject;
    }
}
