namespace LMCache.Core.Memory;

/// <summary>
/// What a memory object holds: shape, element type and layout. Its byte length is derived, so a shape, a dtype and a
/// length can never disagree; opaque buffers use <see cref="KvShape.Bytes(int)"/> with <see cref="KvDType.None"/>.
/// </summary>
/// <param name="Shape">The logical tensor shape.</param>
/// <param name="DType">The element type.</param>
/// <param name="Format">The layout.</param>
public readonly record struct MemoryObjectMetadata(KvShape Shape, KvDType DType, MemoryFormat Format)
{
    /// <summary>Logical size in bytes (<c>elements * itemsize</c>).</summary>
    public long ByteLength => Shape.ByteLength(DType);

    /// <summary>Metadata for an opaque buffer of <paramref name="bytes"/> bytes (<see cref="MemoryFormat.BinaryBuffer"/>).</summary>
    public static MemoryObjectMetadata Opaque(int bytes) => new(KvShape.Bytes(bytes), KvDType.None, MemoryFormat.BinaryBuffer);

    /// <summary>Number of tokens along the token axis (axis 2 for <see cref="MemoryFormat.KV2LTD"/>), else 0.</summary>
    public int TokenCount => Format switch
    {
        MemoryFormat.KV2LTD or MemoryFormat.KVMla => Shape.D2,
        MemoryFormat.KVT2D => Shape.D0,
        MemoryFormat.KV2TD => Shape.D1,
        _ => 0,
    };

    /// <inheritdoc />
    public override string ToString() => $"{Format} {DType} {Shape} ({ByteLength} bytes)";
}
