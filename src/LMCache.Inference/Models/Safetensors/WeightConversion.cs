using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace LMCache.Inference.Models.Safetensors;

/// <summary>Widening of stored weights to fp32: bf16 by a 16-bit shift (vectorized), fp16 through <see cref="Half"/>.</summary>
public static class WeightConversion
{
    /// <summary>Widens <paramref name="source"/> (little-endian bf16) into <paramref name="destination"/>.</summary>
    public static void Bf16ToFloat32(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        if (destination.Length < source.Length)
        {
            throw new ArgumentException("The destination is shorter than the source.", nameof(destination));
        }
        var output = MemoryMarshal.Cast<float, uint>(destination);
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= source.Length - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
            {
                var packed = Vector256.Create(source.Slice(i, Vector256<ushort>.Count));
                var (lower, upper) = Vector256.Widen(packed);
                Vector256.ShiftLeft(lower, 16).CopyTo(output.Slice(i));
                Vector256.ShiftLeft(upper, 16).CopyTo(output.Slice(i + Vector256<uint>.Count));
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            for (; i <= source.Length - Vector128<ushort>.Count; i += Vector128<ushort>.Count)
            {
                var packed = Vector128.Create(source.Slice(i, Vector128<ushort>.Count));
                var (lower, upper) = Vector128.Widen(packed);
                Vector128.ShiftLeft(lower, 16).CopyTo(output.Slice(i));
                Vector128.ShiftLeft(upper, 16).CopyTo(output.Slice(i + Vector128<uint>.Count));
            }
        }
        for (; i < source.Length; i++)
        {
            output[i] = (uint)source[i] << 16;
        }
    }

    /// <summary>Widens <paramref name="source"/> (IEEE fp16) into <paramref name="destination"/>.</summary>
    public static void Float16ToFloat32(ReadOnlySpan<Half> source, Span<float> destination)
    {
        if (destination.Length < source.Length)
        {
            throw new ArgumentException("The destination is shorter than the source.", nameof(destination));
        }
        // The runtime compiles Half -> float to the hardware conversion where the CPU has it (F16C / AVX-512 FP16).
        for (var i = 0; i < source.Length; i++)
        {
            destination[i] = (float)source[i];
        }
    }

    /// <summary>
    /// Writes <paramref name="tensor"/> as fp32 into <paramref name="destination"/> (its element count long), widening
    /// bf16 and fp16.
    /// </summary>
    /// <exception cref="SafetensorsException">The tensor's dtype is not F32, F16 or BF16.</exception>
    public static void ToFloat32(SafetensorsTensorInfo tensor, ReadOnlySpan<byte> bytes, Span<float> destination)
    {
        switch (tensor.DType)
        {
            case SafetensorsDType.F32:
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(destination);
                break;
            case SafetensorsDType.F16:
                Float16ToFloat32(MemoryMarshal.Cast<byte, Half>(bytes), destination);
                break;
            case SafetensorsDType.BF16:
                Bf16ToFloat32(MemoryMarshal.Cast<byte, ushort>(bytes), destination);
                break;
            default:
                throw UnsupportedDType(tensor);
        }
    }

    internal static SafetensorsException UnsupportedDType(SafetensorsTensorInfo tensor) =>
        new(tensor.FilePath, tensor.Name, $"dtype '{tensor.DTypeName}' is not supported (supported: F32, F16, BF16).");
}
