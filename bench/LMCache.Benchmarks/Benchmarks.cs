using BenchmarkDotNet.Attributes;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Engine.Adapters;
using LMCache.Storage.LocalCpu;

namespace LMCache.Benchmarks;

/// <summary>Chunk hashing: 4,096 tokens = 16 chunks of 256, prefix-chained sha256_cbor.</summary>
[BenchmarkCategory("Hashing")]
public class HashingBenchmarks
{
    private readonly ChunkedTokenDatabase _database = new(256, saveUnfullChunk: false, new Sha256CborChunkHasher());
    private readonly TokenChunk[] _chunks = new TokenChunk[16];
    private int[] _tokens = [];

    [GlobalSetup(Targets = [nameof(HashChunks), nameof(EncodeOnly)])]
    public void Setup()
    {
        var random = new Random(1);
        _tokens = Enumerable.Range(0, 4096).Select(_ => random.Next(0, 128_256)).ToArray();
    }

    private byte[][] _encoded = [];
    private readonly byte[] _digest = new byte[32];

    [GlobalSetup(Target = nameof(Sha256OverSameBytes))]
    public void SetupBaseline()
    {
        Setup();
        _database.GetChunks(_tokens, _chunks);
        var previous = _database.Hasher.InitialHash;
        var scratch = new byte[Sha256CborChunkHasher.MaxEncodedLength(256, null)];
        _encoded = new byte[_chunks.Length][];
        for (var i = 0; i < _chunks.Length; i++)
        {
            var length = Sha256CborChunkHasher.Encode(previous, _tokens.AsSpan(_chunks[i].Start, 256), null, scratch);
            _encoded[i] = scratch.AsSpan(0, length).ToArray();
            previous = _chunks[i].Hash;
        }
    }

    [Benchmark]
    public int HashChunks() => _database.GetChunks(_tokens, _chunks);

    private readonly byte[] _scratch = new byte[4096];

    [Benchmark]
    public int EncodeOnly()
    {
        var total = 0;
        var previous = _database.Hasher.InitialHash;
        for (var i = 0; i < 16; i++)
        {
            total += Sha256CborChunkHasher.Encode(previous, _tokens.AsSpan(i * 256, 256), null, _scratch);
        }
        return total;
    }

    /// <summary>The baseline: plain SHA-256 over exactly the bytes HashChunks digests.</summary>
    [Benchmark(Baseline = true)]
    public int Sha256OverSameBytes()
    {
        foreach (var bytes in _encoded)
        {
            System.Security.Cryptography.SHA256.HashData(bytes, _digest);
        }
        return _encoded.Length;
    }
}

/// <summary>The allocator's allocate/release cycle.</summary>
[BenchmarkCategory("Memory")]
public class AllocatorBenchmarks : IDisposable
{
    private readonly NativeSlabAllocator _allocator = new(64L << 20);
    private readonly MemoryObjectMetadata _chunk = new(KvShape.Kv2Ltd(32, 16, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD);

    [Benchmark]
    public void AllocateRelease()
    {
        _allocator.TryAllocate(_chunk, out var memoryObject);
        memoryObject!.Release();
    }

    public void Dispose()
    {
        _allocator.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>
/// The CPU tier's steady state on 2 MiB chunks: store (allocate, copy the engine's bytes in, insert, evict the oldest
/// entry) and retrieve (look up, copy out to the engine). Both must allocate 0 B of managed memory per chunk.
/// </summary>
[BenchmarkCategory("Storage")]
public class CpuTierBenchmarks : IDisposable
{
    private const int Keys = 64;
    private readonly LocalCpuBackend _cpu = new(256L << 20);
    private readonly MemoryObjectMetadata _chunk = new(KvShape.Kv2Ltd(32, 16, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD);
    private readonly CacheEngineKey[] _keys = new CacheEngineKey[Keys];
    private byte[] _engineBuffer = [];
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        _engineBuffer = new byte[_chunk.ByteLength];
        Random.Shared.NextBytes(_engineBuffer);
        var scope = new KeyScope("vllm", "bench/model");
        for (var i = 0; i < Keys; i++)
        {
            _keys[i] = scope.MakeKey(new ChunkHash(System.Security.Cryptography.SHA256.HashData(BitConverter.GetBytes(i))));
            Store(_keys[i]);
        }
    }

    [Benchmark]
    public void StoreWithEviction()
    {
        // Remove the oldest key and store it again: one insert and one eviction per call, as a full cache does.
        var key = _keys[_next];
        _next = (_next + 1) % Keys;
        _cpu.RemoveAsync(key).AsTask().GetAwaiter().GetResult();
        Store(key);
    }

    [Benchmark]
    public void Retrieve()
    {
        var chunk = _cpu.AcquireReference(_keys[_next])!;
        _next = (_next + 1) % Keys;
        chunk.Span.CopyTo(_engineBuffer);
        chunk.Release();
    }

    private void Store(CacheEngineKey key)
    {
        _cpu.TryAllocate(_chunk, out var chunk);
        _engineBuffer.AsSpan().CopyTo(chunk!.Span);
        _cpu.SubmitPut(key, chunk);
        chunk.Release();
    }

    public void Dispose()
    {
        _cpu.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>A whole request through the engine: 1,024 tokens (4 chunks) of a 4-layer model retrieved from CPU into host KV.</summary>
[BenchmarkCategory("Engine")]
public class EngineRetrieveBenchmarks : IAsyncDisposable
{
    private LMCacheEngine? _engine;
    private HostKvCache? _kv;
    private int[] _tokens = [];

    [GlobalSetup]
    public void Setup()
    {
        var layout = new KvLayout(4, 8, 128, KvDType.BFloat16);
        var options = new Core.Configuration.LMCacheEngineOptions { MaxLocalCpuSizeGib = 0.25 };
        _engine = LMCacheEngine.Create(options, new KeyScope("bench", "bench/model"), layout);
        _tokens = Enumerable.Range(0, 1024).ToArray();
        _kv = new HostKvCache(layout, 1024);
        _kv.FillDeterministic(0, 1024, 1);
        _engine.Store(_tokens, _kv);
    }

    [Benchmark]
    public int RetrieveFromCpu() => _engine!.RetrieveAsync(_tokens, _kv!).AsTask().GetAwaiter().GetResult().LoadedTokens;

    public async ValueTask DisposeAsync()
    {
        if (_engine is not null)
        {
            await _engine.DisposeAsync();
        }
        GC.SuppressFinalize(this);
    }
}
