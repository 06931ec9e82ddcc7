using LMCache.Storage.LocalCpu;
using LMCache.Testing;

namespace LMCache.Controller.Tests;

[IntegrationTest]
public sealed class ControllerApiTests
{
    private const string Cpu = LocalCpuBackend.BackendName;

    [Fact]
    public async Task Lookup_returns_the_instance_that_served_the_prompt()
    {
        await using var cluster = await Cluster.StartAsync();
        var a = await cluster.AddInstanceAsync("instance-a");
        await cluster.AddInstanceAsync("instance-b");
        var prompt = Cluster.Prompt(600, start: 1000);   // two full chunks of 256; the 88-token tail is not kept

        Assert.Empty(await cluster.LookupAsync(prompt));
        var stored = a.Serve(prompt);
        Assert.Equal(512, stored.StoredTokens);

        await Cluster.WaitUntilAsync(async () => await PrefixAsync(cluster, prompt, "instance-a") == 512, "A's 512 tokens in /lookup");
        var layout = await cluster.LookupAsync(prompt);
        Assert.Single(layout);
        Assert.Equal(Cpu, (string?)layout["instance-a"]![0]);
        Assert.Equal(512, (int)layout["instance-a"]![1]!);

        // The controller hashes with the engine's code: its answer equals the engine's own lookup, for a shared prefix too.
        var sharesOneChunk = prompt[..256].Concat(Cluster.Prompt(300, start: 5000)).ToArray();
        Assert.Equal(256, await a.Engine.LookupAsync(sharesOneChunk, cancellationToken: TestContext.Current.CancellationToken));
        Assert.Equal(256, (int)(await cluster.LookupAsync(sharesOneChunk))["instance-a"]![1]!);

        var infos = await cluster.PostAsync("/query_worker_info", new { instance_id = "all", worker_ids = Array.Empty<int>() });
        var workers = infos["worker_infos"]!.AsArray();
        Assert.Equal(["instance-a", "instance-b"], workers.Select(w => (string)w!["instance_id"]!).Order());
        Assert.All(workers, w => Assert.Equal("active", (string?)w!["status"]));
        Assert.All(workers, w => Assert.True((double)w!["registration_time"]! > 1.7e9));
        Assert.StartsWith("QueryWorkerInfo", (string?)infos["event_id"], StringComparison.Ordinal);

        var instance = await cluster.PostAsync("/query_instance", new { event_id = "e1", ip = "127.0.0.1" });
        Assert.Equal("e1", (string?)instance["event_id"]);
        Assert.Contains((string?)instance["res"], new[] { "instance-a", "instance-b" });

        var health = await cluster.PostAsync("/health", new { instance_id = "instance-a" });
        Assert.Equal(0, (int)health["error_codes"]!["0"]!);
    }

    [Fact]
    public async Task Clear_empties_the_cpu_tier_and_the_next_request_misses()
    {
        await using var cluster = await Cluster.StartAsync();
        var a = await cluster.AddInstanceAsync("instance-a");
        var prompt = Cluster.Prompt(512, start: 7);
        a.Serve(prompt);
        Assert.Equal(512, (await a.RetrieveAsync(prompt)).HitTokens);
        await Cluster.WaitUntilAsync(async () => (await cluster.LookupAsync(prompt)).ContainsKey("instance-a"), "A in /lookup");

        var cleared = await cluster.PostAsync("/clear", new { instance_id = "instance-a", location = Cpu });
        Assert.Equal(512, (long)cleared["num_tokens"]!);
        Assert.StartsWith("Clear", (string?)cleared["event_id"], StringComparison.Ordinal);

        Assert.Equal(0, a.Engine.Storage.Cpu.Count);
        Assert.Equal(0, (await a.RetrieveAsync(prompt)).HitTokens);
        await Cluster.WaitUntilAsync(async () => (await cluster.LookupAsync(prompt)).Count == 0, "A gone from /lookup");
    }

    [Fact]
    public async Task Pin_protects_chunks_from_eviction_under_pressure()
    {
        await using var cluster = await Cluster.StartAsync();
        var a = await cluster.AddInstanceAsync("instance-a", cpuChunks: 4);
        var pinnedPrompt = Cluster.Prompt(512, start: 100_000);
        var unpinnedPrompt = Cluster.Prompt(512, start: 200_000);
        a.Serve(pinnedPrompt);
        a.Serve(unpinnedPrompt);

        var pinned = await cluster.PostAsync("/pin", new { instance_id = "instance-a", location = Cpu, tokens = pinnedPrompt });
        Assert.Equal(512, (long)pinned["num_tokens"]!);

        for (var i = 0; i < 4; i++)
        {
            a.Serve(Cluster.Prompt(512, start: 300_000 + (i * 1000)));   // 8 more chunks into a 4-chunk pool
        }

        Assert.Equal(512, await a.Engine.LookupAsync(pinnedPrompt, cancellationToken: TestContext.Current.CancellationToken));
        Assert.Equal(0, await a.Engine.LookupAsync(unpinnedPrompt, cancellationToken: TestContext.Current.CancellationToken));
        var chunks = await cluster.PostAsync("/list_chunks", new { instance_id = "instance-a", location = Cpu });
        Assert.Equal(2, chunks["chunks"]!.AsArray().Count(c => (bool)c!["pinned"]!));
    }

