using System.ClientModel;
using System.ClientModel.Primitives;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using LMCache.Core.Configuration;
using LMCache.Hosting;
using LMCache.Inference.Generation;
using LMCache.Testing;
using Microsoft.Extensions.Logging.Abstractions;
using OpenAI;
using OpenAI.Chat;

namespace LMCache.Serving.Tests;

/// <summary>
/// Issue #15 through the real HTTP server and the official OpenAI client: a client that disconnects frees its slot
/// and KV; more clients than slots + queue get 503 in OpenAI's error shape and the server stays healthy and does not
/// grow. Runs alone (the working-set check needs the process to itself).
/// </summary>
[IntegrationTest]
[Collection(nameof(MemoryBoundCollection))]
public sealed class SchedulerServerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static string ShortText => Reference.GetProperty("prompts").GetProperty("short").GetProperty("text").GetString()!;

    private static string LongText => Reference.GetProperty("prompts").GetProperty("long").GetProperty("text").GetString()!;

    private static JsonElement Reference =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(RepositoryFixtures.TinyLlama, "reference.json"))).RootElement;

    private static Task<LMCacheHost> StartAsync(InferenceEngineOptions inference) => LMCacheHost.StartAsync(new LMCacheHostOptions
    {
        ModelFolder = RepositoryFixtures.TinyLlama,
        IntraOpThreads = 2,
        Cache = new LMCacheEngineOptions { ChunkSize = 256, MaxLocalCpuSizeGib = 0.25 },
        Server = new OpenAiServerOptions { Host = "127.0.0.1", Port = 0 },
        Inference = inference,
    }, NullLoggerFactory.Instance);

    /// <summary>The official client, without retries (a 503 must reach the test, not be retried away).</summary>
    private static ChatClient Chat(LMCacheHost host) => new(host.Model.Name, new ApiKeyCredential("unused"), new OpenAIClientOptions
    {
        Endpoint = new Uri(host.Server!.Address, "v1"),
        NetworkTimeout = TimeSpan.FromMinutes(2),
        RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
    });

    /// <summary>A streaming completion that generates <paramref name="maxTokens"/> tokens whatever it samples (ignore_eos).</summary>
    private static HttpRequestMessage EndlessStream(string prompt, int maxTokens) => new(HttpMethod.Post, "v1/completions")
    {
        Content = new StringContent(JsonSerializer.Serialize(new { prompt, max_tokens = maxTokens, ignore_eos = true, stream = true, temperature = 0 }),
            Encoding.UTF8, "application/json"),
    };

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromMinutes(1), $"timed out waiting until {what}");
            await Task.Delay(5, Ct);
        }
    }

    [Fact]
    public async Task A_client_that_disconnects_mid_stream_frees_its_slot_for_the_waiting_request_and_leaves_no_kv()
    {
        await using var host = await StartAsync(new InferenceEngineOptions { MaxNumSeqs = 1 });
        using var http = new HttpClient { BaseAddress = host.Server!.Address, Timeout = TimeSpan.FromMinutes(2) };
        var engine = host.Inference;

        var response = await http.SendAsync(EndlessStream(LongText, 6000), HttpCompletionOption.ResponseHeadersRead, Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var stream = await response.Content.ReadAsStreamAsync(Ct);
        using (var reader = new StreamReader(stream))
        {
            for (var chunks = 0; chunks < 3;)
            {
                var line = await reader.ReadLineAsync(Ct);
                Assert.NotNull(line);
                chunks += line.StartsWith("data: {", StringComparison.Ordinal) ? 1 : 0;
            }

            // The only slot is taken: a second client waits for it.
            var waiting = Chat(host).CompleteChatAsync([new UserChatMessage(ShortText)], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 5 }, Ct);
            await WaitUntilAsync(() => engine.WaitingRequests == 1, "the second request waits");
            Assert.True(engine.KvBytes > 0, "the streaming request holds no KV");
            Assert.False(waiting.IsCompleted);

            // The first client goes away mid-stream.
            response.Dispose();
            ChatCompletion answer = await waiting.WaitAsync(TimeSpan.FromMinutes(1), Ct);
            Assert.Equal(ChatFinishReason.Length, answer.FinishReason);
            Assert.Equal(5, answer.Usage.OutputTokenCount);
        }
        await engine.WhenIdleAsync(Ct);
        Assert.Equal(0, engine.KvBytes);
        Assert.Equal(0, engine.RunningRequests);
        Assert.Equal(0, engine.QueueDepth);
    }

    [Fact]
    public async Task More_clients_than_slots_and_queue_get_503_and_the_server_stays_healthy_and_does_not_grow()
    {
        const int Slots = 2, Queue = 2;
        await using var host = await StartAsync(new InferenceEngineOptions { MaxNumSeqs = Slots, MaxWaitingRequests = Queue });
        using var http = new HttpClient { BaseAddress = host.Server!.Address, Timeout = TimeSpan.FromMinutes(2) };

        await BurstAsync();   // warms every code path and pool
        var start = await SettledWorkingSetAsync();
        for (var i = 0; i < 3; i++)
        {
            await BurstAsync();
        }
        var end = await SettledWorkingSetAsync();
        var grownMb = (end - start) / 1e6;
        Assert.True(grownMb < 64, $"the working set grew by {grownMb:0} MB over three bursts ({start / 1e6:0} → {end / 1e6:0} MB)");

        using var health = await http.GetAsync("health", Ct);
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        ChatCompletion after = await Chat(host).CompleteChatAsync([new UserChatMessage(ShortText)], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 3 }, Ct);
        Assert.Equal(3, after.Usage.OutputTokenCount);
        await host.Inference.WhenIdleAsync(Ct);
        Assert.Equal(0, host.Inference.KvBytes);

        var metrics = await http.GetStringAsync("metrics", Ct);
        Assert.Contains("lmcache_serving_num_requests_running{", metrics, StringComparison.Ordinal);
        Assert.Contains("lmcache_serving_num_requests_waiting{", metrics, StringComparison.Ordinal);
        Assert.Contains("lmcache_serving_batch_size_bucket{", metrics, StringComparison.Ordinal);
        Assert.Contains("lmcache_serving_inter_token_latency_seconds_count{", metrics, StringComparison.Ordinal);
        Assert.Contains("lmcache_serving_e2e_request_latency_seconds_count{", metrics, StringComparison.Ordinal);
        // 3 bursts × 4 refusals (warm-up included: 4 bursts, 16).
        var refusals = metrics.Split('\n').Where(l => l.StartsWith("lmcache_serving_requests_total{", StringComparison.Ordinal) && l.Contains("status=\"503\"", StringComparison.Ordinal)).ToArray();
        Assert.True(refusals.Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture)) == 16,
            "503s counted: " + string.Join(" | ", refusals));

        async Task BurstAsync()
        {
            // Fill every slot and the queue with long streams.
            var hogs = new List<Task<string>>();
            for (var i = 0; i < Slots + Queue; i++)
            {
                hogs.Add(ReadStreamAsync(i));
                var admitted = i + 1;
                await WaitUntilAsync(() => host.Inference.QueueDepth == admitted, $"{admitted} requests are in");
            }

            // The next clients are refused at once: 503 in OpenAI's error shape, through the official client too.
            for (var i = 0; i < 3; i++)
            {
                var refused = await Assert.ThrowsAsync<ClientResultException>(() =>
                    Chat(host).CompleteChatAsync([new UserChatMessage(ShortText)], new ChatCompletionOptions { MaxOutputTokenCount = 4 }, Ct));
                Assert.Equal(503, refused.Status);
            }
            using (var refused = await http.SendAsync(EndlessStream(ShortText, 10), Ct))
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
                Assert.True(refused.Headers.RetryAfter is not null, "no Retry-After header");
                using var error = JsonDocument.Parse(await refused.Content.ReadAsStringAsync(Ct));
                var body = error.RootElement.GetProperty("error");
                Assert.Equal("server_error", body.GetProperty("type").GetString());
                Assert.Contains("overloaded", body.GetProperty("message").GetString(), StringComparison.Ordinal);
            }

            // Every accepted stream runs to its end.
            foreach (var text in await Task.WhenAll(hogs))
            {
                Assert.EndsWith("data: [DONE]\n\n", text, StringComparison.Ordinal);
            }
            await host.Inference.WhenIdleAsync(Ct);
            Assert.Equal(0, host.Inference.KvBytes);
        }

        async Task<string> ReadStreamAsync(int seed)
        {
            using var response = await http.SendAsync(EndlessStream(ShortText + " " + seed, 300), HttpCompletionOption.ResponseHeadersRead, Ct);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return await response.Content.ReadAsStringAsync(Ct);
        }
    }

    /// <summary>The working set after an ordinary full collection and a short settle.</summary>
    private static async Task<long> SettledWorkingSetAsync()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        await Task.Delay(TimeSpan.FromSeconds(1), Ct);
        using var process = Process.GetCurrentProcess();
        return process.WorkingSet64;
    }
}
