using LMCache.Core.Configuration;
using LMCache.Core.Memory;
using LMCache.Hosting;
using LMCache.Server;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.Remote;
using LMCache.Testing;
using LMCache.Testing.Redis;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Serde.CacheGen.Tests;

/// <summary><c>remote_serde: cachegen</c> end to end over real remote stores: a redis-server process and the lm:// server.</summary>
[IntegrationTest]
public sealed class RealConnectorTests
{
    private static readonly MemoryObjectMetadata s_chunk = new(KvShape.Kv2Ltd(4, 256, 64), KvDType.BFloat16, MemoryFormat.KV2LTD);

    [Theory]
    [InlineData("redis")]
    [InlineData("lm")]
    public async Task Chunks_written_by_one_engine_come_back_decoded_in_another(string store)
    {
        var ct = TestContext.Current.CancellationToken;
        if (store == "redis" && RedisProcess.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
        await using var redis = store == "redis" ? await RedisProcess.StartServerAsync(cancellationToken: ct) : null;
        await using var lm = store == "lm" ? new LmServer(new LmServerOptions { Host = "127.0.0.1", Port = 0, CapacityBytes = 64L << 20 }) : null;
        var url = redis is not null ? $"redis://127.0.0.1:{redis.Port}" : $"lm://127.0.0.1:{(await lm!.StartAsync(ct)).Port}";
        var options = new LMCacheEngineOptions { RemoteUrl = url, RemoteSerde = CacheGenSerde.SerdeName };
        var context = new RemoteConnectorContext(options, NullLoggerFactory.Instance);
        var registry = LMCacheBuiltIns.CreateConnectorRegistry();
        var serde = CacheGenSerde.Create(options);
        var keys = Enumerable.Range(0, 3).Select(i => TestChunks.Key(i, "cachegen/" + store)).ToArray();

        // What each chunk must decode to: the codec's own round trip (lossy, deterministic).
        var expected = new byte[keys.Length][];
        using (var writerCpu = new LocalCpuBackend(64L << 20))
        {
            await using var writer = new RemoteBackend(registry.Create(url, context), serde, writerCpu, RemoteBackendOptions.FromEngineOptions(options));
            for (var i = 0; i < keys.Length; i++)
            {
                using var chunk = KvData.Chunk(writerCpu, s_chunk.DType, 4, 256, 64, seed: 50 + i);
                using (var blob = serde.Serialize(chunk, writerCpu)!)
                using (var back = serde.Deserialize(blob, writerCpu)!)
                {
                    expected[i] = back.Span.ToArray();
                }
                writer.SubmitPut(keys[i], chunk);
            }
            await writer.FlushAsync(ct);
        }

        var connector = registry.Create(url, context);
        using var readerCpu = new LocalCpuBackend(64L << 20);
        await using var reader = new RemoteBackend(connector, serde, readerCpu, RemoteBackendOptions.FromEngineOptions(options));
        if (connector is IRemoteKeyspace keyspace)
        {
            // The original's layout: the metadata of each entry says BINARY_BUFFER, as cachegen blobs do there.
            var listed = 0;
            await foreach (var entry in keyspace.ListAsync(null, ct))
            {
                listed++;
                Assert.Equal(MemoryFormat.BinaryBuffer, entry.Layout?.Format);
                Assert.True(entry.PayloadBytes < s_chunk.ByteLength, $"{entry.Key}: {entry.PayloadBytes} bytes is not compressed");
            }
            Assert.Equal(keys.Length, listed);
        }
        var read = new MemoryObject?[keys.Length];
        Assert.Equal(keys.Length, await reader.GetPrefixAsync(keys, read, ct));
        for (var i = 0; i < keys.Length; i++)
        {
            Assert.Equal(s_chunk, read[i]!.Metadata);
            Assert.Equal(expected[i], read[i]!.Span.ToArray());
            read[i]!.Release();
        }
        Assert.Equal(0, readerCpu.OutstandingObjects);
    }
}
