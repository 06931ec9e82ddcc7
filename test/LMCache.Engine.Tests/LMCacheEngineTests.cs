using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine.Adapters;
using LMCache.Hosting;
using LMCache.Storage;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.LocalDisk;
using LMCache.Storage.Remote;
using LMCache.Testing;

namespace LMCache.Engine.Tests;

/// <summary>
/// The engine end to end over real tiers (CPU pool, disk folder, remote backend over the fault-injecting connector),
/// with an in-memory head-major KV cache as the inference engine. Every test ends by disposing the engine and checking
/// that no memory object is left.
/// </summary>
public sealed class LMCacheEngineTests : IDisposable
{
    private const int Chunk = 16;
    private static readonly KvLayout s_layout = new(NumLayers: 2, NumKvHeads: 2, HeadDim: 8, KvDType.BFloat16);   // 128 B/token, 2 KiB/chunk
    private static readonly KeyScope s_scope = new("onnx", "test-org/tiny-model");
    private readonly TempFolder _folder = new("lmcache-engine");
    private readonly FaultInjectingConnector _connector = new();

    public void Dispose() => _folder.Dispose();

    private LMCacheEngineOptions Options(bool disk = false, bool remote = false, double cpuChunks = 64) => new()
    {
        ChunkSize = Chunk,
        MaxLocalCpuSizeGib = cpuChunks * 4096 / (1024.0 * 1024 * 1024),   // each 2 KiB chunk takes one 4 KiB block
        LocalDisk = disk ? _folder.Path : null,
        MaxLocalDiskSizeGib = disk ? 4.0 / 1024 : 0,
        RemoteUrl = remote ? "fault://test" : null,
    };

    private LMCacheEngine CreateEngine(LMCacheEngineOptions options, KvLayout? layout = null) =>
        new LMCacheEngineBuilder(options, s_scope, layout ?? s_layout).AddRemoteConnector(new FaultFactory(_connector)).Build();

    private static int[] Prompt(int length, int seed = 1) => [.. Enumerable.Range(0, length).Select(i => (i * 7919 + seed * 104729) % 150000)];

    private static async Task DisposeAndCheckLeaksAsync(LMCacheEngine engine)
    {
        var cpu = engine.Storage.Cpu;
        await engine.DisposeAsync();
        await Eventually.TrueAsync(() => cpu.OutstandingObjects == 0, "every memory object is released after dispose");
    }

    private static async Task<(RetrieveResult Result, InMemoryKvCache Destination)> RetrieveAsync(
        LMCacheEngine engine, int[] prompt, int maxTokens = int.MaxValue, string? salt = null, KvLayout? layout = null)
    {
        var destination = new InMemoryKvCache(layout ?? s_layout, prompt.Length);
        var result = await engine.RetrieveAsync(prompt, destination, maxTokens, salt);
        return (result, destination);
    }

    [Fact]
    public async Task Store_lookup_retrieve_round_trip_through_cpu_is_byte_exact()
    {
        var engine = CreateEngine(Options());
        var prompt = Prompt(100);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);

        var stored = engine.Store(prompt, source);
        Assert.Equal(new StoreResult(96, 6, 0), stored);   // the 4-token tail has no key (save_unfull_chunk off)
        Assert.Equal(96, await engine.LookupAsync(prompt));

