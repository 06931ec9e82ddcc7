using System.Runtime.InteropServices;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine.Adapters;
using LMCache.Serde.CacheGen;
using LMCache.Storage.LocalCpu;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Controller.Tests;

/// <summary>The long operations: compress/decompress with cachegen, check_finish, and moves to another instance.</summary>
[IntegrationTest]
public sealed class ControllerOperationTests
{
    private const string Cpu = LocalCpuBackend.BackendName;

    [Fact]
    public async Task Compressed_chunks_serve_the_cachegen_kv_and_decompress_restores_raw_chunks()
    {
        await using var cluster = await Cluster.StartAsync();
        var a = await cluster.AddInstanceAsync("instance-a");
        var prompt = Cluster.Prompt(512, start: 40_000);   // two chunks of 256
        var source = SmoothKv(prompt.Length);
        Assert.Equal(512, a.Engine.Store(prompt, source).StoredTokens);

        // What cachegen makes of each chunk: a retrieve after compress must return exactly this (lossy, but the codec's own output).
        var keys = a.Engine.GetChunkKeys(prompt);
        var expected = keys.Select(c => CachegenRoundTrip(a.Engine.Storage.Cpu, c.Key)).ToArray();
        Assert.NotEqual(Raw(a.Engine.Storage.Cpu, keys[0].Key), expected[0]);   // lossy: the test can tell the two apart

        await cluster.PostAsync("/pin", new { instance_id = "instance-a", location = Cpu, tokens = prompt[..256] });
        var compressed = await cluster.PostAsync("/compress", new { instance_id = "instance-a", method = "cachegen", location = Cpu });
        Assert.StartsWith("Compress", (string?)compressed["event_id"], StringComparison.Ordinal);
        Assert.Equal(512, (long)compressed["num_tokens"]!);
        Assert.Equal(2, (long)compressed["num_chunks"]!);
        Assert.Equal(2 * 256 * Instance.Layout.BytesPerToken, (long)compressed["original_bytes"]!);
        Assert.InRange((long)compressed["compressed_bytes"]!, 1, (long)compressed["original_bytes"]! - 1);
        Assert.All(a.Engine.Storage.Cpu.Snapshot(), e => Assert.Equal(MemoryFormat.BinaryBuffer, e.Metadata.Format));
        Assert.True(a.Engine.Storage.Cpu.IsPinned(keys[0].Key));   // pins survive the re-encode
        Assert.False(a.Engine.Storage.Cpu.IsPinned(keys[1].Key));

        var finished = await cluster.PostAsync("/check_finish", new { event_id = (string)compressed["event_id"]! });
        Assert.Equal("finished", (string?)finished["status"]);
        Assert.Equal("compress", (string?)finished["operation"]);
        Assert.Equal(512, (long)finished["num_tokens"]!);

        var listed = await cluster.PostAsync("/list_chunks", new { instance_id = "instance-a", location = Cpu });
        Assert.All(listed["chunks"]!.AsArray(), c =>
        {
            Assert.True((bool)c!["compressed"]!);
            Assert.Equal(256, (long)c["num_tokens"]!);
            Assert.True((double)c["last_access"]! > 1.7e9);
        });

        // A request served from compressed chunks gets the cachegen KV, byte for byte.
        var served = new HostKvCache(Instance.Layout, prompt.Length);
        var hit = await a.Engine.RetrieveAsync(prompt, served, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(512, hit.HitTokens);
        AssertChunks(served, expected);
        Assert.All(a.Engine.Storage.Cpu.Snapshot(), e => Assert.Equal(MemoryFormat.BinaryBuffer, e.Metadata.Format));   // served, still compressed

        // Without a decoder a compressed chunk is a miss, never bytes of the wrong kind.
        var decoder = a.Engine.CompressedChunkSerde;
        a.Engine.CompressedChunkSerde = null;
        Assert.Equal(0, (await a.RetrieveAsync(prompt)).HitTokens);
        a.Engine.CompressedChunkSerde = decoder;

        // Decompress asynchronously: 202 with the event id, then check_finish until it finished.
        var accepted = await cluster.PostAsync("/decompress", new { instance_id = "instance-a", method = "cachegen", location = Cpu, wait = false }, expectedStatus: 202);
        Assert.Equal("running", (string?)accepted["status"]);
        var done = await cluster.WaitFinishedAsync((string)accepted["event_id"]!);
        Assert.Equal("finished", (string?)done["status"]);
        Assert.Equal(512, (long)done["num_tokens"]!);
        Assert.Equal((long)compressed["compressed_bytes"]!, (long)done["compressed_bytes"]!);
        Assert.Equal((long)compressed["original_bytes"]!, (long)done["original_bytes"]!);
        Assert.All(a.Engine.Storage.Cpu.Snapshot(), e => Assert.Equal(MemoryFormat.KV2LTD, e.Metadata.Format));
        Assert.True(a.Engine.Storage.Cpu.IsPinned(keys[0].Key));
        Assert.Equal(expected[0], Raw(a.Engine.Storage.Cpu, keys[0].Key));
        Assert.Equal(expected[1], Raw(a.Engine.Storage.Cpu, keys[1].Key));
        var again = new HostKvCache(Instance.Layout, prompt.Length);
        Assert.Equal(512, (await a.Engine.RetrieveAsync(prompt, again, cancellationToken: TestContext.Current.CancellationToken)).HitTokens);
        AssertChunks(again, expected);

        // Errors: a method that does not exist, an unknown instance, a missing or unknown event id.
        var error = await cluster.PostAsync("/compress", new { instance_id = "instance-a", method = "zstd", location = Cpu }, expectedStatus: 400);
        Assert.Contains("cachegen", (string?)error["detail"], StringComparison.Ordinal);
        await cluster.PostAsync("/compress", new { instance_id = "nobody", method = "cachegen", location = Cpu }, expectedStatus: 404);
        await cluster.PostAsync("/compress", new { instance_id = "instance-a", method = "cachegen" }, expectedStatus: 400);
        await cluster.PostAsync("/check_finish", new { }, expectedStatus: 400);
        await cluster.PostAsync("/check_finish", new { event_id = "Move0000" }, expectedStatus: 404);
    }

    [Fact]
    public async Task Chunks_compressed_on_disk_are_served_decoded_and_promoted_raw()
    {
        using var folder = new LMCache.Testing.TempFolder("lmcache-controller-compress");
        await using var cluster = await Cluster.StartAsync();
        var a = await cluster.AddInstanceAsync("instance-a", diskFolder: folder.Path);
        var prompt = Cluster.Prompt(512, start: 80_000);
        a.Engine.Store(prompt, SmoothKv(prompt.Length));
        await a.Engine.FlushAsync(TestContext.Current.CancellationToken);
        var keys = a.Engine.GetChunkKeys(prompt);
        var expected = keys.Select(c => CachegenRoundTrip(a.Engine.Storage.Cpu, c.Key)).ToArray();
        await cluster.PostAsync("/clear", new { instance_id = "instance-a", location = Cpu });   // only the disk copies remain

        var compressed = await cluster.PostAsync("/compress", new { instance_id = "instance-a", method = "cachegen", location = "LocalDiskBackend" });
        Assert.Equal(512, (long)compressed["num_tokens"]!);
        var disk = (LMCache.Storage.LocalDisk.LocalDiskBackend)a.Engine.Storage.Find("LocalDiskBackend")!;
        Assert.Equal(2, disk.Count);
        Assert.All(disk.Snapshot(), e => Assert.Equal(MemoryFormat.BinaryBuffer, e.Metadata.Format));
        Assert.Equal(0, a.Engine.Storage.Cpu.Count);

        var served = new HostKvCache(Instance.Layout, prompt.Length);
        var hit = await a.Engine.RetrieveAsync(prompt, served, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(512, hit.HitTokens);
        Assert.Equal(2, hit.Tiers.Disk);
        AssertChunks(served, expected);
        Assert.All(a.Engine.Storage.Cpu.Snapshot(), e => Assert.Equal(MemoryFormat.KV2LTD, e.Metadata.Format));   // promoted decoded
        Assert.Equal(expected[1], Raw(a.Engine.Storage.Cpu, keys[1].Key));
    }

    [Fact]
    public async Task A_failed_asynchronous_operation_reports_its_error_through_check_finish()
    {
        await using var cluster = await Cluster.StartAsync();
        await cluster.AddInstanceAsync("instance-a");
        var accepted = await cluster.PostAsync("/move", new
        {
            old_position = new[] { "instance-a", Cpu },
            new_position = new[] { "instance-a", "LocalDiskBackend" },   // this instance has no disk tier
            wait = false,
        }, expectedStatus: 202);
        var done = await cluster.WaitFinishedAsync((string)accepted["event_id"]!);
        Assert.Equal("failed", (string?)done["status"]);
        Assert.Contains("LocalDiskBackend", (string?)done["error"], StringComparison.Ordinal);
        Assert.Null(done["num_tokens"]);

        var cleared = await cluster.PostAsync("/clear", new { instance_id = "instance-a", location = Cpu, wait = false }, expectedStatus: 202);
        Assert.Equal("finished", (string?)(await cluster.WaitFinishedAsync((string)cleared["event_id"]!))["status"]);
    }

    [Fact]
    public async Task Move_to_another_instance_goes_through_the_shared_redis_and_serves_the_same_kv()
    {
        if (RedisProcess.MissingReason is { } missing)
        {
            Assert.Skip(missing);
        }
        await using var redis = await RedisProcess.StartServerAsync(cancellationToken: TestContext.Current.CancellationToken);
        var url = $"redis://{redis.HostPort}";
        await using var cluster = await Cluster.StartAsync();
        // Stores stay in A's CPU tier (store_location), so the shared Redis holds nothing until the move writes it.
        var a = await cluster.AddInstanceAsync("instance-a", remoteUrl: url, storeLocation: Cpu);
        var b = await cluster.AddInstanceAsync("instance-b", remoteUrl: url, storeLocation: Cpu);
        var prompt = Cluster.Prompt(600, start: 60_000);   // two full chunks
        var source = new HostKvCache(Instance.Layout, prompt.Length);
        source.FillDeterministic(0, prompt.Length, seed: 5);
        Assert.Equal(512, a.Engine.Store(prompt, source).StoredTokens);
        Assert.Equal(0, (await b.RetrieveAsync(prompt)).HitTokens);
        Assert.Equal("0", (await redis.CliAsync("DBSIZE")).Trim());

        var moved = await cluster.PostAsync("/move", new
        {
            old_position = new[] { "instance-a", Cpu },
            new_position = new[] { "instance-b", Cpu },
            tokens = prompt,
        });
        Assert.Equal(512, (long)moved["num_tokens"]!);
        Assert.Equal(2, (long)moved["num_chunks"]!);
        Assert.Equal(0, a.Engine.Storage.Cpu.Count);   // a move, not a copy: A's chunks are gone
        Assert.Equal(2, b.Engine.Storage.Cpu.Count);   // B holds them in the tier asked for
        Assert.NotEqual("0", (await redis.CliAsync("DBSIZE")).Trim());

        var served = new HostKvCache(Instance.Layout, prompt.Length);
        var hit = await b.Engine.RetrieveAsync(prompt, served, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(512, hit.HitTokens);
        Assert.Equal(2, hit.Tiers.Cpu);   // from B's CPU tier, where the move put them
        Assert.True(served.SameTokens(source, 0, 512));
        await Cluster.WaitUntilAsync(async () =>
        {
            var layout = await cluster.LookupAsync(prompt);
            return !layout.ContainsKey("instance-a") && layout["instance-b"] is { } where && (int)where[1]! == 512;
        }, "the prefix on B and no longer on A in /lookup");

        // A copy back keeps B's chunks; check_finish knows the event.
        var copied = await cluster.PostAsync("/move", new
        {
            old_position = new[] { "instance-b", Cpu },
            new_position = new[] { "instance-a", Cpu },
            should_copy = true,
        });
        Assert.Equal(512, (long)copied["num_tokens"]!);
        Assert.Equal(2, a.Engine.Storage.Cpu.Count);
        Assert.Equal(2, b.Engine.Storage.Cpu.Count);
        Assert.Equal("finished", (string?)(await cluster.PostAsync("/check_finish", new { event_id = (string)copied["event_id"]! }))["status"]);
    }

    /// <summary>Finite, smooth bf16 KV (what a model produces), so cachegen codes it rather than storing it raw.</summary>
    private static HostKvCache SmoothKv(int tokens)
    {
        var kv = new HostKvCache(Instance.Layout, tokens);
        for (var layer = 0; layer < Instance.Layout.NumLayers; layer++)
        {
            for (var k = 0; k < 2; k++)
            {
                var plane = MemoryMarshal.Cast<byte, ushort>(kv.Plane(layer, k));
                for (var i = 0; i < plane.Length; i++)
                {
                    var value = (float)(Math.Sin((i * 0.37) + layer + (k * 2)) * (1 + (i % 7)));
                    plane[i] = (ushort)(BitConverter.SingleToUInt32Bits(value) >> 16);
                }
            }
        }
        return kv;
    }

    private static byte[] Raw(LocalCpuBackend cpu, CacheEngineKey key)
    {
        using var chunk = cpu.AcquireReference(key)!;
        return chunk.Span.ToArray();
    }

    private static byte[] CachegenRoundTrip(LocalCpuBackend cpu, CacheEngineKey key)
    {
        var serde = new CacheGenSerde();
        using var chunk = cpu.AcquireReference(key)!;
        using var blob = serde.Serialize(chunk, cpu)!;
        using var decoded = serde.Deserialize(blob, cpu)!;
        return decoded.Span.ToArray();
    }

    private static void AssertChunks(HostKvCache kv, byte[][] expected)
    {
        for (var i = 0; i < expected.Length; i++)
        {
            var chunk = new byte[expected[i].Length];
            kv.CopyToChunk(i * Instance.ChunkSize, Instance.ChunkSize, chunk);
            Assert.Equal(expected[i], chunk);
        }
    }
}