    [Fact]
    public async Task A_worker_that_stops_heartbeating_is_marked_inactive()
    {
        await using var cluster = await Cluster.StartAsync(workerTimeout: TimeSpan.FromSeconds(2));
        var a = await cluster.AddInstanceAsync("instance-a");
        await cluster.AddInstanceAsync("instance-b");

        await a.AbandonWorkerAsync();
        await Cluster.WaitUntilAsync(async () =>
        {
            var infos = await cluster.PostAsync("/query_worker_info", new { instance_id = "instance-a" });
            return (string?)infos["worker_infos"]![0]!["status"] == "inactive";
        }, "instance-a inactive");

        var b = await cluster.PostAsync("/query_worker_info", new { instance_id = "instance-b" });
        Assert.Equal("active", (string?)b["worker_infos"]![0]!["status"]);
        var error = await cluster.PostAsync("/clear", new { instance_id = "instance-a", location = Cpu }, expectedStatus: 503);
        Assert.Contains("no active worker", (string?)error["detail"], StringComparison.Ordinal);
        var metrics = await cluster.Http.GetStringAsync("/metrics", TestContext.Current.CancellationToken);
        Assert.Contains("lmcache:controller_registered_workers{status=\"inactive\"} 1", metrics, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bad_requests_get_four_hundreds_with_a_message()
    {
        await using var cluster = await Cluster.StartAsync();
        await cluster.AddInstanceAsync("instance-a");

        Assert.Contains("not valid JSON", (string?)(await cluster.PostRawAsync("/lookup", "{tokens: nope", 400))["detail"], StringComparison.Ordinal);
        Assert.Contains("tokens is required", (string?)(await cluster.PostRawAsync("/lookup", "{}", 400))["detail"], StringComparison.Ordinal);
        await cluster.PostRawAsync("/lookup", "", 400);
        await cluster.PostRawAsync("/lookup", "{\"tokens\": [\"a\"]}", 400);
        Assert.Contains("Unknown instance 'nobody'",
            (string?)(await cluster.PostRawAsync("/clear", "{\"instance_id\":\"nobody\",\"location\":\"LocalCPUBackend\"}", 404))["detail"], StringComparison.Ordinal);
        await cluster.PostRawAsync("/clear", "{\"instance_id\":\"instance-a\"}", 400);
        Assert.Contains("not a tier",
            (string?)(await cluster.PostRawAsync("/clear", "{\"instance_id\":\"instance-a\",\"location\":\"NoSuchBackend\"}", 400))["detail"], StringComparison.Ordinal);
        await cluster.PostRawAsync("/pin", "{\"instance_id\":\"instance-a\",\"location\":\"LocalCPUBackend\"}", 400);
        await cluster.PostRawAsync("/health", "{\"instance_id\":\"nobody\"}", 404);
        await cluster.PostRawAsync("/query_worker_info", "{\"instance_id\":\"nobody\"}", 404);
        await cluster.PostRawAsync("/query_instance", "{\"ip\":\"10.9.9.9\"}", 404);
        await cluster.PostRawAsync("/delete_chunks", "{\"instance_id\":\"instance-a\",\"keys\":[]}", 400);
        Assert.Contains("Bad chunk key",
            (string?)(await cluster.PostRawAsync("/delete_chunks", "{\"instance_id\":\"instance-a\",\"keys\":[\"x\"]}", 400))["detail"], StringComparison.Ordinal);
        await cluster.PostRawAsync("/list_chunks", "{\"instance_id\":\"instance-a\",\"limit\":0}", 400);
        await cluster.PostRawAsync("/no_such_path", "{}", 404);
    }

    [Fact]
    public async Task Chunks_can_be_listed_searched_and_deleted_and_metrics_carry_the_original_names()
    {
        await using var cluster = await Cluster.StartAsync();
        var a = await cluster.AddInstanceAsync("instance-a");
        var prompt = Cluster.Prompt(512, start: 42);
        a.Serve(prompt);
        await a.RetrieveAsync(prompt);

        var listed = await cluster.PostAsync("/list_chunks", new { instance_id = "instance-a" });
        var chunks = listed["chunks"]!.AsArray();
        Assert.Equal(2, chunks.Count);
        var keys = a.Engine.GetChunkKeys(prompt).Select(k => k.Key.ToString()).ToList();
        Assert.Equal(keys.Order(), chunks.Select(c => (string)c!["key"]!).Order());
        Assert.All(chunks, c =>
        {
            Assert.Equal(Cpu, (string?)c!["location"]);
            Assert.Equal(256L * Instance.Layout.BytesPerToken, (long)c["size"]!);
            Assert.Equal(256, (int)c["num_tokens"]!);
            Assert.False((bool)c["pinned"]!);
        });

        var hash = keys[1].Split('@')[4];
        var searched = await cluster.PostAsync("/list_chunks", new { instance_id = "instance-a", search = hash[..12] });
        Assert.Equal(keys[1], (string?)searched["chunks"]![0]!["key"]);

        var deleted = await cluster.PostAsync("/delete_chunks", new { instance_id = "instance-a", keys = new[] { keys[1] } });
        Assert.Equal(1, (long)deleted["num_chunks"]!);
        Assert.Equal(256, await a.Engine.LookupAsync(prompt, cancellationToken: TestContext.Current.CancellationToken));
        await Cluster.WaitUntilAsync(async () => await PrefixAsync(cluster, prompt, "instance-a") == 256, "A's 256 tokens in /lookup");
        Assert.Single((await cluster.PostAsync("/list_chunks", new { instance_id = "instance-a" }))["chunks"]!.AsArray());

        // Workers report counters every 200 ms: wait for a report taken after the deletion (one 32 KiB chunk left).
        const string Labels = "{model_name=\"tiny/test-model\",worker_id=\"0\",instance_id=\"instance-a\"}";
        var metrics = "";
        await Cluster.WaitUntilAsync(async () =>
        {
            metrics = await cluster.Http.GetStringAsync("/metrics", TestContext.Current.CancellationToken);
            return metrics.Contains($"lmcache:local_cache_usage{Labels} 32768\n", StringComparison.Ordinal);
        }, "CPU usage after the deletion in /metrics");
        Assert.Contains($"lmcache:num_hit_tokens{Labels} 512\n", metrics, StringComparison.Ordinal);
        Assert.Contains($"lmcache:num_requested_tokens{Labels} 512\n", metrics, StringComparison.Ordinal);
        Assert.Contains($"lmcache:cache_hit_rate{Labels} 1\n", metrics, StringComparison.Ordinal);
        Assert.Contains("# TYPE lmcache:cache_hit_rate gauge", metrics, StringComparison.Ordinal);

        var summary = System.Text.Json.Nodes.JsonNode.Parse(await cluster.Http.GetStringAsync("/instances", TestContext.Current.CancellationToken))!;
        var tier = summary["instances"]![0]!["tiers"]![0]!;
        Assert.Equal(Cpu, (string?)tier["location"]);
        Assert.Equal(4L * 32768, (long)tier["capacity_bytes"]! / 16);   // a 64-chunk pool
    }

    [Fact]
    public async Task Move_takes_chunks_from_the_cpu_tier_to_the_disk_tier()
    {
        using var folder = new LMCache.Testing.TempFolder("lmcache-controller-move");
        await using var cluster = await Cluster.StartAsync();
        var a = await cluster.AddInstanceAsync("instance-a", diskFolder: folder.Path);
        await cluster.AddInstanceAsync("instance-b");
        var prompt = Cluster.Prompt(512, start: 31);
        a.Serve(prompt);
        await a.Engine.FlushAsync(TestContext.Current.CancellationToken);
        await cluster.PostAsync("/clear", new { instance_id = "instance-a", location = "LocalDiskBackend" });   // stores write through; start from CPU only
        Assert.Equal(0, a.Engine.Storage.Find("LocalDiskBackend") is LMCache.Storage.LocalDisk.LocalDiskBackend d ? d.Count : -1);

        var moved = await cluster.PostAsync("/move", new
        {
            old_position = new[] { "instance-a", Cpu },
            new_position = new[] { "instance-a", "LocalDiskBackend" },
            tokens = prompt,
        });
        Assert.Equal(512, (long)moved["num_tokens"]!);
        Assert.Equal(0, a.Engine.Storage.Cpu.Count);
        await Cluster.WaitUntilAsync(async () =>
            (await cluster.LookupAsync(prompt))["instance-a"] is { } where && (string?)where[0] == "LocalDiskBackend" && (int)where[1]! == 512,
            "A's prefix on disk in /lookup");
        Assert.Equal(512, (await a.RetrieveAsync(prompt)).HitTokens);

        var error = await cluster.PostAsync("/move", new
        {
            old_position = new[] { "instance-a", Cpu },
            new_position = new[] { "instance-b", Cpu },
        }, expectedStatus: 400);
        Assert.Contains("has no remote tier", (string?)error["detail"], StringComparison.Ordinal);   // another instance: only through a shared remote
        await cluster.PostAsync("/move", new { old_position = new[] { "instance-a" }, new_position = new[] { "instance-a", Cpu } }, expectedStatus: 400);
        await cluster.PostAsync("/move", new { old_position = new[] { "nobody", Cpu }, new_position = new[] { "nobody", "LocalDiskBackend" } }, expectedStatus: 404);
    }

    private static async Task<int> PrefixAsync(Cluster cluster, int[] tokens, string instance) =>
        (await cluster.LookupAsync(tokens))[instance] is { } where ? (int)where[1]! : 0;
}