        var (result, destination) = await RetrieveAsync(engine, prompt);
        Assert.Equal(96, result.HitTokens);
        Assert.Equal(96, result.LoadedTokens);
        Assert.Equal(new TierHits(6, 0, 0), result.Tiers);
        Assert.True(destination.SamePrefix(source, 96));
        Assert.Equal(96, destination.WrittenPrefix);
        Assert.False(destination.AnyWrittenFrom(96));
        Assert.Equal(6, destination.ChunksLoaded);
        Assert.Equal(1, engine.Statistics.RetrieveRequests);
        Assert.Equal(96, engine.Statistics.HitTokens);
        Assert.Equal(96, engine.Statistics.StoredTokens);
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public void The_adapter_really_transposes_head_major_kv()
    {
        // Guards the test double itself: a chunk is [2][layers][tokens][heads*dim], the engine cache [heads][tokens][dim].
        var layout = new KvLayout(1, 2, 1, KvDType.UInt8);
        var source = InMemoryKvCache.ForPrompt(layout, [5, 6]);
        var chunk = new byte[2 * 1 * 2 * 2];
        source.CopyToChunk(0, 2, chunk);
        var back = new InMemoryKvCache(layout, 2);
        back.CopyFromChunk(0, 2, 2, chunk);
        Assert.True(back.SamePrefix(source, 2));
        // Swapping the two tokens of the chunk must break equality (the layout is not a plain copy).
        (chunk[0], chunk[2]) = (chunk[2], chunk[0]);
        (chunk[1], chunk[3]) = (chunk[3], chunk[1]);
        var swapped = new InMemoryKvCache(layout, 2);
        swapped.CopyFromChunk(0, 2, 2, chunk);
        Assert.False(swapped.SamePrefix(source, 2));
        Assert.False(InMemoryKvCache.ForPrompt(layout, [5, 7]).SamePrefix(source, 2));
        Assert.True(InMemoryKvCache.ForPrompt(layout, [5, 7]).SamePrefix(source, 1));
    }

    [Fact]
    public void The_host_kv_cache_adapter_agrees_with_the_independent_test_double()
    {
        var layout = new KvLayout(3, 2, 4, KvDType.Float16);
        var prompt = Prompt(40);
        var reference = InMemoryKvCache.ForPrompt(layout, prompt);
        var host = new HostKvCache(layout, prompt.Length);
        for (var layer = 0; layer < layout.NumLayers; layer++)
        {
            for (var kv = 0; kv < 2; kv++)
            {
                reference.Tensor(layer, kv).CopyTo(host.Plane(layer, kv));
            }
        }
        var expected = new byte[layout.ChunkMetadata(16).ByteLength];
        var actual = new byte[expected.Length];
        reference.CopyToChunk(16, 16, expected);
        host.CopyToChunk(16, 16, actual);
        Assert.Equal(expected, actual);

        // And back: a partial copy out of a full chunk lands in the same places.
        var loaded = new HostKvCache(layout, prompt.Length);
        loaded.CopyFromChunk(16, 16, 10, expected);
        var check = new InMemoryKvCache(layout, prompt.Length);
        check.CopyFromChunk(16, 16, 10, expected);
        for (var layer = 0; layer < layout.NumLayers; layer++)
        {
            for (var kv = 0; kv < 2; kv++)
            {
                Assert.True(check.Tensor(layer, kv).SequenceEqual(loaded.Plane(layer, kv)));
            }
        }
    }

    [Fact]
    public async Task A_chunk_only_on_disk_is_read_promoted_and_then_served_from_cpu()
    {
        var engine = CreateEngine(Options(disk: true));
        var prompt = Prompt(96);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);
        engine.Store(prompt, source);
        await engine.FlushAsync();
        Assert.Equal(6, await engine.Storage.ClearAsync([LocalCpuBackend.BackendName]));
        Assert.Equal(0, engine.Storage.Cpu.Count);

        Assert.Equal(96, await engine.LookupAsync(prompt));
        var (fromDisk, destination) = await RetrieveAsync(engine, prompt);
        Assert.Equal(new RetrieveResult(96, 96, new TierHits(0, 6, 0)), fromDisk);
        Assert.True(destination.SamePrefix(source, 96));

