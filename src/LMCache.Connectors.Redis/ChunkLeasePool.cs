using System.Buffers;
using System.Runtime.InteropServices;
using LMCache.Core.Memory;

namespace LMCache.Connectors.Redis;

/// <summary>
/// The response buffer pool of a connector's multiplexer (<c>ConfigurationOptions.ResponseBufferPool</c>): it lets a
/// payload <c>GET</c> land directly in chunk memory of the caller's allocator, so a read costs one copy fewer.
/// </summary>
/// <remarks>
/// <para>StackExchange.Redis buffers a reply frame, then rents the <see cref="StackExchange.Redis.Lease{T}"/> that
/// <c>StringGetLeaseAsync</c> returns from this pool and copies the value into it. Before issuing a payload read whose
/// size the metadata told, the connector registers a claim (<see cref="Expect"/>): a rent of exactly that size, made
/// right after the rent of its frame (a few bytes longer) on the same thread, is served from the claim's allocator as a
/// <see cref="ChunkMemoryOwner"/>, which the connector then adopts as the chunk instead of copying it.</para>
/// <para>Every other rent — the client's growing read buffers, the frame copies, replies nobody claimed — comes from
/// <see cref="MemoryPool{T}.Shared"/>. Matching is a hint, never a condition of correctness: a lease that is not a
/// chunk owner, or one from another allocator, takes the copying path, and chunk memory that the client rents but never
/// hands out as a lease is released when the client disposes it.</para>
/// </remarks>
internal sealed class ChunkLeasePool : MemoryPool<byte>
{
    /// <summary>How much longer than the value a reply frame may be (<c>$&lt;length&gt;\r\n</c> … <c>\r\n</c>).</summary>
    private const int MaxFrameOverhead = 32;

    /// <summary>Claims never cover small values: below this, the copy costs less than the bookkeeping.</summary>
    private const int MinimumClaimBytes = 64 * 1024;

    [ThreadStatic]
    private static int s_lastRent;

    private readonly Lock _gate = new();
    private readonly List<Claim> _claims = [];

    /// <inheritdoc />
    public override int MaxBufferSize => Shared.MaxBufferSize;

    /// <summary>Claims registered and not yet rented or withdrawn (for tests and diagnostics).</summary>
    public int PendingClaims
    {
        get
        {
            lock (_gate)
            {
                return _claims.Count;
            }
        }
    }

    /// <summary>
    /// Registers that a reply value of <paramref name="bytes"/> bytes is on its way and should land in memory of
    /// <paramref name="allocator"/>. Returns false (nothing registered) for values too small to be worth it.
    /// </summary>
    public bool Expect(int bytes, IMemoryAllocator allocator)
    {
        if (bytes < MinimumClaimBytes)
        {
            return false;
        }
        lock (_gate)
        {
            _claims.Add(new Claim(bytes, allocator));
        }
        return true;
    }

    /// <summary>Withdraws one claim of <paramref name="bytes"/> for <paramref name="allocator"/>, if one is still pending.</summary>
    public void Withdraw(int bytes, IMemoryAllocator allocator)
    {
        lock (_gate)
        {
            var index = _claims.IndexOf(new Claim(bytes, allocator));
            if (index >= 0)
            {
                _claims.RemoveAt(index);
            }
        }
    }

    /// <inheritdoc />
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        var previous = s_lastRent;
        s_lastRent = minBufferSize;
        if (minBufferSize >= MinimumClaimBytes && previous > minBufferSize && previous - minBufferSize <= MaxFrameOverhead
            && TryTakeClaim(minBufferSize, out var allocator)
            && allocator.TryAllocate(MemoryObjectMetadata.Opaque(minBufferSize), out var chunk))
        {
            return new ChunkMemoryOwner(chunk, allocator);
        }
        return Shared.Rent(minBufferSize);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        lock (_gate)
        {
            _claims.Clear();
        }
    }

    private bool TryTakeClaim(int bytes, out IMemoryAllocator allocator)
    {
        lock (_gate)
        {
            for (var i = 0; i < _claims.Count; i++)
            {
                if (_claims[i].Bytes == bytes)
                {
                    allocator = _claims[i].Allocator;
                    _claims.RemoveAt(i);
                    return true;
                }
            }
        }
        allocator = null!;
        return false;
    }

    private readonly record struct Claim(int Bytes, IMemoryAllocator Allocator);
}

/// <summary>
/// Chunk memory handed to the Redis client as a lease buffer. The connector adopts it as the chunk
/// (<see cref="TryAdopt"/>); otherwise disposing the lease releases it to its allocator.
/// </summary>
internal sealed class ChunkMemoryOwner : MemoryManager<byte>
{
    private readonly MemoryObject _chunk;
    private int _state;   // 0 = owned here, 1 = adopted or released

    public ChunkMemoryOwner(MemoryObject chunk, IMemoryAllocator allocator)
    {
        _chunk = chunk;
        Allocator = allocator;
    }

    /// <summary>The allocator the chunk came from.</summary>
    public IMemoryAllocator Allocator { get; }

    /// <summary>
    /// Takes the chunk (the caller owns its reference; disposing this owner no longer releases it). False when it was
    /// already adopted or released.
    /// </summary>
    public bool TryAdopt(out MemoryObject chunk)
    {
        chunk = _chunk;
        return Interlocked.Exchange(ref _state, 1) == 0;
    }

    /// <inheritdoc />
    public override Span<byte> GetSpan() => _chunk.Span;

    /// <inheritdoc />
    public override MemoryHandle Pin(int elementIndex = 0) => _chunk.Memory[elementIndex..].Pin();

    /// <inheritdoc />
    public override void Unpin()
    {
        // Native chunk memory never moves: nothing to unpin.
    }

    /// <summary>Whether <paramref name="memory"/> is exactly the whole of an owner's chunk memory.</summary>
    public static bool TryGet(ReadOnlyMemory<byte> memory, out ChunkMemoryOwner owner) =>
        MemoryMarshal.TryGetMemoryManager(memory, out owner!, out var start, out var length)
        && start == 0 && length == owner._chunk.Length;

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (Interlocked.Exchange(ref _state, 1) == 0)
        {
            _chunk.Release();
        }
    }
}
