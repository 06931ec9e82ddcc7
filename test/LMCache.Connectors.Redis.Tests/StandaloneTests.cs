using System.IO.Hashing;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Core.Serde;
using LMCache.Storage.Remote;
using LMCache.Testing;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging.Testing;
using StackExchange.Redis;

namespace LMCache.Connectors.Redis.Tests;

/// <summary>Round trips, authentication, layout compatibility and invalid entries against one real redis-server.</summary>
[IntegrationTest]
public sealed class StandaloneTests(RedisServerFixture fixture) : IClassFixture<RedisServerFixture>
{
    public static TheoryData<string> Schemes => new() { "redis-password", "redis-acl-user", "valkey", "unix", "redis-db" };

    private string UrlFor(string form) => form switch
    {
        "redis-password" => $"redis://:{RedisServerFixture.DefaultPassword}@127.0.0.1:{fixture.Server.Port}",
        "redis-acl-user" => $"redis://{RedisServerFixture.User}:{RedisServerFixture.UserPassword}@127.0.0.1:{fixture.Server.Port}/0",
        "valkey" => $"valkey://{RedisServerFixture.User}:{RedisServerFixture.UserPassword}@127.0.0.1:{fixture.Server.Port}",
        "unix" => $"unix://{fixture.SocketPath}?password={RedisServerFixture.DefaultPassword}",
        "redis-db" => $"redis://:{RedisServerFixture.DefaultPassword}@127.0.0.1:{fixture.Server.Port}/2",
        _ => throw new ArgumentOutOfRangeException(nameof(form)),
    };

    [Theory]
    [MemberData(nameof(Schemes))]
    public async Task Round_trip_for_every_standalone_form(string form)
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        await using var connector = await TestSupport.ConnectedAsync(UrlFor(form));
        using var allocator = TestSupport.Allocator();
        var keys = Enumerable.Range(0, 4).Select(i => TestChunks.Key(i, "roundtrip/" + form)).ToArray();
        for (var i = 0; i < keys.Length; i++)
        {
            using var chunk = TestChunks.Create(allocator, 1000 + i);
            await connector.PutAsync(keys[i], chunk, ct);
        }

        Assert.Equal(4, await connector.ExistsPrefixAsync(keys, ct));
        var output = new MemoryObject?[4];
        Assert.Equal(4, await connector.GetPrefixAsync(keys, output, allocator, ct));
        for (var i = 0; i < 4; i++)
        {
            Assert.True(TestChunks.Matches(output[i]!, 1000 + i));
            Assert.Equal(TestChunks.SmallChunk(), output[i]!.Metadata);
            output[i]!.Release();
        }

        if (form == "redis-db")
        {
            await using var raw = await TestSupport.RawAsync(fixture.Server);
            Assert.True(await raw.GetDatabase(2).KeyExistsAsync(RedisConnector.MetadataKey(keys[0].ToString())));
            Assert.False(await raw.GetDatabase(0).KeyExistsAsync(RedisConnector.MetadataKey(keys[0].ToString())));
        }

        Assert.True(await connector.RemoveAsync(keys[0], ct));
        Assert.Equal(0, await connector.ExistsPrefixAsync(keys, ct));
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public async Task A_64_chunk_lookup_reaches_the_server_as_one_pipelined_burst()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        await using var connector = await TestSupport.ConnectedAsync(UrlFor("redis-password"));
        using var allocator = TestSupport.Allocator();
        var keys = Enumerable.Range(0, 64).Select(i => TestChunks.Key(i, "lookup/burst")).ToArray();
        for (var i = 0; i < keys.Length; i++)
        {
            using var chunk = TestChunks.Create(allocator, i);
            await connector.PutAsync(keys[i], chunk, ct);
        }
        await using var probe = await connector.OpenInfoProbeAsync(ct);

