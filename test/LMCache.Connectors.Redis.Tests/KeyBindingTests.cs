using System.IO.Hashing;
using LMCache.Testing;

namespace LMCache.Connectors.Redis.Tests;

/// <summary>
/// Issue #18 problem 8 against a real redis-server: the checksum binds the key (a pair moved to another key is a miss),
/// and entries nothing binds to their key (the original's 28 bytes, our earlier payload-only trailer) are read only when
/// <see cref="RedisConnectorOptions.AcceptUnbound"/> allows it.
/// </summary>
[IntegrationTest]
public sealed class KeyBindingTests(RedisServerFixture fixture) : IClassFixture<RedisServerFixture>
{
    [Fact]
    public async Task A_consistent_pair_copied_onto_another_key_is_a_miss()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var raw = await TestSupport.RawAsync(fixture.Server);
        var db = raw.GetDatabase();
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url);
        var a = TestChunks.Key(1, "binding/moved");
        var b = TestChunks.Key(2, "binding/moved");
        using (var chunkA = TestChunks.Create(allocator, 101))
        using (var chunkB = TestChunks.Create(allocator, 202))
        {
            await connector.PutAsync(a, chunkA, ct);
            await connector.PutAsync(b, chunkB, ct);
        }

        // Chunk B's payload and metadata, both intact and consistent with each other, written under chunk A's keys.
        await db.StringSetAsync(RedisConnector.PayloadKey(a.ToString()), await db.StringGetAsync(RedisConnector.PayloadKey(b.ToString())));
        await db.StringSetAsync(RedisConnector.MetadataKey(a.ToString()), await db.StringGetAsync(RedisConnector.MetadataKey(b.ToString())));

        var inspected = await connector.InspectAsync(a.ToString(), ct);
        Assert.False(inspected.ChecksumMatches);   // what `lmcache keys inspect` shows for it
        Assert.Null(await connector.GetAsync(a, allocator, ct));
        var stillB = await connector.GetAsync(b, allocator, ct);
        Assert.NotNull(stillB);
        Assert.True(TestChunks.Matches(stillB, 202));
        stillB.Release();
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_original_layout_entry_with_a_flipped_payload_byte(bool acceptUnbound)
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var raw = await TestSupport.RawAsync(fixture.Server);
        var db = raw.GetDatabase();
        var key = TestChunks.Key(acceptUnbound ? 11 : 12, "binding/original");
        var options = TestSupport.Options();
        options.WriteChecksum = false;   // the original's exact 28-byte layout, as its writers store it
        options.AcceptUnbound = acceptUnbound;
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url, options: options);
        using (var chunk = TestChunks.Create(allocator, 303))
        {
            await connector.PutAsync(key, chunk, ct);
        }
        Assert.Equal(28, (await db.StringGetAsync(RedisConnector.MetadataKey(key.ToString()))).Length());

        // Intact, it is a hit only when unbound entries are accepted.
        var intact = await connector.GetAsync(key, allocator, ct);
        Assert.Equal(acceptUnbound, intact is not null);
        intact?.Release();

        var payloadKey = RedisConnector.PayloadKey(key.ToString());
        var payload = (byte[])(await db.StringGetAsync(payloadKey))!;
        payload[payload.Length / 2] ^= 0x40;
        await db.StringSetAsync(payloadKey, payload);
        var read = await connector.GetAsync(key, allocator, ct);
        if (acceptUnbound)
        {
            // The documented trade: nothing in the original's layout can tell, so the flipped byte is served.
            Assert.NotNull(read);
            Assert.False(TestChunks.Matches(read, 303));
            read.Release();
        }
        else
        {
            Assert.Null(read);
            Assert.True(await db.KeyExistsAsync(payloadKey), "an unbound entry is skipped, not deleted (its writers still use it)");
        }
        var entry = await connector.InspectAsync(key.ToString(), ct);
        Assert.True(entry.IsUnprotected);
        Assert.Null(entry.Checksum);
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_entry_with_our_earlier_payload_only_trailer_is_verified_and_read_only_when_unbound_entries_are_accepted(bool acceptUnbound)
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var raw = await TestSupport.RawAsync(fixture.Server);
        var db = raw.GetDatabase();
        var key = TestChunks.Key(acceptUnbound ? 21 : 22, "binding/v1");
        var options = TestSupport.Options();
        options.AcceptUnbound = acceptUnbound;
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url, options: options);
        using (var chunk = TestChunks.Create(allocator, 404))
        {
            await connector.PutAsync(key, chunk, ct);
        }
        // Rewrite the trailer as the previous version wrote it: version 1, XxHash3-64 of the payload alone.
        var payload = (byte[])(await db.StringGetAsync(RedisConnector.PayloadKey(key.ToString())))!;
        var metadata = (byte[])(await db.StringGetAsync(RedisConnector.MetadataKey(key.ToString())))!;
        metadata[32] = 1;
        BitConverter.TryWriteBytes(metadata.AsSpan(36), XxHash3.HashToUInt64(payload));
        await db.StringSetAsync(RedisConnector.MetadataKey(key.ToString()), metadata);

        var read = await connector.GetAsync(key, allocator, ct);
        Assert.Equal(acceptUnbound, read is not null);
        if (read is not null)
        {
            Assert.True(TestChunks.Matches(read, 404));
            read.Release();
        }
        var entry = await connector.InspectAsync(key.ToString(), ct);
        Assert.True(entry.IsUnprotected);
        Assert.True(entry.ChecksumMatches);

        if (acceptUnbound)
        {
            // Accepted, it is still verified: a flipped payload byte is a miss.
            payload[10] ^= 0x01;
            await db.StringSetAsync(RedisConnector.PayloadKey(key.ToString()), payload);
            Assert.Null(await connector.GetAsync(key, allocator, ct));
        }
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public async Task Our_entries_say_they_are_bound_to_their_key()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        using var allocator = TestSupport.Allocator();
        await using var connector = await TestSupport.ConnectedAsync(fixture.Url);
        var key = TestChunks.Key(31, "binding/ours");
        using (var chunk = TestChunks.Create(allocator, 505))
        {
            await connector.PutAsync(key, chunk, ct);
        }
        var entry = await connector.InspectAsync(key.ToString(), ct);
        Assert.False(entry.IsUnprotected);
        Assert.True(entry.ChecksumCoversKey);
        Assert.True(entry.ChecksumMatches);
    }
}
