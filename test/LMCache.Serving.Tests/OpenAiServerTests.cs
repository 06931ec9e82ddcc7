using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net;
using System.Text;
using System.Text.Json;
using LMCache.Testing;
using OpenAI;
using OpenAI.Chat;

namespace LMCache.Serving.Tests;

[IntegrationTest]
public sealed class OpenAiServerTests : IClassFixture<ServerFixture>
{
    private readonly ServerFixture _fixture;

    public OpenAiServerTests(ServerFixture fixture) => _fixture = fixture;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private JsonElement Reference
    {
        get
        {
            var folder = RepositoryFixtures.TinyLlama;
            return JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "reference.json"))).RootElement;
        }
    }

    private OpenAIClientOptions ClientOptions => new() { Endpoint = new Uri(_fixture.Server.Address, "v1"), NetworkTimeout = TimeSpan.FromMinutes(5) };

    private ChatClient Chat() => new(_fixture.Model.Name, new ApiKeyCredential("unused"), ClientOptions);

    private static int[] Ids(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();

    private async Task<JsonElement> PostAsync(string path, object body, HttpStatusCode expected = HttpStatusCode.OK)
    {
        using var response = await _fixture.Http.PostAsync(path, new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json"), Ct);
        var text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(expected == response.StatusCode, $"{path}: expected {expected}, got {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement;
    }

    [Fact]
    public async Task Official_client_chat_matches_the_reference_first_token_and_reports_usage()
    {
        var chat = Reference.GetProperty("chat");
        var messages = chat.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("role").GetString() == "system"
            ? (OpenAI.Chat.ChatMessage)new SystemChatMessage(m.GetProperty("content").GetString())
            : new UserChatMessage(m.GetProperty("content").GetString())).ToList();
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 1, IncludeLogProbabilities = true, TopLogProbabilityCount = 3 };
        ChatCompletion completion = await Chat().CompleteChatAsync(messages, options, Ct);
        var top10 = Ids(chat.GetProperty("last_logits_top10"));
        var expectedText = _fixture.Model.Tokenizer.Decode([top10[0]]);
        Assert.Equal(expectedText, completion.Content[0].Text);
        Assert.Equal(Ids(chat.GetProperty("input_ids")).Length, completion.Usage.InputTokenCount);
        Assert.Equal(1, completion.Usage.OutputTokenCount);
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        var logProbs = Assert.Single(completion.ContentTokenLogProbabilities);
        Assert.Equal(3, logProbs.TopLogProbabilities.Count);
        Assert.Equal(expectedText, logProbs.TopLogProbabilities[0].Token);
    }

    [Fact]
    public async Task Official_client_streaming_chat_equals_the_non_streaming_answer_and_caches_the_long_prompt()
    {
        var longText = Reference.GetProperty("prompts").GetProperty("long").GetProperty("text").GetString()!;
        var salt = Guid.NewGuid().ToString("N");
        // The first question to a new document: nothing cached. A random system prompt keeps it apart from other tests.
        List<OpenAI.Chat.ChatMessage> messages = [new SystemChatMessage("Session " + salt), new UserChatMessage(longText)];
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 };
        ChatCompletion first = await Chat().CompleteChatAsync(messages, options, Ct);
        Assert.Equal(0, first.Usage.InputTokenDetails.CachedTokenCount);

        var streamed = new StringBuilder();
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in Chat().CompleteChatStreamingAsync(messages, options, Ct))
        {
            foreach (var part in update.ContentUpdate)
            {
                streamed.Append(part.Text);
            }
            usage ??= update.Usage;
            finish ??= update.FinishReason;
        }
        Assert.Equal(first.Content[0].Text, streamed.ToString());
        Assert.Equal(ChatFinishReason.Length, finish);
        Assert.NotNull(usage);   // the client asks for stream_options.include_usage
        Assert.Equal(first.Usage.InputTokenCount / 256 * 256, usage.InputTokenDetails.CachedTokenCount);
        Assert.True(usage.InputTokenDetails.CachedTokenCount >= 1536);
    }

    [Fact]
    public async Task Official_client_pipeline_completions_with_text_and_token_ids_match_the_reference()
    {
        var shortPrompt = Reference.GetProperty("prompts").GetProperty("short");
        var expected = _fixture.Model.Tokenizer.Decode(Ids(shortPrompt.GetProperty("greedy_16")));
        // LegacyCompletionClient is internal in OpenAI 2.x: send /v1/completions through the client's own pipeline.
        var client = new OpenAIClient(new ApiKeyCredential("unused"), ClientOptions);
        foreach (object prompt in new object[] { shortPrompt.GetProperty("text").GetString()!, Ids(shortPrompt.GetProperty("input_ids")) })
        {
            var message = client.Pipeline.CreateMessage();
            message.Request.Method = "POST";
            message.Request.Uri = new Uri(_fixture.Server.Address, "v1/completions");
            message.Request.Headers.Set("Content-Type", "application/json");
            message.Request.Content = BinaryContent.Create(BinaryData.FromObjectAsJson(new { model = _fixture.Model.Name, prompt, max_tokens = 16, temperature = 0, ignore_eos = true }));
            message.ResponseClassifier = PipelineMessageClassifier.Create([200]);
            await client.Pipeline.SendAsync(message);
            Assert.Equal(200, message.Response!.Status);
            var body = JsonDocument.Parse(message.Response.Content.ToString()).RootElement;
            Assert.Equal(expected, body.GetProperty("choices")[0].GetProperty("text").GetString());
            Assert.Equal("length", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
            Assert.Equal(21, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            Assert.Equal(16, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        }
    }

    [Fact]
    public async Task Streaming_completion_with_logprobs_and_stop_sequence()
    {
        var shortPrompt = Reference.GetProperty("prompts").GetProperty("short");
        var full = _fixture.Model.Tokenizer.Decode(Ids(shortPrompt.GetProperty("greedy_16")));
        var stop = full.Substring(full.Length / 2, 3);
        var expected = full[..full.IndexOf(stop, StringComparison.Ordinal)];

        var body = new { prompt = shortPrompt.GetProperty("text").GetString(), max_tokens = 16, temperature = 0, ignore_eos = true, stop = new[] { stop }, stream = true, logprobs = 2 };
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json") };
        using var response = await _fixture.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var text = new StringBuilder();
        string? finish = null;
        var sawDone = false;
        var logprobEntries = 0;
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Ct));
        while (await reader.ReadLineAsync(Ct) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
            {
                continue;
            }
            var data = line["data: ".Length..];
            if (data == "[DONE]")
            {
                sawDone = true;
                break;
            }
            var choice = JsonDocument.Parse(data).RootElement.GetProperty("choices")[0];
            text.Append(choice.GetProperty("text").GetString());
            if (choice.GetProperty("logprobs").ValueKind == JsonValueKind.Object)
            {
                logprobEntries++;
                Assert.Equal(2, choice.GetProperty("logprobs").GetProperty("top_logprobs")[0].EnumerateObject().Count());
            }
            if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String)
            {
                finish = choice.GetProperty("finish_reason").GetString();
            }
        }
        Assert.True(sawDone);
        Assert.Equal(expected, text.ToString());
        Assert.Equal("stop", finish);
        Assert.True(logprobEntries > 0);
    }

    [Fact]
    public async Task Concurrent_requests_never_corrupt_each_other()
    {
        var prompts = new[] { "long", "short", "shared_prefix_a", "shared_prefix_b" }.Select(n => Reference.GetProperty("prompts").GetProperty(n)).ToArray();
        var tasks = Enumerable.Range(0, 8).Select(async i =>
        {
            var p = prompts[i % prompts.Length];
            var body = await PostAsync("v1/completions", new { prompt = Ids(p.GetProperty("input_ids")), max_tokens = 16, temperature = 0, ignore_eos = true, cache_salt = "concurrent" });
            Assert.Equal(_fixture.Model.Tokenizer.Decode(Ids(p.GetProperty("greedy_16"))), body.GetProperty("choices")[0].GetProperty("text").GetString());
        });
        await Task.WhenAll(tasks);
    }

    [Fact]
    public async Task Bad_requests_get_openai_style_400s()
    {
        using (var response = await _fixture.Http.PostAsync("v1/completions", new StringContent("{not json", Encoding.UTF8, "application/json"), Ct))
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct)).RootElement.GetProperty("error");
            Assert.Contains("JSON", error.GetProperty("message").GetString(), StringComparison.Ordinal);
            Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        }
        var tooLong = Enumerable.Repeat(7, _fixture.Model.ContextLength + 1).ToArray();
        var e1 = await PostAsync("v1/completions", new { prompt = tooLong }, HttpStatusCode.BadRequest);
        Assert.Contains("maximum context length", e1.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        await PostAsync("v1/completions", new { prompt = "x", temperature = 5 }, HttpStatusCode.BadRequest);
        await PostAsync("v1/completions", new { prompt = new[] { 1, 999999 } }, HttpStatusCode.BadRequest);
        await PostAsync("v1/completions", new { max_tokens = 3 }, HttpStatusCode.BadRequest);
        await PostAsync("v1/completions", new { prompt = "x", max_tokens = 0 }, HttpStatusCode.BadRequest);
        await PostAsync("v1/chat/completions", new { messages = "hi" }, HttpStatusCode.BadRequest);
        await PostAsync("v1/chat/completions", new { messages = new[] { new { content = "no role" } } }, HttpStatusCode.BadRequest);
        var notFound = await PostAsync("v1/chat/completions", new { model = "other-model", messages = new[] { new { role = "user", content = "hi" } } }, HttpStatusCode.NotFound);
        Assert.Equal("model_not_found", notFound.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task Models_health_and_metrics()
    {
        var models = JsonDocument.Parse(await _fixture.Http.GetStringAsync("v1/models", Ct)).RootElement;
        Assert.Equal(_fixture.Model.Name, models.GetProperty("data")[0].GetProperty("id").GetString());
        Assert.Equal(8192, models.GetProperty("data")[0].GetProperty("max_model_len").GetInt32());
        using (var health = await _fixture.Http.GetAsync("health", Ct))
        {
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        }
        await PostAsync("v1/completions", new { prompt = "hello", max_tokens = 2 });
        var metrics = await _fixture.Http.GetStringAsync("metrics", Ct);
        Assert.Contains("lmcache_serving_time_to_first_token_seconds_bucket{", metrics, StringComparison.Ordinal);
        Assert.Contains("lmcache_serving_requests_total{", metrics, StringComparison.Ordinal);
        Assert.Contains("lmcache_serving_cached_tokens_total{", metrics, StringComparison.Ordinal);
        Assert.Contains("lmcache_tier_hit_rate{model_name=", metrics, StringComparison.Ordinal);
        Assert.Contains("lmcache:num_hit_tokens{", metrics, StringComparison.Ordinal);
        // The engine's retrieve timings come from its Meter histogram, through the one exporter, in the original's buckets.
        Assert.Contains("# TYPE lmcache:time_to_retrieve histogram\n", metrics, StringComparison.Ordinal);
        Assert.Contains("lmcache:time_to_retrieve_bucket{model_name=\"" + _fixture.Model.Name + "\",le=\"+Inf\"}", metrics, StringComparison.Ordinal);
        var retrieves = metrics.Split('\n').Single(l => l.StartsWith("lmcache:time_to_retrieve_count{", StringComparison.Ordinal));
        Assert.True(long.Parse(retrieves[(retrieves.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture) > 0);
        var prompt = metrics.Split('\n').Single(l => l.StartsWith("lmcache_serving_prompt_tokens_total{", StringComparison.Ordinal));
        Assert.True(long.Parse(prompt[(prompt.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture) > 0);
    }
}
