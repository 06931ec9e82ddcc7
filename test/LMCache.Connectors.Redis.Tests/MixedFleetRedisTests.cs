using System.Globalization;
using System.Text;
using LMCache.Core.Configuration;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Engine.Adapters;
using LMCache.Hosting;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Connectors.Redis.Tests;

/// <summary>
/// Mixed fleets on one Redis (issue #13): what our engine writes is found under the key text the original computes for
/// the same hash value — the Python side (test/python/original_keys.py, standard library only) renders the key as the
/// original's <c>to_string()</c> does (<c>format(int, 'x')</c>, no leading zeros) and reads the entries with its own RESP
/// client from a real redis-server.
/// </summary>
public sealed class MixedFleetRedisTests
{
    [Fact]
    public async Task Entries_our_engine_writes_are_found_under_the_key_text_the_original_computes()
    {
        TestSupport.RequireRedis();
        if (PythonScripts.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
        var ct = TestContext.Current.CancellationToken;
        await using var server = await RedisProcess.StartServerAsync(cancellationToken: ct);
        var layout = new KvLayout(NumLayers: 2, NumKvHeads: 2, HeadDim: 32, DType: KvDType.BFloat16);
        var options = new LMCacheEngineOptions
        {
            ChunkSize = 16,
            MaxLocalCpuSizeGib = 0.0625,
            RemoteUrl = $"redis://127.0.0.1:{server.Port}",
            RemoteSerde = "naive",
        };
        var scope = new KeyScope("vllm", "fleet/redis-model", 2, 1, layout.DType.ToKeyToken());
        await using var engine = new LMCacheEngineBuilder(options, scope, layout).Build();

        // A prompt one of whose chunk hashes starts with a zero nibble: the one-in-16 case where a fixed-width
        // spelling and the original's differ.
        int[] tokens = [];
        IReadOnlyList<(TokenChunk Chunk, CacheEngineKey Key)> chunks = [];
        for (var seed = 0; !chunks.Any(c => c.Chunk.Hash.ToString()[0] == '0'); seed++)
        {
            tokens = [.. Enumerable.Range(0, 64).Select(i => (i * 7919 + seed * 104729) % 32000)];
            chunks = engine.GetChunkKeys(tokens);
        }
        var prefill = new HostKvCache(layout, tokens.Length);
        prefill.FillDeterministic(0, tokens.Length, seed: 3);
        Assert.Equal(4, engine.Store(tokens, prefill).StoredChunks);
        await engine.FlushAsync(ct);

        var chunkBytes = 2 * layout.NumLayers * options.ChunkSize * layout.NumKvHeads * layout.HeadDim * 2;
        var lines = new StringBuilder();
        foreach (var (chunk, _) in chunks)
        {
            // The hash value as 64 hex digits; the Python side turns it into the original's key text itself.
            lines.Append(CultureInfo.InvariantCulture, $"vllm fleet/redis-model 2 1 {chunk.Hash} bfloat16 {chunkBytes}\n");
        }
        var output = await PythonScripts.RunAsync("original_keys.py", ["redis", "127.0.0.1", server.Port.ToString(CultureInfo.InvariantCulture)], lines.ToString(), ct);
        Assert.Contains("OK redis 4", output, StringComparison.Ordinal);
    }
}