        Assert.Equal(6, engine.Storage.Cpu.Count);   // promoted
        var (fromCpu, again) = await RetrieveAsync(engine, prompt);
        Assert.Equal(new TierHits(6, 0, 0), fromCpu.Tiers);
        Assert.True(again.SamePrefix(source, 96));
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task A_chunk_of_another_layout_is_rejected_not_promoted_and_replaced_by_the_next_store()
    {
        var prompt = Prompt(64);
        var writer = CreateEngine(Options(disk: true));
        writer.Store(prompt, InMemoryKvCache.ForPrompt(s_layout, prompt));
        await writer.FlushAsync();
        await DisposeAndCheckLeaksAsync(writer);

        // Same key scope and bytes per token, other geometry: the disk's chunks have the wrong shape for this engine.
        var otherLayout = new KvLayout(NumLayers: 1, NumKvHeads: 4, HeadDim: 8, KvDType.BFloat16);
        Assert.Equal(s_layout.BytesPerToken, otherLayout.BytesPerToken);
        var reader = CreateEngine(Options(disk: true), otherLayout);
        var (rejected, _) = await RetrieveAsync(reader, prompt, layout: otherLayout);
        Assert.Equal(new RetrieveResult(0, 0, new TierHits(0, 0, 0, Rejected: 1)), rejected);
        Assert.Equal(0, reader.Storage.Cpu.Count);   // nothing promoted

        var source = InMemoryKvCache.ForPrompt(otherLayout, prompt);
        Assert.Equal(64, reader.Store(prompt, source).StoredTokens);
        var (hit, destination) = await RetrieveAsync(reader, prompt, layout: otherLayout);
        Assert.Equal(new RetrieveResult(64, 64, new TierHits(4, 0, 0)), hit);
        Assert.True(destination.SamePrefix(source, 64));
        await reader.FlushAsync();
        await DisposeAndCheckLeaksAsync(reader);

        // The wrong disk chunks were removed when rejected, so the store wrote the right ones: a restart reads them.
        var restarted = CreateEngine(Options(disk: true), otherLayout);
        var (fromDisk, restored) = await RetrieveAsync(restarted, prompt, layout: otherLayout);
        Assert.Equal(new RetrieveResult(64, 64, new TierHits(0, 4, 0)), fromDisk);
        Assert.True(restored.SamePrefix(source, 64));
        await DisposeAndCheckLeaksAsync(restarted);
    }

    [Fact]
    public async Task A_prefix_split_between_cpu_and_disk_is_loaded_whole()
    {
        var engine = CreateEngine(Options(disk: true));
        var prompt = Prompt(96);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);
        engine.Store(prompt, source);
        await engine.FlushAsync();
        var keys = engine.GetChunkKeys(prompt);
        for (var i = 3; i < 6; i++)
        {
            Assert.True(await engine.Storage.Cpu.RemoveAsync(keys[i].Key));
        }

        var (result, destination) = await RetrieveAsync(engine, prompt);
        Assert.Equal(new RetrieveResult(96, 96, new TierHits(3, 3, 0)), result);
        Assert.True(destination.SamePrefix(source, 96));
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task A_prefix_can_continue_into_the_remote_tier()
    {
        var engine = CreateEngine(Options(disk: true, remote: true));
        var prompt = Prompt(96);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);
        engine.Store(prompt, source);
        await engine.FlushAsync();
        Assert.Equal(6, _connector.Keys.Count);
        var keys = engine.GetChunkKeys(prompt);
        for (var i = 2; i < 6; i++)
        {
            await engine.Storage.Cpu.RemoveAsync(keys[i].Key);
            if (i >= 4)
            {
                await engine.Storage.Find(LocalDiskBackend.BackendName)!.RemoveAsync(keys[i].Key);
            }
        }

        Assert.Equal(96, await engine.LookupAsync(prompt));
        var (result, destination) = await RetrieveAsync(engine, prompt);
        Assert.Equal(new RetrieveResult(96, 96, new TierHits(2, 2, 2)), result);
        Assert.True(destination.SamePrefix(source, 96));

        // A hung remote costs the remote part of the hit, never an exception or wrong bytes.
        await engine.Storage.ClearAsync([LocalCpuBackend.BackendName]);
        _connector.ReadFault = ConnectorFault.Throw;
        var (degraded, partial) = await RetrieveAsync(engine, prompt);
        Assert.Equal(new TierHits(0, 4, 0), degraded.Tiers);
        Assert.Equal(64, degraded.LoadedTokens);
        Assert.True(partial.SamePrefix(source, 64));
        Assert.False(partial.AnyWrittenFrom(64));
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task A_prepared_request_retrieves_from_the_remote_in_one_pass_and_sizes_the_destination_from_what_came_back()
    {
        var engine = CreateEngine(Options(remote: true));
        var prompt = Prompt(96);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);
        engine.Store(prompt, source);
        await engine.FlushAsync();
        await engine.Storage.ClearAsync([LocalCpuBackend.BackendName]);   // only the remote holds the prompt now
        var exists = _connector.ExistsCalls;
        var gets = _connector.GetCalls;

        using var request = engine.Prepare(prompt);
        Assert.Equal(6, request.ChunkCount);
        var destination = new SizingKvCache(s_layout, prompt.Length);
        var result = await engine.RetrieveAsync(request, destination, maxTokens: 95);

