namespace LMCache.Inference.Models.Graph;

/// <summary>
/// Weight-only block quantization in the layout of ONNX Runtime's <c>com.microsoft.MatMulNBits</c>: a weight
/// <c>[N, K]</c> (the Hugging Face <c>[out, in]</c> layout as it is) becomes <c>B</c> uint8
/// <c>[N, ceil(K / block), block × bits / 8]</c> and fp32 <c>scales</c> <c>[N × ceil(K / block)]</c>.
/// </summary>
/// <remarks>
/// Symmetric, without zero points: per block of <see cref="BlockSize"/> weights along K,
/// scale = max|w| / (2^(bits-1) - 1) and q = round(w / scale) + 2^(bits-1), which is the kernel's default zero point
/// when no <c>zero_points</c> input is given. Transformer weights are close to zero-centred per block, so an asymmetric
/// zero point buys little accuracy and costs an extra tensor and a subtraction per block; the measured error is in
/// docs/serving.md. Block size 32 is the finest the kernels run fast at and keeps int4 error low (the common choice
/// of llama.cpp's Q4_0 and ONNX Runtime's own quantizer default).
/// </remarks>
internal static class WeightQuantizer
{
    /// <summary>Weights per quantization block along K.</summary>
    public const int BlockSize = 32;

    /// <summary>Blocks per row of K inputs.</summary>
    public static int BlocksPerRow(int k) => (k + BlockSize - 1) / BlockSize;

    /// <summary>Bytes per block.</summary>
    public static int BlobSize(int bits) => BlockSize * bits / 8;

    /// <summary>Quantizes row-major <paramref name="weights"/> <c>[n, k]</c> into <paramref name="packed"/> and <paramref name="scales"/>.</summary>
    public static void Quantize(ReadOnlySpan<float> weights, int n, int k, int bits, Span<byte> packed, Span<float> scales)
    {
        if (bits is not (4 or 8))
        {
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "Only 4 and 8 bits are supported.");
        }
        var blocks = BlocksPerRow(k);
        var blob = BlobSize(bits);
        var zero = 1 << (bits - 1);
        var maxQ = zero - 1;
        Span<int> q = stackalloc int[BlockSize];
        for (var row = 0; row < n; row++)
        {
            var w = weights.Slice(row * k, k);
            for (var b = 0; b < blocks; b++)
            {
                var start = b * BlockSize;
                var count = Math.Min(BlockSize, k - start);
                var block = w.Slice(start, count);
                var absMax = 0f;
                foreach (var value in block)
                {
                    absMax = MathF.Max(absMax, MathF.Abs(value));
                }
                var scale = absMax / maxQ;
                var inverse = scale == 0 ? 0f : 1f / scale;
                for (var i = 0; i < BlockSize; i++)
                {
                    // Padding past K quantizes to the zero point, i.e. dequantizes to 0.
                    q[i] = i < count ? Math.Clamp((int)MathF.Round(block[i] * inverse), -zero, maxQ) + zero : zero;
                }
                scales[(row * blocks) + b] = scale;
                var destination = packed.Slice(((row * blocks) + b) * blob, blob);
                if (bits == 8)
                {
                    for (var i = 0; i < BlockSize; i++)
                    {
                        destination[i] = (byte)q[i];
                    }
                }
                else
                {
                    // Two weights per byte, the even one in the low nibble.
                    for (var i = 0; i < BlockSize; i += 2)
                    {
                        destination[i / 2] = (byte)(q[i] | (q[i + 1] << 4));
                    }
                }
            }
        }
    }
}
