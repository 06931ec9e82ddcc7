using System.Diagnostics.CodeAnalysis;

namespace LMCache.Core.Memory;

/// <summary>Hands out <see cref="MemoryObject"/>s from a bounded pool.</summary>
public interface IMemoryAllocator : IDisposable
{
    /// <summary>
    /// Allocates an object for <paramref name="metadata"/>. On success the caller owns one reference.
    /// Failure (pool full, fragmented, or a request larger than the pool) is <c>false</c>, not an exception.
    /// </summary>
    bool TryAllocate(in MemoryObjectMetadata metadata, [NotNullWhen(true)] out MemoryObject? memoryObject);

    /// <summary>Total bytes the pool can hand out.</summary>
    long Capacity { get; }

    /// <summary>Bytes currently handed out (physical, aligned sizes).</summary>
    long Used { get; }

    /// <summary>Objects currently alive (allocated and not yet released). Zero when nothing leaked.</summary>
    int OutstandingObjects { get; }
}