        // One walk of the remote tier: one batched read, no existence check before it.
        Assert.Equal(0, _connector.ExistsCalls - exists);
        Assert.Equal(1, _connector.GetCalls - gets);
        Assert.Equal(new RetrieveResult(96, 95, new TierHits(0, 0, 6)), result);
        Assert.Equal([95], destination.Prepared);
        Assert.True(destination.SamePrefix(source, 95));

        // The same keys serve the store: every chunk was promoted into the CPU tier, so nothing is stored again.
        var stored = engine.Store(request, source, skipLeadingTokens: 0);
        Assert.Equal(new StoreResult(0, 0, 0, 96), stored);
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task A_miss_does_not_ask_the_destination_to_size_itself()
    {
        var engine = CreateEngine(Options());
        using var request = engine.Prepare(Prompt(64));
        var destination = new SizingKvCache(s_layout, 64);
        var result = await engine.RetrieveAsync(request, destination);
        Assert.Equal(0, result.LoadedTokens);
        Assert.Empty(destination.Prepared);
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task A_request_prepared_by_another_engine_is_refused()
    {
        var first = CreateEngine(Options());
        var second = CreateEngine(Options());
        using var request = first.Prepare(Prompt(32));
        await Assert.ThrowsAsync<ArgumentException>(async () => await second.LookupAsync(request));
        Assert.Throws<ArgumentException>(() => second.Store(request, InMemoryKvCache.ForPrompt(s_layout, Prompt(32))));
        await DisposeAndCheckLeaksAsync(first);
        await DisposeAndCheckLeaksAsync(second);
    }

    [Theory]
    [InlineData(40, 40, 48)]    // ends inside chunk 2: only 8 of its tokens are copied
    [InlineData(95, 95, 96)]    // the usual "keep the last token for the model"
    [InlineData(16, 16, 16)]
    [InlineData(0, 0, 0)]
    [InlineData(1000, 96, 96)]
    public async Task MaxTokens_limits_the_copy(int maxTokens, int loaded, int hit)
    {
        var engine = CreateEngine(Options());
        var prompt = Prompt(96);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);
        engine.Store(prompt, source);

        var (result, destination) = await RetrieveAsync(engine, prompt, maxTokens);
        Assert.Equal(loaded, result.LoadedTokens);
        Assert.Equal(hit, result.HitTokens);
        Assert.True(destination.SamePrefix(source, loaded));
        Assert.Equal(loaded, destination.WrittenPrefix);
        Assert.False(destination.AnyWrittenFrom(loaded));
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task Save_unfull_chunk_keys_the_tail_and_a_longer_prompt_does_not_reuse_it()
    {
        var options = Options();
        options.SaveUnfullChunk = true;
        var engine = CreateEngine(options);
        var prompt = Prompt(100);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);
        Assert.Equal(new StoreResult(100, 7, 0), engine.Store(prompt, source));
        Assert.Equal(100, await engine.LookupAsync(prompt));
        var (result, destination) = await RetrieveAsync(engine, prompt);
        Assert.Equal(100, result.LoadedTokens);
        Assert.True(destination.SamePrefix(source, 100));

        // The same prompt extended by 20 tokens: its chunk [96, 112) is not the stored tail [96, 100).
        var longer = prompt.Concat(Prompt(20, seed: 9)).ToArray();
        Assert.Equal(96, await engine.LookupAsync(longer));
        var (longerResult, longerDestination) = await RetrieveAsync(engine, longer);
        Assert.Equal(96, longerResult.LoadedTokens);
        Assert.True(longerDestination.SamePrefix(source, 96));
        await DisposeAndCheckLeaksAsync(engine);

        var off = CreateEngine(Options());
        Assert.Equal(new StoreResult(96, 6, 0), off.Store(prompt, source));
        Assert.Equal(96, await off.LookupAsync(prompt));
        Assert.Equal(0, await off.LookupAsync(prompt.AsMemory(0, 15)));
        await DisposeAndCheckLeaksAsync(off);
    }

