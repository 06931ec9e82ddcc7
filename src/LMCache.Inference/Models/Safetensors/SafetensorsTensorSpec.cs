namespace LMCache.Inference.Models.Safetensors;

/// <summary>One tensor to write into a safetensors file: its name, element type and shape (row-major, C order).</summary>
/// <param name="Name">The tensor name, e.g. <c>model.layers.0.self_attn.q_proj.weight</c>.</param>
/// <param name="DType">The element type it is stored as.</param>
/// <param name="Shape">The dimensions; an empty list is a scalar (one element).</param>
public sealed record SafetensorsTensorSpec(string Name, SafetensorsDType DType, IReadOnlyList<long> Shape)
{
    /// <summary>Number of elements (the product of <see cref="Shape"/>).</summary>
    public long ElementCount
    {
        get
        {
            long count = 1;
            foreach (var dim in Shape)
            {
                count = checked(count * dim);
            }
            return count;
        }
    }

    /// <summary>Bytes the tensor's data takes in the file.</summary>
    public long ByteLength => checked(ElementCount * ElementSize(DType));

    /// <summary>Bytes per element of <paramref name="dtype"/>.</summary>
    public static int ElementSize(SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F32 => 4,
        SafetensorsDType.F16 or SafetensorsDType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown safetensors dtype"),
    };

    /// <summary>The format's spelling of <paramref name="dtype"/> (<c>F32</c>, <c>F16</c>, <c>BF16</c>).</summary>
    public static string Token(SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F32 => "F32",
        SafetensorsDType.F16 => "F16",
        SafetensorsDType.BF16 => "BF16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown safetensors dtype"),
    };
}