        // 64 EXISTS sent one round trip at a time would be 64 read events per lookup; one pipelined burst is 1 (2 where
        // the socket splits it).
        var perLookup = await probe.ReadEventsPerOperationAsync(async () =>
        {
            const int Lookups = 20;
            for (var i = 0; i < Lookups; i++)
            {
                Assert.Equal(64, await connector.ExistsPrefixAsync(keys, ct));
            }
            return Lookups;
        }, ct);

        Assert.NotNull(perLookup);
        Assert.InRange(perLookup.Value, 1, 3);
        foreach (var key in keys)
        {
            await connector.RemoveAsync(key, ct);
        }
    }

    [Theory]
    [InlineData(0L)]            // one payload ahead at most
    [InlineData(8L << 20)]      // the default window: every payload at once
    public async Task Prefix_operations_stop_at_the_first_missing_chunk_and_release_the_rest(long readWindow)
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        var options = TestSupport.Options();
        options.ReadWindowBytes = readWindow;
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url, options: options);
        using var allocator = TestSupport.Allocator();
        var keys = Enumerable.Range(0, 10).Select(i => TestChunks.Key(i, "prefix" + readWindow)).ToArray();
        for (var i = 0; i < keys.Length; i++)
        {
            if (i == 6)
            {
                continue;
            }
            using var chunk = TestChunks.Create(allocator, i);
            await connector.PutAsync(keys[i], chunk, ct);
        }
        Assert.Equal(6, await connector.ExistsPrefixAsync(keys, ct));
        var output = new MemoryObject?[10];
        Assert.Equal(6, await connector.GetPrefixAsync(keys, output, allocator, ct));
        Assert.All(output[6..], Assert.Null);
        for (var i = 0; i < 6; i++)
        {
            Assert.True(TestChunks.Matches(output[i]!, i));
            output[i]!.Release();
        }
        Assert.Equal(0, allocator.OutstandingObjects);
        Assert.Null(await connector.GetAsync(keys[6], allocator, ct));
    }

    [Fact]
    public async Task Four_MiB_chunks_round_trip_through_the_read_window()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url);
        using var allocator = TestSupport.Allocator(96L << 20);
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(32, 32, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD);
        Assert.Equal(4L << 20, metadata.ByteLength);
        // The first chunk is 2 MiB: its payload rides with the metadata GETs before any size is known, and its reply
        // can take no 4 MiB claim, so the claims line up with chunks 1 to 5.
        var first = new MemoryObjectMetadata(KvShape.Kv2Ltd(16, 32, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD);
        var keys = Enumerable.Range(0, 6).Select(i => TestChunks.Key(i, "large")).ToArray();
        for (var i = 0; i < keys.Length; i++)
        {
            using var chunk = TestChunks.Create(allocator, 900 + i, i == 0 ? first : metadata);
            await connector.PutAsync(keys[i], chunk, ct);
        }
        var output = new MemoryObject?[6];
        using var directReads = new MetricCollector<long>(null, "LMCache.Connectors.Redis", "lmcache.redis.direct_reads");
        Assert.Equal(6, await connector.GetPrefixAsync(keys, output, allocator, ct));
        for (var i = 0; i < 6; i++)
        {
            Assert.Equal(i == 0 ? first : metadata, output[i]!.Metadata);
            Assert.True(TestChunks.Matches(output[i]!, 900 + i));
            output[i]!.Release();
        }
        Assert.Equal(5, DirectReads(directReads));   // chunks 1 to 5 landed straight in chunk memory; chunk 0 was copied
        Assert.Equal(0, connector.PendingLeaseClaims);

        // A second read starting at chunk 1: its first payload is claimed with the size of the last one read (4 MiB),
        // so all five land directly.
        Assert.Equal(5, await connector.GetPrefixAsync(keys.AsMemory(1), output, allocator, ct));
        for (var i = 0; i < 5; i++)
        {
            Assert.True(TestChunks.Matches(output[i]!, 901 + i));
            output[i]!.Release();
        }
        Assert.Equal(10, DirectReads(directReads));
        Assert.Equal(0, connector.PendingLeaseClaims);
        foreach (var key in keys)
        {
            await connector.RemoveAsync(key, ct);
        }
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public async Task A_corrupted_payload_read_straight_into_chunk_memory_is_a_miss_and_its_memory_is_released()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        await using var raw = await TestSupport.RawAsync(fixture.Server);
        var db = raw.GetDatabase();
        var logs = new FakeLogCollector();
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url, logs);
        using var allocator = TestSupport.Allocator(32L << 20);
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(8, 32, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD);   // 1 MiB
        // The first chunk is smaller, so its reply (sent before any claim exists) can never take a 1 MiB claim and the
        // claims line up with chunks 1, 2 and 3.
        var first = new MemoryObjectMetadata(KvShape.Kv2Ltd(1, 8, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD);
        var keys = Enumerable.Range(0, 4).Select(i => TestChunks.Key(i, "direct-corrupt")).ToArray();
        for (var i = 0; i < keys.Length; i++)
        {
            using var chunk = TestChunks.Create(allocator, 700 + i, i == 0 ? first : metadata);
            await connector.PutAsync(keys[i], chunk, ct);
        }
        var payloadKey = RedisConnector.PayloadKey(keys[2].ToString());
        var original = (byte[])(await db.StringGetRangeAsync(payloadKey, 4096, 4096))!;
        await db.StringSetRangeAsync(payloadKey, 4096, new[] { (byte)(original[0] ^ 0x01) });

        var output = new MemoryObject?[4];
        using var directReads = new MetricCollector<long>(null, "LMCache.Connectors.Redis", "lmcache.redis.direct_reads");
        Assert.Equal(2, await connector.GetPrefixAsync(keys, output, allocator, ct));
        Assert.True(TestChunks.Matches(output[0]!, 700));
        Assert.True(TestChunks.Matches(output[1]!, 701));
        Assert.Null(output[2]);
        Assert.Equal(1, DirectReads(directReads));   // chunk 1; chunk 2 arrived the same way but failed its checksum
        output[0]!.Release();
        output[1]!.Release();
        Assert.Equal(1, logs.Hits(3106));
        // Chunk 3's lease (issued before chunk 2 was checked) is given back when it arrives; nothing stays allocated.
        await TestSupport.EventuallyAsync(() => Task.FromResult(allocator.OutstandingObjects == 0), "every chunk buffer released");
        Assert.Equal(0, connector.PendingLeaseClaims);
        await TestSupport.EventuallyAsync(async () => !await db.KeyExistsAsync(payloadKey), "the corrupted entry removed");
        foreach (var key in keys)
        {
            await connector.RemoveAsync(key, ct);
        }
    }


    [Fact]
    public async Task Through_the_remote_backend_puts_are_queued_and_reads_round_trip()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var backend = new RemoteBackend(await TestSupport.ConnectedAsync(fixture.Url), new NaiveSerde(), allocator, TestSupport.BackendOptions());
        var keys = Enumerable.Range(0, 8).Select(i => TestChunks.Key(i, "backend")).ToArray();
        for (var i = 0; i < keys.Length; i++)
        {
            using var chunk = TestChunks.Create(allocator, 50 + i);
            backend.SubmitPut(keys[i], chunk);
        }
        await backend.FlushAsync(ct);
        Assert.Equal(8, await backend.ContainsPrefixAsync(keys, ct));
        var output = new MemoryObject?[8];
        Assert.Equal(8, await backend.GetPrefixAsync(keys, output, ct));
        for (var i = 0; i < 8; i++)
        {
            Assert.True(TestChunks.Matches(output[i]!, 50 + i));
            output[i]!.Release();
        }
        Assert.Equal(0, backend.Statistics.PutsDropped);
    }

    [Fact]
    public async Task Wrong_password_is_a_clear_error_and_every_operation_misses()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        var logs = new FakeLogCollector();
        using var allocator = TestSupport.Allocator();
        var connector = TestSupport.Connect($"redis://{RedisServerFixture.User}:wrong@127.0.0.1:{fixture.Server.Port}", logs);
        await using var backend = new RemoteBackend(connector, new NaiveSerde(), allocator, TestSupport.BackendOptions());
        var key = TestChunks.Key(1, "wrongpw");
        using (var chunk = TestChunks.Create(allocator, 1))
        {
            backend.SubmitPut(key, chunk);
        }
        await backend.FlushAsync(ct);
        Assert.Equal(0, await backend.ContainsPrefixAsync(new[] { key }, ct));
        Assert.Null(await backend.GetAsync(key, ct));
        await TestSupport.EventuallyAsync(() => Task.FromResult(logs.Hits(3103) > 0), "an authentication error in the log", TimeSpan.FromSeconds(10), logs.Messages);
        var message = logs.GetSnapshot().First(r => r.Id.Id == 3103).Message;
        Assert.Contains("authentication failed", message, StringComparison.Ordinal);
        Assert.DoesNotContain("wrong@", message, StringComparison.Ordinal);
        Assert.Equal(0, allocator.OutstandingObjects);

        await using var raw = await TestSupport.RawAsync(fixture.Server);
        Assert.False(await raw.GetDatabase().KeyExistsAsync(RedisConnector.PayloadKey(key.ToString())));
    }

    [Fact]
    public async Task Puts_write_the_original_layout_payload_first_with_a_checksum_trailer()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var raw = await TestSupport.RawAsync(fixture.Server);
        var db = raw.GetDatabase();
        var key = TestChunks.Key(7, "layout");
        using var chunk = TestChunks.Create(allocator, 7);

        await using (var connector = await TestSupport.ConnectedAsync(fixture.Url))
        {
            await connector.PutAsync(key, chunk, ct);
        }
        var payload = (byte[])(await db.StringGetAsync(key + RedisConnector.PayloadSuffix))!;
        var metadata = (byte[])(await db.StringGetAsync(key + RedisConnector.MetadataSuffix))!;
        Assert.Equal(chunk.Span.ToArray(), payload);
        Assert.Equal(44, metadata.Length);
        var expected = new byte[28];
        RemoteMetadata.For(chunk.Metadata, chunk.Length, null).Write(expected);
        Assert.Equal(expected, metadata[..28]);
        Assert.Equal(2, metadata[32]);   // trailer version 2: the checksum binds the key
        Assert.Equal(RemoteMetadata.BindToKey(XxHash3.HashToUInt64(payload), key.ToString()), BitConverter.ToUInt64(metadata, 36));

        // Without the checksum: exactly the original's 28 bytes, written together with the payload (one MSET).
        var options = TestSupport.Options();
        options.WriteChecksum = false;
        using var other = TestChunks.Create(allocator, 8);
        await using (var connector = await TestSupport.ConnectedAsync(fixture.Url, options: options))
        {
            await connector.PutAsync(key, other, ct);
        }
        Assert.Equal(expected, (byte[])(await db.StringGetAsync(key + RedisConnector.MetadataSuffix))!);
        Assert.Equal(other.Span.ToArray(), (byte[])(await db.StringGetAsync(key + RedisConnector.PayloadSuffix))!);
    }

    [Fact]
    public async Task Entries_written_with_the_originals_layout_are_read()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var raw = await TestSupport.RawAsync(fixture.Server);
        var db = raw.GetDatabase();
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url);

        // Mid-2025 6-field key with an int hash rendered by format(int, 'x') (negative) and a tag, bf16 KV_2LTD chunk.
        var text = "vllm@meta-llama/Llama-3.1-8B-Instruct@1@0@-1a2b3c@bfloat16@lang%en";
        var key = CacheEngineKey.Parse(text);
        Assert.Equal(text, key.ToString());
        var shape = new KvShape(2, 2, 16, 64);
        var bytes = new byte[2 * 2 * 16 * 64 * 2];
        new Random(99).NextBytes(bytes);
        await WriteOriginalAsync(db, text, bytes, fmt: 1, dtypeCode: 3, shape);
        var read = await connector.GetAsync(key, allocator, ct);
        Assert.NotNull(read);
        Assert.Equal(new MemoryObjectMetadata(shape, KvDType.BFloat16, MemoryFormat.KV2LTD), read.Metadata);
        Assert.Equal(bytes, read.Span.ToArray());
        read.Release();

        // dtype code 1 (the original's other float16 entry), 5-field key.
        var halfKey = TestChunks.Key(3, "orig-half");
        await WriteOriginalAsync(db, halfKey.ToString(), bytes, fmt: 1, dtypeCode: 1, shape);
        read = await connector.GetAsync(halfKey, allocator, ct);
        Assert.NotNull(read);
        Assert.Equal(KvDType.Float16, read.Metadata.DType);
        read.Release();

        // A partial last chunk stored under full-chunk metadata: 5 of 16 tokens.
        var partialKey = TestChunks.Key(4, "orig-partial");
        var partial = bytes.AsSpan(0, 2 * 2 * 5 * 64 * 2).ToArray();
        await WriteOriginalAsync(db, partialKey.ToString(), partial, fmt: 1, dtypeCode: 3, shape, length: partial.Length);
        read = await connector.GetAsync(partialKey, allocator, ct);
        Assert.NotNull(read);
        Assert.Equal(new KvShape(2, 2, 5, 64), read.Metadata.Shape);
        Assert.Equal(partial, read.Span.ToArray());
        read.Release();

        // A cachegen-style opaque buffer: BINARY_BUFFER, dtype 0, shape [n,0,0,0].
        var opaqueKey = TestChunks.Key(5, "orig-opaque");
        await WriteOriginalAsync(db, opaqueKey.ToString(), bytes[..1000], fmt: 5, dtypeCode: 0, KvShape.Bytes(1000));
        read = await connector.GetAsync(opaqueKey, allocator, ct);
        Assert.NotNull(read);
        Assert.Equal(MemoryObjectMetadata.Opaque(1000), read.Metadata);
        read.Release();
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    private static long DirectReads(MetricCollector<long> collector) => collector.GetMeasurementSnapshot().Sum(m => m.Value);

    public static TheoryData<string> Damage => new()
    {
        "corrupted-payload", "length-field", "dtype-code", "metadata-size", "trailer-magic", "key-dtype", "truncated-payload",
    };

    [Theory]
    [MemberData(nameof(Damage))]
    public async Task Damaged_entries_are_misses_and_are_removed(string damage)
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var raw = await TestSupport.RawAsync(fixture.Server);
        var db = raw.GetDatabase();
        var logs = new FakeLogCollector();
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url, logs);
        var key = damage == "key-dtype" ? CacheEngineKey.Parse("vllm@damage@1@0@abcdef@half") : TestChunks.Key(11, "damage/" + damage);
        var name = key.ToString();
        using (var chunk = TestChunks.Create(allocator, 11))
        {
            await connector.PutAsync(key, chunk, ct);
        }
        var payloadKey = RedisConnector.PayloadKey(name);
        var metadataKey = RedisConnector.MetadataKey(name);
        var metadata = (byte[])(await db.StringGetAsync(metadataKey))!;
        switch (damage)
        {
            case "corrupted-payload":
                var original = (byte[])(await db.StringGetRangeAsync(payloadKey, 100, 100))!;
                await db.StringSetRangeAsync(payloadKey, 100, new[] { (byte)(original[0] ^ 0x40) });
                break;
            case "length-field":
                BitConverter.TryWriteBytes(metadata.AsSpan(0, 4), BitConverter.ToInt32(metadata) - 512);
                await db.StringSetAsync(metadataKey, metadata);
                break;
            case "dtype-code":
                metadata[8] = 42;
                await db.StringSetAsync(metadataKey, metadata);
                break;
            case "metadata-size":
                await db.StringSetAsync(metadataKey, metadata[..30]);
                break;
            case "trailer-magic":
                metadata[30] ^= 0xFF;
                await db.StringSetAsync(metadataKey, metadata);
                break;
            case "key-dtype":
                // The key says half, the metadata bf16: written by hand with the original's 28 bytes.
                await db.StringSetAsync(metadataKey, metadata[..28]);
                break;
            case "truncated-payload":
                var full = (byte[])(await db.StringGetAsync(payloadKey))!;
                await db.StringSetAsync(payloadKey, full[..^512]);
                await db.StringSetAsync(metadataKey, metadata[..28]); // original layout: no checksum to catch it
                break;
        }

        Assert.Null(await connector.GetAsync(key, allocator, ct));
        Assert.Equal(0, allocator.OutstandingObjects);
        Assert.Equal(1, logs.Hits(3106));
        await TestSupport.EventuallyAsync(async () => !await db.KeyExistsAsync(payloadKey) && !await db.KeyExistsAsync(metadataKey), "both keys removed");
        Assert.Equal(0, await connector.ExistsPrefixAsync(new[] { key }, ct));
    }

    [Fact]
    public async Task Metadata_without_payload_is_a_miss_and_is_removed()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var raw = await TestSupport.RawAsync(fixture.Server);
        var db = raw.GetDatabase();
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url);
        var key = TestChunks.Key(21, "half-evicted");
        using (var chunk = TestChunks.Create(allocator, 21))
        {
            await connector.PutAsync(key, chunk, ct);
        }
        await db.KeyDeleteAsync(RedisConnector.PayloadKey(key.ToString()));
        Assert.Equal(1, await connector.ExistsPrefixAsync(new[] { key }, ct)); // lookup sees the metadata, as the original does
        Assert.Null(await connector.GetAsync(key, allocator, ct));
        await TestSupport.EventuallyAsync(async () => !await db.KeyExistsAsync(RedisConnector.MetadataKey(key.ToString())), "metadata removed");
        Assert.Equal(0, await connector.ExistsPrefixAsync(new[] { key }, ct));
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public async Task Payload_without_metadata_is_a_miss_and_is_removed()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var raw = await TestSupport.RawAsync(fixture.Server);
        var db = raw.GetDatabase();
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url);
        var key = TestChunks.Key(22, "half-evicted");
        using (var chunk = TestChunks.Create(allocator, 22))
        {
            await connector.PutAsync(key, chunk, ct);
        }
        await db.KeyDeleteAsync(RedisConnector.MetadataKey(key.ToString()));
        Assert.Equal(0, await connector.ExistsPrefixAsync(new[] { key }, ct));
        Assert.Null(await connector.GetAsync(key, allocator, ct));
        await TestSupport.EventuallyAsync(async () => !await db.KeyExistsAsync(RedisConnector.PayloadKey(key.ToString())), "payload removed");
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public async Task A_full_allocator_is_a_miss_without_removing_the_entry()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var big = TestSupport.Allocator();
        using var tiny = new NativeSlabAllocator(4096);
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url);
        var key = TestChunks.Key(23, "nomemory");
        using (var chunk = TestChunks.Create(big, 23))
        {
            await connector.PutAsync(key, chunk, ct);
        }
        Assert.Null(await connector.GetAsync(key, tiny, ct));
        Assert.Equal(1, await connector.ExistsPrefixAsync(new[] { key }, ct));
        using var read = await connector.GetAsync(key, big, ct);
        Assert.True(TestChunks.Matches(read!, 23));
    }

    [Fact]
    public async Task List_inspect_and_remove_see_complete_and_half_entries()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var raw = await TestSupport.RawAsync(fixture.Server);
        var db = raw.GetDatabase();
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url);
        var modelA = "list/a-" + Guid.NewGuid().ToString("N")[..6];
        var modelB = "list/b-" + Guid.NewGuid().ToString("N")[..6];
        for (var i = 0; i < 5; i++)
        {
            using var chunk = TestChunks.Create(allocator, i);
            await connector.PutAsync(TestChunks.Key(i, modelA), chunk, ct);
            await connector.PutAsync(TestChunks.Key(i, modelB), chunk, ct);
        }
        await db.KeyDeleteAsync(RedisConnector.MetadataKey(TestChunks.Key(3, modelB).ToString()));
        await db.KeyDeleteAsync(RedisConnector.PayloadKey(TestChunks.Key(4, modelB).ToString()));

        var listA = await connector.ListAsync(modelA, ct).ToListAsync(ct);
        Assert.Equal(5, listA.Count);
        Assert.All(listA, e => Assert.Equal(RemoteEntryState.Valid, e.State));
        Assert.All(listA, e => Assert.Equal(TestChunks.SmallChunk(), e.Layout));
        Assert.All(listA, e => Assert.Equal(TestChunks.SmallChunk().ByteLength, e.PayloadBytes));
        Assert.All(listA, e => Assert.True(e.HasChecksum));
        Assert.All(listA, e => Assert.Null(e.ChecksumMatches));   // listing does not read payloads

        var listB = await connector.ListAsync(modelB, ct).ToListAsync(ct);
        Assert.Equal(5, listB.Count);
        var orphanPayload = Assert.Single(listB, e => e.Key == TestChunks.Key(3, modelB).ToString());
        Assert.Equal(RemoteEntryState.PayloadWithoutMetadata, orphanPayload.State);
        Assert.Equal(TestChunks.SmallChunk().ByteLength, orphanPayload.PayloadBytes);
        Assert.Null(orphanPayload.Header);
        var orphanMetadata = Assert.Single(listB, e => e.Key == TestChunks.Key(4, modelB).ToString());
        Assert.Equal(RemoteEntryState.MetadataWithoutPayload, orphanMetadata.State);
        Assert.Null(orphanMetadata.PayloadBytes);
        Assert.Equal((int)TestChunks.SmallChunk().ByteLength, orphanMetadata.Header?.Length);   // the metadata still decodes
        Assert.Null(orphanMetadata.Layout);

        var all = await connector.ListAsync(null, ct).ToListAsync(ct);
        Assert.Superset(listA.Select(e => e.Key).ToHashSet(), all.Select(e => e.Key).ToHashSet());

        var report = await connector.InspectAsync(TestChunks.Key(0, modelA).ToString(), ct);
        Assert.True(report.IsValid);
        Assert.True(report.ChecksumMatches);
        Assert.Equal(44, report.MetadataBytes);
        Assert.Equal(TestChunks.SmallChunk(), report.Layout);
        Assert.Equal(RemoteEntryState.NotFound, (await connector.InspectAsync("vllm@nothing@1@0@00", ct)).State);

        // A flipped payload byte: the listing (lengths only) still calls it valid; inspect reads it and says why a read misses.
        var flipped = TestChunks.Key(1, modelA).ToString();
        var payload = (byte[])(await db.StringGetAsync(RedisConnector.PayloadKey(flipped)))!;
        payload[7] ^= 0x40;
        await db.StringSetAsync(RedisConnector.PayloadKey(flipped), payload);
        var corrupt = await connector.InspectAsync(flipped, ct);
        Assert.Equal(RemoteEntryState.ChecksumMismatch, corrupt.State);
        Assert.False(corrupt.ChecksumMatches);
        Assert.Null(corrupt.Layout);

        foreach (var entry in listB)
        {
            Assert.True(await connector.RemoveAsync(entry.Key, ct));
        }
        Assert.Empty(await connector.ListAsync(modelB, ct).ToListAsync(ct));
        Assert.Equal(5, (await connector.ListAsync(modelA, ct).ToListAsync(ct)).Count);
    }

    internal static async Task WriteOriginalAsync(IDatabase db, string key, byte[] payload, int fmt, int dtypeCode, KvShape shape, int? length = null)
    {
        // Exactly what the original's RedisConnector.put does: SET kv_bytes, then SET metadata (struct "iiiiiii").
        var metadata = new byte[28];
        new RemoteMetadata(length ?? payload.Length, fmt, dtypeCode, shape, null).Write(metadata);
        await db.StringSetAsync(key + "kv_bytes", payload);
        await db.StringSetAsync(key + "metadata", metadata);
    }
}