    [Fact]
    public async Task Min_retrieve_tokens_skips_short_hits_but_lookup_still_reports_them()
    {
        var options = Options();
        options.MinRetrieveTokens = 64;
        var engine = CreateEngine(options);
        var shortPrompt = Prompt(48, seed: 2);
        var longPrompt = Prompt(96, seed: 3);
        engine.Store(shortPrompt, InMemoryKvCache.ForPrompt(s_layout, shortPrompt));
        engine.Store(longPrompt, InMemoryKvCache.ForPrompt(s_layout, longPrompt));

        Assert.Equal(48, await engine.LookupAsync(shortPrompt));
        var (skipped, untouched) = await RetrieveAsync(engine, shortPrompt);
        Assert.Equal(0, skipped.LoadedTokens);
        Assert.Equal(0, untouched.WrittenPrefix);
        var (loaded, _) = await RetrieveAsync(engine, longPrompt);
        Assert.Equal(96, loaded.LoadedTokens);
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task Store_location_and_retrieve_locations_restrict_the_tiers()
    {
        var options = Options(disk: true);
        options.StoreLocation = LocalDiskBackend.BackendName;
        var engine = CreateEngine(options);
        var prompt = Prompt(64);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);
        engine.Store(prompt, source);
        await engine.FlushAsync();
        Assert.Equal(0, engine.Storage.Cpu.Count);
        Assert.Equal(4, ((LocalDiskBackend)engine.Storage.Find(LocalDiskBackend.BackendName)!).Count);
        await DisposeAndCheckLeaksAsync(engine);

        var cpuOnly = Options(disk: true);
        cpuOnly.RetrieveLocations = [LocalCpuBackend.BackendName];
        var reader = CreateEngine(cpuOnly);   // the disk tier recovers the four chunks, but may not be read
        Assert.Equal(4, ((LocalDiskBackend)reader.Storage.Find(LocalDiskBackend.BackendName)!).Count);
        Assert.Equal(0, await reader.LookupAsync(prompt));
        var (result, _) = await RetrieveAsync(reader, prompt);
        Assert.Equal(0, result.LoadedTokens);
        await DisposeAndCheckLeaksAsync(reader);

        var all = CreateEngine(Options(disk: true));   // positive control: the same folder, every tier readable
        var (hit, destination) = await RetrieveAsync(all, prompt);
        Assert.Equal(new RetrieveResult(64, 64, new TierHits(0, 4, 0)), hit);
        Assert.True(destination.SamePrefix(source, 64));
        await DisposeAndCheckLeaksAsync(all);
    }

    [Fact]
    public async Task Prompts_sharing_a_prefix_share_its_chunks()
    {
        var engine = CreateEngine(Options());
        var a = Prompt(96, seed: 4);
        var b = a.Take(64).Concat(Prompt(32, seed: 5)).ToArray();
        var sourceA = InMemoryKvCache.ForPrompt(s_layout, a);
        var sourceB = InMemoryKvCache.ForPrompt(s_layout, b);
        Assert.True(sourceA.SamePrefix(sourceB, 64));

        engine.Store(a, sourceA);
        Assert.Equal(64, await engine.LookupAsync(b));
        engine.Store(b, sourceB, skipLeadingTokens: 64);
        Assert.Equal(8, engine.Storage.Cpu.Count);   // 6 of a + 2 new of b

        var (result, destination) = await RetrieveAsync(engine, b);
        Assert.Equal(96, result.LoadedTokens);
        Assert.True(destination.SamePrefix(sourceB, 96));
        Assert.False(destination.SamePrefix(sourceA, 96));
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task Different_salts_never_share_and_the_same_salt_does()
    {
        var engine = CreateEngine(Options());
        var prompt = Prompt(64);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);
        engine.Store(prompt, source, cacheSalt: "tenant-a");

        Assert.Equal(64, await engine.LookupAsync(prompt, "tenant-a"));   // positive control
        Assert.Equal(0, await engine.LookupAsync(prompt, "tenant-b"));
        Assert.Equal(0, await engine.LookupAsync(prompt));
        var (other, untouched) = await RetrieveAsync(engine, prompt, salt: "tenant-b");
        Assert.Equal(0, other.LoadedTokens);
        Assert.Equal(0, untouched.WrittenPrefix);
        var (same, destination) = await RetrieveAsync(engine, prompt, salt: "tenant-a");
        Assert.Equal(64, same.LoadedTokens);
        Assert.True(destination.SamePrefix(source, 64));
        Assert.Empty(engine.GetChunkKeys(prompt, "tenant-a").Select(k => k.Key).Intersect(engine.GetChunkKeys(prompt, "tenant-b").Select(k => k.Key)));
        await DisposeAndCheckLeaksAsync(engine);
    }

