namespace LMCache.Inference.Models.Safetensors;

/// <summary>The floating-point dtypes the loader reads; every one is widened to fp32 for compute.</summary>
public enum SafetensorsDType
{
    /// <summary>IEEE float32 (<c>F32</c>).</summary>
    F32,

    /// <summary>IEEE float16 (<c>F16</c>).</summary>
    F16,

    /// <summary>bfloat16 (<c>BF16</c>): the upper half of a float32.</summary>
    BF16,
}

/// <summary>One tensor's entry in a safetensors header.</summary>
/// <param name="Name">The tensor name (e.g. <c>model.layers.0.self_attn.q_proj.weight</c>).</param>
/// <param name="FilePath">The file holding it.</param>
/// <param name="DTypeName">The dtype as the header spells it (<c>BF16</c>, <c>F16</c>, <c>F32</c>, <c>I64</c> …).</param>
/// <param name="Shape">The shape.</param>
/// <param name="DataOffset">Absolute byte offset of the data in the file.</param>
/// <param name="ByteLength">Bytes of data.</param>
public sealed record SafetensorsTensorInfo(string Name, string FilePath, string DTypeName, long[] Shape, long DataOffset, long ByteLength)
{
    /// <summary>Elements (product of the shape; 1 for a scalar).</summary>
    public long ElementCount
    {
        get
        {
            long count = 1;
            foreach (var d in Shape)
            {
                count *= d;
            }
            return count;
        }
    }

    /// <summary>The dtype, or null when it is not one the loader reads.</summary>
    public SafetensorsDType? DType => DTypeName switch
    {
        "F32" => SafetensorsDType.F32,
        "F16" => SafetensorsDType.F16,
        "BF16" => SafetensorsDType.BF16,
        _ => null,
    };

    /// <summary>The shape as text, e.g. <c>[2048, 128]</c>.</summary>
    public string ShapeText => FormatShape(Shape);

    /// <summary>Formats a shape as <c>[a, b]</c>.</summary>
    public static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";

    /// <summary>Bytes per element of a dtype name the safetensors format defines, or 0 when unknown.</summary>
    internal static int ElementSize(string dtype) => dtype switch
    {
        "F64" or "I64" or "U64" => 8,
        "F32" or "I32" or "U32" => 4,
        "F16" or "BF16" or "I16" or "U16" => 2,
        "I8" or "U8" or "BOOL" or "F8_E4M3" or "F8_E5M2" => 1,
        _ => 0,
    };
}
