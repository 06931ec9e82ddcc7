using System.Runtime.InteropServices;
using Google.Protobuf;
using LMCache.Inference.Models.Graph;
using LMCache.Inference.Onnx;
using Microsoft.ML.OnnxRuntime;
using Onnx;

namespace LMCache.Inference.Tests;

/// <summary>
/// Our block quantizer and ONNX Runtime's <c>MatMulNBits</c> CPU kernel agree: the kernel's output equals x times the
/// weights dequantized in C# from the same blocks (so packing, scales and the implicit zero point are all right),
/// and that dequantized matrix is within half a step of the original weights.
/// </summary>
public sealed class MatMulNBitsTests
{
    [Theory]
    [InlineData(4, 96, 40, 3)]
    [InlineData(8, 96, 40, 3)]
    [InlineData(4, 80, 24, 1)]   // K not a multiple of the block: the last block is padded
    [InlineData(8, 80, 24, 5)]
    public void Kernel_output_equals_the_dequantized_weights_product(int bits, int k, int n, int m)
    {
        var random = new Random(1234 + bits + k);
        var weights = new float[n * k];
        for (var i = 0; i < weights.Length; i++)
        {
            weights[i] = (float)((random.NextDouble() * 2) - 1) * (i % 7 == 0 ? 3f : 0.5f);
        }
        var x = new float[m * k];
        for (var i = 0; i < x.Length; i++)
        {
            x[i] = (float)((random.NextDouble() * 2) - 1);
        }
        var blocks = WeightQuantizer.BlocksPerRow(k);
        var blob = WeightQuantizer.BlobSize(bits);
        // Pinned: ONNX Runtime reads them as in-memory external data.
        var packed = GC.AllocateArray<byte>(n * blocks * blob, pinned: true);
        var scales = GC.AllocateArray<float>(n * blocks, pinned: true);
        var zeroPoints = GC.AllocateArray<byte>(n * WeightQuantizer.ZeroPointBytesPerRow(k), pinned: true);
        WeightQuantizer.Quantize(weights, n, k, bits, packed, scales, bits == 4 ? zeroPoints : []);

        // Dequantize in C# from the documented layout.
        var dequantized = new float[n * k];
        for (var row = 0; row < n; row++)
        {
            for (var col = 0; col < k; col++)
            {
                var b = col / WeightQuantizer.BlockSize;
                var i = col % WeightQuantizer.BlockSize;
                var offset = ((row * blocks) + b) * blob;
                var zero = bits == 8 ? 128 : (zeroPoints[(row * WeightQuantizer.ZeroPointBytesPerRow(k)) + (b / 2)] >> (b % 2 == 0 ? 0 : 4)) & 0xF;
                var q = bits == 8 ? packed[offset + i] : (packed[offset + (i / 2)] >> (i % 2 == 0 ? 0 : 4)) & 0xF;
                dequantized[(row * k) + col] = (q - zero) * scales[(row * blocks) + b];
                Assert.True(Math.Abs(dequantized[(row * k) + col] - weights[(row * k) + col]) <= (scales[(row * blocks) + b] * 0.5f) + 1e-6f);
            }
        }

        var g = new OnnxGraphWriter("matmulnbits");
        g.Input("x", TensorProto.Types.DataType.Float, "m", k);
        g.Output("y", TensorProto.Types.DataType.Float, "m", n);
        {
            var packedPointer = Marshal.UnsafeAddrOfPinnedArrayElement(packed, 0);
            var scalesPointer = Marshal.UnsafeAddrOfPinnedArrayElement(scales, 0);
            var zeroPointer = Marshal.UnsafeAddrOfPinnedArrayElement(zeroPoints, 0);
            g.Weight("w", TensorProto.Types.DataType.Uint8, "packed.bin", 0, packed.Length, n, blocks, blob);
            g.Weight("s", TensorProto.Types.DataType.Float, "scales.bin", 0, scales.Length * 4L, (long)n * blocks);
            g.Weight("z", TensorProto.Types.DataType.Uint8, "zero.bin", 0, zeroPoints.Length, zeroPoints.Length);
            g.Node("MatMulNBits", "com.microsoft", bits == 4 ? ["x", "w", "s", "z"] : ["x", "w", "s"], ["y"], ("K", (long)k), ("N", (long)n), ("bits", (long)bits), ("block_size", (long)WeightQuantizer.BlockSize));
            var model = new ModelProto
            {
                IrVersion = 8,
                Graph = g.Graph,
                OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 17 }, new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 } },
            };
            using var options = new SessionOptions();
            OrtNativeApi.AddExternalInitializersFromFilesInMemory(options, ["packed.bin", "scales.bin", "zero.bin"], [packedPointer, scalesPointer, zeroPointer], [packed.Length, scales.Length * 4L, zeroPoints.Length]);
            using var session = new InferenceSession(model.ToByteArray(), options);
            using var input = OrtValue.CreateTensorValueFromMemory(x, [m, k]);
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, ["x"], [input], ["y"]);
            var y = outputs[0].GetTensorDataAsSpan<float>();
            for (var r = 0; r < m; r++)
            {
                for (var c = 0; c < n; c++)
                {
                    var expected = 0.0;
                    for (var i = 0; i < k; i++)
                    {
                        expected += x[(r * k) + i] * dequantized[(c * k) + i];
                    }
                    Assert.True(Math.Abs(expected - y[(r * n) + c]) <= 1e-4 * Math.Max(1, Math.Abs(expected)),
                        $"{bits}-bit: y[{r},{c}] = {y[(r * n) + c]} but x·dequant(W) = {expected}");
                }
            }
        }
    }
}