    public static TheoryData<string> WrongChunks => ["dtype", "shape", "format"];

    [Theory]
    [MemberData(nameof(WrongChunks))]
    public async Task A_chunk_with_the_wrong_shape_or_dtype_ends_the_hit(string what)
    {
        var engine = CreateEngine(Options());
        var prompt = Prompt(64);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);
        engine.Store(prompt, source);
        var keys = engine.GetChunkKeys(prompt);
        var expected = s_layout.ChunkMetadata(Chunk);
        var wrong = what switch
        {
            "dtype" => expected with { DType = KvDType.Float16 },                                        // same byte length
            "shape" => new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 8, 32), KvDType.BFloat16, MemoryFormat.KV2LTD),   // same byte length
            _ => expected with { Format = MemoryFormat.KVMla },
        };
        Assert.True(await engine.Storage.Cpu.RemoveAsync(keys[2].Key));
        Assert.True(engine.Storage.Cpu.TryAllocate(wrong, out var impostor));
        impostor.Span.Fill(0x5A);
        engine.Storage.Cpu.SubmitPut(keys[2].Key, impostor);
        impostor.Release();

        var (result, destination) = await RetrieveAsync(engine, prompt);
        Assert.Equal(32, result.LoadedTokens);
        Assert.Equal(32, result.HitTokens);
        Assert.True(destination.SamePrefix(source, 32));
        Assert.False(destination.AnyWrittenFrom(32));
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task Chunks_written_by_an_engine_with_another_layout_are_rejected_from_disk()
    {
        var writer = CreateEngine(Options(disk: true));
        var prompt = Prompt(64);
        writer.Store(prompt, InMemoryKvCache.ForPrompt(s_layout, prompt));
        await DisposeAndCheckLeaksAsync(writer);

        var otherLayout = s_layout with { NumKvHeads = 4 };   // the same model name and keys, twice the bytes
        var reader = CreateEngine(Options(disk: true), otherLayout);
        Assert.Equal(64, await reader.LookupAsync(prompt));   // the keys are there ...
        var (result, destination) = await RetrieveAsync(reader, prompt, layout: otherLayout);
        Assert.Equal(0, result.LoadedTokens);                 // ... but not one byte of the wrong geometry is copied
        Assert.Equal(0, destination.WrittenPrefix);
        await DisposeAndCheckLeaksAsync(reader);
    }

    [Fact]
    public async Task A_cpu_pool_too_small_for_the_prompt_stores_a_prefix()
    {
        var engine = CreateEngine(Options(cpuChunks: 3));
        var prompt = Prompt(96);
        var source = InMemoryKvCache.ForPrompt(s_layout, prompt);

        var stored = engine.Store(prompt, source);

        Assert.Equal(new StoreResult(48, 3, 3), stored);
        Assert.Equal(48, await engine.LookupAsync(prompt));
        var (result, destination) = await RetrieveAsync(engine, prompt);
        Assert.Equal(48, result.LoadedTokens);
        Assert.True(destination.SamePrefix(source, 48));
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task A_store_makes_room_by_evicting_older_prompts()
    {
        var engine = CreateEngine(Options(cpuChunks: 4));
        var first = Prompt(64, seed: 6);
        var second = Prompt(64, seed: 7);
        engine.Store(first, InMemoryKvCache.ForPrompt(s_layout, first));
        var source = InMemoryKvCache.ForPrompt(s_layout, second);
        Assert.Equal(new StoreResult(64, 4, 0), engine.Store(second, source));
        Assert.Equal(0, await engine.LookupAsync(first));
        var (result, destination) = await RetrieveAsync(engine, second);
        Assert.Equal(64, result.LoadedTokens);
        Assert.True(destination.SamePrefix(source, 64));
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public async Task Concurrent_stores_and_retrieves_of_the_same_prompt_never_yield_wrong_bytes()
    {
        var engine = CreateEngine(Options(disk: true, cpuChunks: 10));
        var prompts = Enumerable.Range(0, 3).Select(s => Prompt(80, seed: 10 + s)).ToArray();
        var sources = prompts.Select(p => InMemoryKvCache.ForPrompt(s_layout, p)).ToArray();
        var failures = 0;
        var loadedTotal = 0;

        var workers = Enumerable.Range(0, 6).Select(worker => Task.Run(async () =>
        {
            for (var round = 0; round < 40; round++)
            {
                var which = (worker + round) % prompts.Length;
                if (worker % 2 == 0)
                {
                    engine.Store(prompts[which], sources[which]);
                }
                else
                {
                    var destination = new InMemoryKvCache(s_layout, prompts[which].Length);
                    var result = await engine.RetrieveAsync(prompts[which], destination);
                    Interlocked.Add(ref loadedTotal, result.LoadedTokens);
                    if (result.LoadedTokens % Chunk != 0 || !destination.SamePrefix(sources[which], result.LoadedTokens)
                        || destination.AnyWrittenFrom(result.LoadedTokens))
                    {
                        Interlocked.Increment(ref failures);
                    }
                }
            }
        })).ToArray();
        await Eventually.CompletesAsync(Task.WhenAll(workers), "concurrent stores and retrieves");

        Assert.Equal(0, failures);
        Assert.True(loadedTotal > 0, "some retrieves should have hit");
        // How much was stored while the workers ran depends on scheduling: CPU entries with a disk write still queued
        // cannot be evicted, so on a loaded machine stores may be partial. Once the writes are done, a store fits.
        await engine.FlushAsync();
        var again = engine.Store(prompts[0], sources[0]);
        Assert.Equal(80, again.StoredTokens + again.CachedTokens);   // chunks still in CPU are skipped, the rest stored
        await engine.FlushAsync();
        var (final, finalDestination) = await RetrieveAsync(engine, prompts[0]);
        Assert.True(finalDestination.SamePrefix(sources[0], 80));
        await DisposeAndCheckLeaksAsync(engine);
    }

    [Fact]
    public void Impossible_configurations_fail_at_creation()
    {
        var unknownSerde = Options();
        unknownSerde.RemoteSerde = "zstd";   // registered nowhere (the builder registers naive, kivi and cachegen)
        var error = Assert.Throws<LMCacheConfigurationException>(() => CreateEngine(unknownSerde));
        Assert.Contains("zstd", error.Message, StringComparison.Ordinal);

        var tinyPool = Options(cpuChunks: 0.25);
        Assert.Contains("max_local_cpu_size", Assert.Throws<LMCacheConfigurationException>(() => CreateEngine(tinyPool)).Message, StringComparison.Ordinal);

        var unknownScheme = Options();
        unknownScheme.RemoteUrl = "nosuch://x";
        Assert.Contains("nosuch://", Assert.Throws<LMCacheConfigurationException>(() => CreateEngine(unknownScheme)).Message, StringComparison.Ordinal);

        Assert.Throws<ArgumentException>(() => LMCacheEngine.Create(Options(), new KeyScope("onnx", "a@b"), s_layout));
        Assert.Throws<ArgumentException>(() => LMCacheEngine.Create(Options(), s_scope, s_layout with { NumLayers = 0 }));
    }

    /// <summary>An in-memory KV cache that records what each retrieve announced before copying.</summary>
    private sealed class SizingKvCache(KvLayout layout, int capacityTokens) : IKvCacheAdapter
    {
        private readonly InMemoryKvCache _inner = new(layout, capacityTokens);

        public List<int> Prepared { get; } = [];

        public void PrepareForRetrieve(int tokens) => Prepared.Add(tokens);

        public void CopyToChunk(int start, int count, Span<byte> chunk) => _inner.CopyToChunk(start, count, chunk);

        public void CopyFromChunk(int start, int chunkTokens, int count, ReadOnlySpan<byte> chunk)
        {
            Assert.True(Prepared.Count == 1 && start + count <= Prepared[0], "the retrieve announced the tokens before copying them");
            _inner.CopyFromChunk(start, chunkTokens, count, chunk);
        }

        public bool SamePrefix(InMemoryKvCache other, int tokens) => _inner.SamePrefix(other, tokens);
    }

    private sealed class FaultFactory(FaultInjectingConnector connector) : IRemoteConnectorFactory
    {
        public IReadOnlyList<string> Schemes { get; } = ["fault"];

        public IRemoteConnector Create(string url, RemoteConnectorContext context) => connector;
    }
}
