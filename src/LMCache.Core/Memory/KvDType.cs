namespace LMCache.Core.Memory;

/// <summary>
/// Element type of a KV tensor. The numeric values are LMCache's wire dtype codes
/// (<c>RemoteMetadata</c> and the <c>lm://</c> headers), so they travel unchanged.
/// </summary>
/// <remarks>
/// Code 1 is also float16 in the original (a duplicate dictionary entry); decoders map it with
/// <see cref="KvDTypes.FromWireCode"/>, encoders always emit 2.
/// </remarks>
public enum KvDType
{
    /// <summary>No dtype (opaque byte buffers such as cachegen output).</summary>
    None = 0,
    /// <summary>IEEE half precision; wire code 2 (1 is accepted on decode).</summary>
    Float16 = 2,
    /// <summary>bfloat16.</summary>
    BFloat16 = 3,
    /// <summary>IEEE single precision.</summary>
    Float32 = 4,
    /// <summary>IEEE double precision.</summary>
    Float64 = 5,
    /// <summary>Unsigned bytes.</summary>
    UInt8 = 6,
    /// <summary>float8 e4m3fn.</summary>
    Float8E4M3 = 7,
    /// <summary>float8 e5m2.</summary>
    Float8E5M2 = 8,
}

/// <summary>Helpers for <see cref="KvDType"/>.</summary>
public static class KvDTypes
{
    /// <summary>Size in bytes of one element; 1 for <see cref="KvDType.None"/> (opaque bytes).</summary>
    public static int ItemSize(this KvDType dtype) => dtype switch
    {
        KvDType.None => 1,
        KvDType.Float16 or KvDType.BFloat16 => 2,
        KvDType.Float32 => 4,
        KvDType.Float64 => 8,
        KvDType.UInt8 or KvDType.Float8E4M3 or KvDType.Float8E5M2 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown KV dtype."),
    };

    /// <summary>Maps a wire dtype code to a dtype; false for codes LMCache never writes.</summary>
    public static bool FromWireCode(int code, out KvDType dtype)
    {
        switch (code)
        {
            case 0: dtype = KvDType.None; return true;
            case 1:
            case 2: dtype = KvDType.Float16; return true;
            case >= 3 and <= 8: dtype = (KvDType)code; return true;
            default: dtype = KvDType.None; return false;
        }
    }

    /// <summary>The wire code written for <paramref name="dtype"/>.</summary>
    public static int ToWireCode(this KvDType dtype) => (int)dtype;

    /// <summary>The dtype token used in the original's 6-field key strings (<c>half</c>, <c>bfloat16</c>, ...).</summary>
    public static string ToKeyToken(this KvDType dtype) => dtype switch
    {
        KvDType.Float16 => "half",
        KvDType.BFloat16 => "bfloat16",
        KvDType.Float32 => "float",
        KvDType.Float64 => "double",
        KvDType.UInt8 => "uint8",
        KvDType.Float8E4M3 => "fp8_e4m3",
        KvDType.Float8E5M2 => "fp8_e5m2",
        _ => "none",
    };

    /// <summary>Parses a dtype token of either era (<c>half</c>, <c>float16</c>, <c>bf16</c>, <c>fp8</c>, ...).</summary>
    public static bool TryParseToken(string token, out KvDType dtype)
    {
        dtype = token.ToLowerInvariant() switch
        {
            "half" or "float16" or "fp16" => KvDType.Float16,
            "bfloat16" or "bf16" => KvDType.BFloat16,
            "float" or "float32" or "fp32" => KvDType.Float32,
            "double" or "float64" => KvDType.Float64,
            "uint8" or "fp8" => KvDType.UInt8,
            "fp8_e4m3" or "fp8_e4m3fn" or "float8_e4m3fn" => KvDType.Float8E4M3,
            "fp8_e5m2" or "float8_e5m2" => KvDType.Float8E5M2,
            "none" => KvDType.None,
            _ => (KvDType)(-1),
        };
        return (int)dtype >= 0;
    }
}
