using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using LMCache.Core.Memory;
using LMCache.Serde.CacheGen;

namespace LMCache.Benchmarks.CacheGen;

/// <summary>
/// The cachegen serde on one thread: a synthetic bf16 chunk of Llama-3.1-8B's width (8 layers of <c>[256, 1024]</c>
/// K and V, 8 MiB; per-channel scales, outlier channels, correlated tokens), with the original's bins (all 32: fewer
/// than 10 layers). Baseline: copying the raw chunk, what the naive serde's remote put amounts to.
/// </summary>
[BenchmarkCategory("CacheGen")]
public class CacheGenBenchmarks
{
    private const int Layers = 8;
    private const int Tokens = 256;
    private const int Hidden = 1024;
    private readonly CacheGenSerde _serde = new(new CacheGenOptions { Threads = 1 });
    private NativeSlabAllocator _allocator = null!;
    private MemoryObject _chunk = null!;
    private MemoryObject _blob = null!;
    private byte[] _copy = [];

    [GlobalSetup]
    public void Setup()
    {
        _allocator = new NativeSlabAllocator(256L << 20);
        if (!_allocator.TryAllocate(new MemoryObjectMetadata(KvShape.Kv2Ltd(Layers, Tokens, Hidden), KvDType.BFloat16, MemoryFormat.KV2LTD), out var chunk))
        {
            throw new InvalidOperationException("allocator too small");
        }
        _chunk = chunk;
        var values = MemoryMarshal.Cast<byte, ushort>(_chunk.Span);
        var random = new Random(1);
        for (var row = 0; row < 2 * Layers; row++)
        {
            var scale = new float[Hidden];
            for (var c = 0; c < Hidden; c++)
            {
                scale[c] = (float)Math.Exp(random.NextDouble() * 2 - 1) * (random.Next(100) == 0 ? 20f : 1f);
            }
            var previous = new float[Hidden];
            for (var t = 0; t < Tokens; t++)
            {
                for (var c = 0; c < Hidden; c++)
                {
                    previous[c] = (0.8f * previous[c]) + (0.6f * (float)(random.NextDouble() * 2 - 1) * scale[c]);
                    var bits = BitConverter.SingleToUInt32Bits(previous[c]);
                    values[(((row * Tokens) + t) * Hidden) + c] = (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
                }
            }
        }
        _blob = _serde.Serialize(_chunk, _allocator)!;
        _copy = new byte[_chunk.Length];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _blob.Release();
        _chunk.Release();
        _allocator.Dispose();
    }

    [Benchmark(Baseline = true)]
    public void CopyRawChunk() => _chunk.Span.CopyTo(_copy);

    [Benchmark]
    public int Encode()
    {
        using var blob = _serde.Serialize(_chunk, _allocator)!;
        return blob.Length;
    }

    [Benchmark]
    public int Decode()
    {
        using var chunk = _serde.Deserialize(_blob, _allocator)!;
        return chunk.Length;
    }
}
