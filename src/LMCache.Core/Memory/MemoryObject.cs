using System.Buffers;
using System.Diagnostics;

namespace LMCache.Core.Memory;

/// <summary>
/// A reference-counted block of native memory holding one KV chunk (or an opaque serialized buffer).
/// </summary>
/// <remarks>
/// <para>Ownership: <see cref="IMemoryAllocator.TryAllocate"/> returns an object with one reference owned by the caller.
/// Every holder (the CPU hot cache, an in-flight disk or remote put, a reader) takes its own reference with
/// <see cref="AddRef"/> and gives it back with <see cref="Release"/> (or <see cref="Dispose"/>, which is the same).
/// When the last reference goes, the block returns to its allocator and this instance is recycled for a later
/// allocation, so a released object must not be touched again.</para>
/// <para>Pins are separate from references: a pinned object is never chosen for eviction (see <see cref="CanEvict"/>);
/// pins are taken by a holder that also keeps a reference.</para>
/// </remarks>
public sealed unsafe class MemoryObject : IDisposable
{
    private readonly IMemoryObjectRecycler _recycler;
    private readonly NativeBlockMemoryManager _manager = new();
    private int _refCount;
    private int _pinCount;

    internal MemoryObject(IMemoryObjectRecycler recycler)
    {
        _recycler = recycler;
    }

    /// <summary>What this object holds.</summary>
    public MemoryObjectMetadata Metadata { get; private set; }

    /// <summary>Logical size in bytes (<see cref="MemoryObjectMetadata.ByteLength"/>).</summary>
    public int Length { get; private set; }

    /// <summary>Bytes reserved in the allocator (the logical size rounded up to the allocator's alignment).</summary>
    public long PhysicalSize { get; private set; }

    /// <summary>Offset of the block inside its allocator's slab (diagnostics and tests).</summary>
    public long Offset { get; private set; }

    /// <summary>The object's bytes. Valid while the caller holds a reference.</summary>
    public Memory<byte> Memory => _manager.Memory;

    /// <summary>The object's bytes as a span. Valid while the caller holds a reference.</summary>
    public Span<byte> Span => _manager.GetSpan();

    /// <summary>Current number of references (diagnostics).</summary>
    public int RefCount => Volatile.Read(ref _refCount);

    /// <summary>Current number of pins.</summary>
    public int PinCount => Volatile.Read(ref _pinCount);

    /// <summary>True when pinned at least once.</summary>
    public bool IsPinned => PinCount > 0;

    /// <summary>
    /// True when a cache holding one reference may evict this object: it is not pinned and nobody else holds it
    /// (the same rule as the original's <c>can_evict</c>).
    /// </summary>
    public bool CanEvict => PinCount == 0 && RefCount == 1;

    /// <summary>Takes one more reference. Throws if the object was already released (a use-after-free bug).</summary>
    public MemoryObject AddRef()
    {
        var before = Interlocked.Increment(ref _refCount) - 1;
        if (before <= 0)
        {
            Interlocked.Decrement(ref _refCount);
            ThrowReleased();
        }
        return this;
    }

    /// <summary>Gives back one reference; the last one returns the block to its allocator.</summary>
    public void Release()
    {
        var after = Interlocked.Decrement(ref _refCount);
        if (after == 0)
        {
            _pinCount = 0;
            _recycler.Recycle(this);
        }
        else if (after < 0)
        {
            Interlocked.Increment(ref _refCount);
            ThrowReleased();
        }
    }

    /// <summary>Same as <see cref="Release"/>: lets a holder scope its reference with <c>using</c>.</summary>
    public void Dispose() => Release();

    /// <summary>Pins the object against eviction.</summary>
    public void Pin() => Interlocked.Increment(ref _pinCount);

    /// <summary>Removes one pin; returns false when it was not pinned.</summary>
    public bool Unpin()
    {
        while (true)
        {
            var current = Volatile.Read(ref _pinCount);
            if (current == 0)
            {
                return false;
            }
            if (Interlocked.CompareExchange(ref _pinCount, current - 1, current) == current)
            {
                return true;
            }
        }
    }

    /// <summary>
    /// Reinterprets the object's bytes with different metadata of the same or smaller byte length (used when a
    /// deserializer fills a block it allocated generously). Only the sole owner may call it.
    /// </summary>
    public void Reshape(in MemoryObjectMetadata metadata)
    {
        var length = metadata.ByteLength;
        if (length > PhysicalSize || length < 0)
        {
            throw new ArgumentException($"Metadata of {length} bytes does not fit a block of {PhysicalSize} bytes.", nameof(metadata));
        }
        Metadata = metadata;
        Length = (int)length;
        _manager.Resize(Length);
    }

    internal void Initialize(byte* pointer, long offset, long physicalSize, in MemoryObjectMetadata metadata)
    {
        Debug.Assert(_refCount == 0);
        Metadata = metadata;
        Length = (int)metadata.ByteLength;
        PhysicalSize = physicalSize;
        Offset = offset;
        _pinCount = 0;
        _manager.Reset(pointer, Length);
        Volatile.Write(ref _refCount, 1);
    }

    internal void Clear() => _manager.Reset(null, 0);

    private static void ThrowReleased() =>
        throw new InvalidOperationException("The memory object was already released (use after free).");

    /// <summary>Exposes a native block as <see cref="Memory{T}"/> without allocating per use.</summary>
    private sealed class NativeBlockMemoryManager : MemoryManager<byte>
    {
        private byte* _pointer;
        private int _length;

        public void Reset(byte* pointer, int length)
        {
            _pointer = pointer;
            _length = length;
        }

        public void Resize(int length) => _length = length;

        public override Span<byte> GetSpan() => new(_pointer, _length);

        public override MemoryHandle Pin(int elementIndex = 0)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, _length);
            return new MemoryHandle(_pointer + elementIndex);
        }

        public override void Unpin()
        {
            // Native memory never moves.
        }

        protected override void Dispose(bool disposing)
        {
            // The block belongs to the allocator's slab; nothing to free here.
        }
    }
}

/// <summary>Takes back a memory object whose last reference was released.</summary>
internal interface IMemoryObjectRecycler
{
    void Recycle(MemoryObject memoryObject);
}
