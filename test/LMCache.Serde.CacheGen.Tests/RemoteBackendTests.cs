using System.Collections.Concurrent;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.Remote;
using LMCache.Testing;

namespace LMCache.Serde.CacheGen.Tests;

/// <summary>cachegen behind the real <see cref="RemoteBackend"/>, the path every remote connector goes through.</summary>
public sealed class RemoteBackendTests : IAsyncDisposable
{
    private readonly NativeSlabAllocator _allocator = new(64L << 20);

    public async ValueTask DisposeAsync()
    {
        await Task.Yield();
        Assert.Equal(0, _allocator.OutstandingObjects);
        _allocator.Dispose();
    }

    [Fact]
    public async Task Chunks_go_through_the_remote_tier_as_binary_buffers_and_corruption_is_a_miss()
    {
        var ct = TestContext.Current.CancellationToken;
        var store = new MemoryStore();
        var serde = new CacheGenSerde();
        var backend = new RemoteBackend(store, serde, _allocator, new RemoteBackendOptions());
        await using (backend.ConfigureAwait(false))
        {
            var key = TestChunks.Key(1);
            byte[] expected;
            using (var chunk = KvData.Chunk(_allocator, KvDType.BFloat16, 4, 256, 64, seed: 31))
            {
                using (var direct = serde.Serialize(chunk, _allocator)!)
                using (var back = serde.Deserialize(direct, _allocator)!)
                {
                    expected = back.Span.ToArray();
                }
                backend.SubmitPut(key, chunk);
                await backend.FlushAsync(ct);
            }

            var (metadata, bytes) = store.Entries[key.ToString()];
            Assert.Equal(MemoryObjectMetadata.Opaque(bytes.Length), metadata);
            Assert.True(bytes.Length < 2 * 4 * 256 * 64 * 2, "the stored blob is smaller than the raw chunk");

            using (var read = await backend.GetAsync(key, ct))
            {
                Assert.NotNull(read);
                Assert.Equal(new MemoryObjectMetadata(KvShape.Kv2Ltd(4, 256, 64), KvDType.BFloat16, MemoryFormat.KV2LTD), read.Metadata);
                Assert.Equal(expected, read.Span.ToArray());
            }

            bytes[bytes.Length / 2] ^= 0x10;
            Assert.Null(await backend.GetAsync(key, ct));
        }
    }

    /// <summary>A remote store in memory: keeps metadata and a copy of the payload, as the Redis connectors do.</summary>
    private sealed class MemoryStore : IRemoteConnector
    {
        public ConcurrentDictionary<string, (MemoryObjectMetadata Metadata, byte[] Bytes)> Entries { get; } = new(StringComparer.Ordinal);

        public string Description => "memory://";

        public RemoteCapabilities Capabilities => RemoteCapabilities.None;

        public ValueTask<int> ExistsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken)
        {
            var n = 0;
            while (n < keys.Length && Entries.ContainsKey(keys.Span[n].ToString()))
            {
                n++;
            }
            return ValueTask.FromResult(n);
        }

        public ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, IMemoryAllocator allocator, CancellationToken cancellationToken)
        {
            if (!Entries.TryGetValue(key.ToString(), out var entry) || !allocator.TryAllocate(entry.Metadata, out var result))
            {
                return ValueTask.FromResult<MemoryObject?>(null);
            }
            entry.Bytes.CopyTo(result.Span);
            return ValueTask.FromResult<MemoryObject?>(result);
        }

        public async ValueTask<int> GetPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, IMemoryAllocator allocator, CancellationToken cancellationToken)
        {
            var n = 0;
            for (; n < keys.Length; n++)
            {
                var item = await GetAsync(keys.Span[n], allocator, cancellationToken).ConfigureAwait(false);
                if (item is null)
                {
                    break;
                }
                destination.Span[n] = item;
            }
            return n;
        }

        public ValueTask PutAsync(CacheEngineKey key, MemoryObject payload, CancellationToken cancellationToken)
        {
            Entries[key.ToString()] = (payload.Metadata, payload.Span.ToArray());
            return ValueTask.CompletedTask;
        }

        public ValueTask<bool> PingAsync(CancellationToken cancellationToken) => ValueTask.FromResult(true);

        public ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken) => ValueTask.FromResult(Entries.TryRemove(key.ToString(), out _));

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
