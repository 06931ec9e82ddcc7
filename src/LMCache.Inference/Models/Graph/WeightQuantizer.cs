namespace LMCache.Inference.Models.Graph;

/// <summary>
/// Weight-only block quantization in the layout of ONNX Runtime's <c>com.microsoft.MatMulNBits</c>: a weight
/// <c>[N, K]</c> (the Hugging Face <c>[out, in]</c> layout as it is) becomes <c>B</c> uint8
/// <c>[N, ceil(K / block), block × bits / 8]</c> and fp32 <c>scales</c> <c>[N × ceil(K / block)]</c>.
/// </summary>
/// <remarks>
/// <para>int8 is symmetric, without zero points: per block of <see cref="BlockSize"/> weights along K,
/// scale = max|w| / 127 and q = round(w / scale) + 128, the kernel's default zero point when no <c>zero_points</c>
/// input is given. At 255 levels the symmetric grid loses nothing measurable and saves a tensor.</para>
/// <para>int4 is asymmetric, with a zero point per block: scale = (max - min) / 15 over the block's range (widened
/// to include 0), zero point = round(-min / scale), q = clamp(round(w / scale) + zero point, 0, 15). With only 16
/// levels, spending one on a sign that a skewed block does not use (symmetric absmax / 7) costs accuracy that the
/// measurements in docs/serving.md show.</para>
/// <para>Block size 32 is the finest block the kernels run fast at and keeps the int4 error low (llama.cpp's Q4_0 and
/// ONNX Runtime's own quantizer default use it too).</para>
/// </remarks>
internal static class WeightQuantizer
{
    /// <summary>Weights per quantization block along K.</summary>
    public const int BlockSize = 32;

    /// <summary>Blocks per row of K inputs.</summary>
    public static int BlocksPerRow(int k) => (k + BlockSize - 1) / BlockSize;

    /// <summary>Bytes per block.</summary>
    public static int BlobSize(int bits) => BlockSize * bits / 8;

    /// <summary>Bytes of int4 zero points per row (two blocks per byte).</summary>
    public static int ZeroPointBytesPerRow(int k) => (BlocksPerRow(k) + 1) / 2;

    /// <summary>
    /// Quantizes row-major <paramref name="weights"/> <c>[n, k]</c> into <paramref name="packed"/>,
    /// <paramref name="scales"/> and (4 bits only) <paramref name="zeroPoints"/> <c>[n × ZeroPointBytesPerRow]</c>.
    /// </summary>
    public static unsafe void Quantize(ReadOnlySpan<float> weights, int n, int k, int bits, Span<byte> packed, Span<float> scales, Span<byte> zeroPoints)
    {
        if (bits is not (4 or 8))
        {
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "Only 4 and 8 bits are supported.");
        }
        // Rows are independent: quantize them in parallel (a 1 B-parameter model has 1 B weights to round).
        fixed (float* w = weights)
        fixed (byte* p = packed)
        fixed (float* sc = scales)
        fixed (byte* z = zeroPoints)
        {
            var (wp, pp, sp, zp) = ((IntPtr)w, (IntPtr)p, (IntPtr)sc, (IntPtr)z);
            var blocks = BlocksPerRow(k);
            var rowsPerTask = Math.Max(1, 65536 / k);
            Parallel.For(0, (n + rowsPerTask - 1) / rowsPerTask, task =>
            {
                var first = task * rowsPerTask;
                var count = Math.Min(rowsPerTask, n - first);
                var zeroBytes = ZeroPointBytesPerRow(k);
                QuantizeRows(
                    new ReadOnlySpan<float>((float*)wp + ((long)first * k), count * k), count, k, bits,
                    new Span<byte>((byte*)pp + ((long)first * blocks * BlobSize(bits)), count * blocks * BlobSize(bits)),
                    new Span<float>((float*)sp + ((long)first * blocks), count * blocks),
                    bits == 4 ? new Span<byte>((byte*)zp + ((long)first * zeroBytes), count * zeroBytes) : []);
            });
        }
    }

    private static void QuantizeRows(ReadOnlySpan<float> weights, int n, int k, int bits, Span<byte> packed, Span<float> scales, Span<byte> zeroPoints)
    {
        var blocks = BlocksPerRow(k);
        var blob = BlobSize(bits);
        var zeroBytes = ZeroPointBytesPerRow(k);
        if (bits == 4)
        {
            zeroPoints[..(n * zeroBytes)].Clear();
        }
        Span<int> q = stackalloc int[BlockSize];
        for (var row = 0; row < n; row++)
        {
            var w = weights.Slice(row * k, k);
            for (var b = 0; b < blocks; b++)
            {
                var start = b * BlockSize;
                var count = Math.Min(BlockSize, k - start);
                var block = w.Slice(start, count);
                int zero;
                float scale;
                if (bits == 8)
                {
                    var absMax = 0f;
                    foreach (var value in block)
                    {
                        absMax = MathF.Max(absMax, MathF.Abs(value));
                    }
                    scale = absMax / 127f;
                    zero = 128;
                }
                else
                {
                    float min = 0f, max = 0f;
                    foreach (var value in block)
                    {
                        min = MathF.Min(min, value);
                        max = MathF.Max(max, value);
                    }
                    scale = (max - min) / 15f;
                    zero = scale == 0 ? 8 : Math.Clamp((int)MathF.Round(-min / scale), 0, 15);
                    zeroPoints[(row * zeroBytes) + (b / 2)] |= (byte)(zero << (b % 2 == 0 ? 0 : 4));
                }
                var inverse = scale == 0 ? 0f : 1f / scale;
                var maxQ = (1 << bits) - 1;
                for (var i = 0; i < BlockSize; i++)
                {
                    // Padding past K quantizes to the zero point, i.e. dequantizes to 0.
                    q[i] = i < count ? Math.Clamp((int)MathF.Round(block[i] * inverse) + zero, 0, maxQ) : zero;
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
