using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;

namespace LMCache.Core.Memory;

/// <summary>
/// A first-fit allocator over one aligned native slab, with a free list sorted by address and coalescing on free
/// (the design of the original's <c>TensorMemoryAllocator</c>).
/// </summary>
/// <remarks>
/// <para>The slab is reserved with <see cref="NativeMemory.AlignedAlloc"/> at construction; Linux backs its pages on
/// first touch, so an idle 5 GiB pool costs address space, not RAM. The pool never exceeds <see cref="Capacity"/>:
/// that is the whole CPU tier's memory, plus a few bytes per live object for bookkeeping.</para>
/// <para>Blocks are aligned to <see cref="Alignment"/> (4 KiB by default) so a block can be the buffer of an
/// O_DIRECT read or write. Retired <see cref="MemoryObject"/> instances are kept and reused, and the free list is a
/// pre-sized list of structs, so steady-state allocate/release creates no garbage.</para>
/// </remarks>
public sealed unsafe class NativeSlabAllocator : IMemoryAllocator, IMemoryObjectRecycler
{
    /// <summary>Default block alignment: 4 KiB (page size, and what O_DIRECT needs).</summary>
    public const int DefaultAlignment = 4096;

    private readonly Lock _lock = new();
    private readonly List<FreeBlock> _free = new(64);   // sorted by offset, never two adjacent blocks
    private readonly Stack<MemoryObject> _retired = new(64);
    private byte* _slab;
    private long _used;
    private int _outstanding;
    private bool _disposeRequested;

    /// <summary>Creates a pool of <paramref name="capacity"/> bytes (rounded down to the alignment).</summary>
    /// <param name="capacity">Pool size in bytes; must be at least one alignment unit.</param>
    /// <param name="alignment">Block alignment in bytes, a power of two ≥ 64. Defaults to 4096.</param>
    public NativeSlabAllocator(long capacity, int alignment = DefaultAlignment)
    {
        if (alignment < 64 || (alignment & (alignment - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(alignment), alignment, "Alignment must be a power of two of at least 64.");
        }
        capacity -= capacity % alignment;
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, alignment, nameof(capacity));
        Alignment = alignment;
        Capacity = capacity;
        _slab = (byte*)NativeMemory.AlignedAlloc((nuint)capacity, (nuint)alignment);
        _free.Add(new FreeBlock(0, capacity));
    }

    /// <inheritdoc />
    public long Capacity { get; }

    /// <summary>Block alignment in bytes.</summary>
    public int Alignment { get; }

    /// <inheritdoc />
    public long Used => Volatile.Read(ref _used);

    /// <inheritdoc />
    public int OutstandingObjects => Volatile.Read(ref _outstanding);

    /// <summary>Size of the largest free block: the largest object that can be allocated right now.</summary>
    public long LargestFreeBlock
    {
        get
        {
            lock (_lock)
            {
                long max = 0;
                foreach (var block in _free)
                {
                    max = Math.Max(max, block.Size);
                }
                return max;
            }
        }
    }

    /// <inheritdoc />
    public bool TryAllocate(in MemoryObjectMetadata metadata, [NotNullWhen(true)] out MemoryObject? memoryObject)
    {
        memoryObject = null;
        var length = metadata.ByteLength;
        if (length <= 0 || length > int.MaxValue)
        {
            return false;
        }
        var size = (length + Alignment - 1) & ~(long)(Alignment - 1);
        long offset;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposeRequested, this);
            var index = -1;
            for (var i = 0; i < _free.Count; i++)
            {
                if (_free[i].Size >= size)
                {
                    index = i;
                    break;
                }
            }
            if (index < 0)
            {
                return false;
            }
            var block = _free[index];
            offset = block.Offset;
            if (block.Size == size)
            {
                _free.RemoveAt(index);
            }
            else
            {
                _free[index] = new FreeBlock(block.Offset + size, block.Size - size);
            }
            _used += size;
            _outstanding++;
            memoryObject = _retired.Count > 0 ? _retired.Pop() : new MemoryObject(this);
        }
        memoryObject.Initialize(_slab + offset, offset, size, metadata);
        return true;
    }

    void IMemoryObjectRecycler.Recycle(MemoryObject memoryObject)
    {
        var offset = memoryObject.Offset;
        var size = memoryObject.PhysicalSize;
        memoryObject.Clear();
        lock (_lock)
        {
            InsertFree(offset, size);
            _used -= size;
            _outstanding--;
            _retired.Push(memoryObject);
            if (_disposeRequested && _outstanding == 0)
            {
                FreeSlab();
            }
        }
    }

    /// <summary>
    /// Verifies the allocator's invariants: free + used = capacity, free blocks sorted, never overlapping or adjacent.
    /// Returns a description of the first violation, or null (the original's <c>memcheck</c>).
    /// </summary>
    public string? CheckConsistency()
    {
        lock (_lock)
        {
            long free = 0;
            for (var i = 0; i < _free.Count; i++)
            {
                free += _free[i].Size;
                if (i > 0 && _free[i - 1].Offset + _free[i - 1].Size >= _free[i].Offset)
                {
                    return $"free blocks {i - 1} and {i} overlap or touch";
                }
            }
            return free + _used == Capacity ? null : $"free {free} + used {_used} != capacity {Capacity}";
        }
    }

    /// <summary>
    /// Frees the slab — at once when no object is alive, otherwise when the last live object is released, so a reader
    /// that still holds a chunk never sees its memory freed under it. No allocation succeeds after this call.
    /// </summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _disposeRequested = true;
            if (_outstanding == 0)
            {
                FreeSlab();
            }
        }
    }

    private void FreeSlab()
    {
        if (_slab != null)
        {
            NativeMemory.AlignedFree(_slab);
            _slab = null;
        }
    }

    private void InsertFree(long offset, long size)
    {
        // Binary search for the first block after `offset`, then merge with the neighbours.
        int lo = 0, hi = _free.Count;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (_free[mid].Offset < offset)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }
        var mergePrevious = lo > 0 && _free[lo - 1].Offset + _free[lo - 1].Size == offset;
        var mergeNext = lo < _free.Count && offset + size == _free[lo].Offset;
        if (mergePrevious && mergeNext)
        {
            var previous = _free[lo - 1];
            _free[lo - 1] = new FreeBlock(previous.Offset, previous.Size + size + _free[lo].Size);
            _free.RemoveAt(lo);
        }
        else if (mergePrevious)
        {
            var previous = _free[lo - 1];
            _free[lo - 1] = new FreeBlock(previous.Offset, previous.Size + size);
        }
        else if (mergeNext)
        {
            _free[lo] = new FreeBlock(offset, size + _free[lo].Size);
        }
        else
        {
            _free.Insert(lo, new FreeBlock(offset, size));
        }
    }

    private readonly record struct FreeBlock(long Offset, long Size);
}
