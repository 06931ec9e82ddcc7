using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace LMCache.Serving.Tests;

/// <summary>
/// What an outside user can send that the server must answer as a client error with OpenAI's error shape (never a
/// 500), without its memory growing: huge prompts, overflowing numbers, wrongly typed fields, lone surrogates, bodies
/// over the limit and bodies trickled a byte a second.
/// </summary>
public sealed class HostileRequestTests : IClassFixture<ServerFixture>
{
    private readonly ServerFixture _fixture;

    public HostileRequestTests(ServerFixture fixture) => _fixture = fixture;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task<(HttpStatusCode Status, JsonElement Error)> PostRawAsync(string path, string json)
    {
        using var content = new StringContent(json, Encoding.UTF8, "application/json");
        using var response = await _fixture.Http.PostAsync(path, content, Ct);
        var text = await response.Content.ReadAsStringAsync(Ct);
        JsonElement error = default;
        if (text.Length > 0)
        {
            using var doc = JsonDocument.Parse(text);
            if (doc.RootElement.TryGetProperty("error", out var e))
            {
                error = e.Clone();
            }
        }
        return (response.StatusCode, error);
    }

    private async Task AssertClientErrorAsync(string path, string json, HttpStatusCode expected, string? param)
    {
        var (status, error) = await PostRawAsync(path, json);
        var shown = json.Length > 200 ? json[..200] + "..." : json;
        Assert.True(expected == status, $"{shown}: expected {(int)expected}, got {(int)status} {error}");
        Assert.Equal(JsonValueKind.Object, error.ValueKind);
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        if (param is not null)
        {
            Assert.Equal(param, error.GetProperty("param").GetString());
        }
    }

    [Theory]
    [InlineData(2147483647)]
    [InlineData(2147483560)]
    [InlineData(2147483000)]
    public async Task Max_tokens_that_overflow_the_context_check_are400(int maxTokens)
    {
        foreach (var (path, body) in new[]
        {
            ("v1/chat/completions", JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = "hello there" } }, max_tokens = maxTokens })),
            ("v1/completions", JsonSerializer.Serialize(new { prompt = Enumerable.Range(100, 100).ToArray(), max_tokens = maxTokens })),
            ("v1/chat/completions", JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = "hello there" } }, max_completion_tokens = maxTokens })),
        })
        {
            await AssertClientErrorAsync(path, body, HttpStatusCode.BadRequest, path.Contains("chat", StringComparison.Ordinal) ? "messages" : "prompt");
        }
        // Beyond int: still a client error naming the field.
        await AssertClientErrorAsync("v1/completions", """{"prompt": "x", "max_tokens": 99999999999999999999}""", HttpStatusCode.BadRequest, "max_tokens");
        await AssertClientErrorAsync("v1/completions", """{"prompt": "x", "max_tokens": 1e400}""", HttpStatusCode.BadRequest, null);
    }

    [Theory]
    [InlineData("cache_salt", "5")]
    [InlineData("cache_salt", "true")]
    [InlineData("cache_salt", "{}")]
    [InlineData("cache_salt", "[1]")]
    [InlineData("model", "5")]
    [InlineData("model", "[\"m\"]")]
    [InlineData("stop", "5")]
    [InlineData("stop", "[\"a\", 1]")]
    [InlineData("stream", "\"yes\"")]
    [InlineData("stream_options", "true")]
    [InlineData("user", "5")]
    [InlineData("seed", "\"1\"")]
    [InlineData("temperature", "\"0\"")]
    [InlineData("top_p", "[]")]
    [InlineData("max_tokens", "\"8\"")]
    [InlineData("max_tokens", "8.5")]
    [InlineData("n", "\"1\"")]
    [InlineData("best_of", "\"2\"")]
    [InlineData("ignore_eos", "1")]
    [InlineData("logit_bias", "[]")]
    [InlineData("tools", "{}")]
    [InlineData("add_generation_prompt", "\"no\"")]
    [InlineData("logprobs", "2")]
    [InlineData("top_logprobs", "\"3\"")]
    [InlineData("response_format", "\"json\"")]
    [InlineData("chat_template_kwargs", "[]")]
    public async Task A_wrongly_typed_chat_field_is400_naming_it(string field, string value)
    {
        var json = $$"""{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "{{field}}": {{value}}}""";
        await AssertClientErrorAsync("v1/chat/completions", json, HttpStatusCode.BadRequest, field);
    }

    [Theory]
    [InlineData("cache_salt", "5")]
    [InlineData("model", "{}")]
    [InlineData("prompt", "5")]
    [InlineData("prompt", "[1, \"a\"]")]
    [InlineData("prompt", "[1.5]")]
    [InlineData("logprobs", "true")]
    [InlineData("echo", "\"no\"")]
    [InlineData("suffix", "5")]
    [InlineData("stop", "{}")]
    public async Task A_wrongly_typed_completion_field_is400_naming_it(string field, string value)
    {
        var json = field == "prompt"
            ? $$"""{"max_tokens": 1, "prompt": {{value}}}"""
            : $$"""{"prompt": "hi", "max_tokens": 1, "{{field}}": {{value}}}""";
        await AssertClientErrorAsync("v1/completions", json, HttpStatusCode.BadRequest, field);
    }

    [Theory]
    [InlineData("""[{"role": 5, "content": "hi"}]""")]
    [InlineData("""[{"role": "user", "content": 5}]""")]
    [InlineData("""[{"role": "user", "content": [{"type": "text", "text": 5}]}]""")]
    [InlineData("""[{"role": "user", "content": [{"type": 5, "text": "x"}]}]""")]
    [InlineData("""[{"role": "user", "content": "hi", "name": 5}]""")]
    [InlineData("""[{"role": "user", "content": "hi", "tool_calls": "x"}]""")]
    [InlineData("""["hi"]""")]
    [InlineData("""{"role": "user", "content": "hi"}""")]
    public async Task A_wrongly_typed_message_is400_naming_messages(string messages)
    {
        await AssertClientErrorAsync("v1/chat/completions", $$"""{"messages": {{messages}}, "max_tokens": 1}""", HttpStatusCode.BadRequest, "messages");
    }

    [Theory]
    [InlineData("v1/chat/completions", """{"messages": [{"role": "user", "content": "a\ud800b"}], "max_tokens": 1}""", "messages")]
    [InlineData("v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "cache_salt": "\udc00"}""", "cache_salt")]
    [InlineData("v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "stop": ["\ud800\u0041"]}""", "stop")]
    [InlineData("v1/completions", """{"prompt": "\ud800", "max_tokens": 1}""", "prompt")]
    [InlineData("v1/completions", """{"prompt": "x", "max_tokens": 1, "model": "\udbff"}""", "model")]
    [InlineData("v1/completions", """{"prompt": "x", "max_tokens": 1, "\ud800": 1}""", null)]
    [InlineData("v1/completions", """{"prompt": "x", "max_tokens": 1, "user": "ok\ud800"}""", "user")]
    public async Task A_lone_surrogate_in_any_string_is400(string path, string json, string? param)
    {
        await AssertClientErrorAsync(path, json, HttpStatusCode.BadRequest, param);
    }

    [Fact]
    public async Task A_valid_surrogate_pair_is_accepted()
    {
        var (status, error) = await PostRawAsync("v1/completions", """{"prompt": "smile \ud83d\ude00", "max_tokens": 1}""");
        Assert.True(status == HttpStatusCode.OK, $"got {(int)status} {error}");
    }

    [Fact]
    public async Task A_body_over_the_limit_is413()
    {
        var limit = new OpenAiServerOptions().MaxRequestBodyBytes;
        // A declared length over the limit: answered before a byte of the body is sent.
        using (var client = await ConnectAsync())
        {
            var stream = client.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes(RequestHead($"Content-Length: {limit + 1}")), Ct);
            var response = await ReadResponseAsync(stream);
            Assert.StartsWith("HTTP/1.1 413", response, StringComparison.Ordinal);
            Assert.Contains("\"invalid_request_error\"", response, StringComparison.Ordinal);
        }
        // A chunked body (no length): answered as soon as it passes the limit.
        using (var client = await ConnectAsync())
        {
            var stream = client.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes(RequestHead("Transfer-Encoding: chunked")), Ct);
            var chunk = new byte[64 << 10];
            chunk.AsSpan().Fill((byte)' ');
            var chunkHead = Encoding.ASCII.GetBytes($"{chunk.Length:x}\r\n");
            var crlf = "\r\n"u8.ToArray();
            await stream.WriteAsync("1\r\n{\r\n"u8.ToArray(), Ct);
            for (long sent = 1; sent <= limit; sent += chunk.Length)
            {
                await stream.WriteAsync(chunkHead, Ct);
                await stream.WriteAsync(chunk, Ct);
                await stream.WriteAsync(crlf, Ct);
            }
            var response = await ReadResponseAsync(stream);
            Assert.StartsWith("HTTP/1.1 413", response, StringComparison.Ordinal);
        }
    }

    private static string RequestHead(string lengthHeader) =>
        $"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{lengthHeader}\r\n\r\n";

    private async Task<TcpClient> ConnectAsync()
    {
        var client = new TcpClient();
        await client.ConnectAsync(_fixture.Server.Address.Host, _fixture.Server.Address.Port, Ct);
        return client;
    }

    private static async Task<string> ReadResponseAsync(NetworkStream stream)
    {
        var buffer = new byte[16 << 10];
        var length = 0;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        while (length < buffer.Length)
        {
            var read = await stream.ReadAsync(buffer.AsMemory(length), timeout.Token);
            if (read == 0)
            {
                break;
            }
            length += read;
            var text = Encoding.UTF8.GetString(buffer, 0, length);
            var headerEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (headerEnd >= 0 && text.Contains("Content-Length: ", StringComparison.OrdinalIgnoreCase))
            {
                var start = text.IndexOf("Content-Length: ", StringComparison.OrdinalIgnoreCase) + "Content-Length: ".Length;
                var bodyLength = int.Parse(text.AsSpan(start, text.IndexOf('\r', start) - start), System.Globalization.CultureInfo.InvariantCulture);
                if (length >= headerEnd + 4 + bodyLength)
                {
                    break;
                }
            }
        }
        return Encoding.UTF8.GetString(buffer, 0, length);
    }

    [Fact]
    public async Task A_body_trickled_at_one_byte_per_second_is408()
    {
        using var client = await ConnectAsync();
        var stream = client.GetStream();
        var body = Encoding.ASCII.GetBytes("""{"prompt": "hello", "max_tokens": 1}""");
        var head = $"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head), Ct);
        var clock = Stopwatch.StartNew();
        var buffer = new byte[4096];
        var readTask = stream.ReadAsync(buffer, Ct).AsTask();
        var sent = 0;
        while (!readTask.IsCompleted && sent < body.Length && clock.Elapsed < TimeSpan.FromSeconds(60))
        {
            try
            {
                await stream.WriteAsync(body.AsMemory(sent, 1), Ct);
            }
            catch (IOException)
            {
                break;   // the server closed its side after answering
            }
            sent++;
            await Task.WhenAny(readTask, Task.Delay(1000, Ct));
        }
        var read = await readTask.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        var text = Encoding.ASCII.GetString(buffer, 0, read);
        Assert.StartsWith("HTTP/1.1 408", text, StringComparison.Ordinal);
        Assert.True(sent < body.Length, "the server must answer before the trickled body is complete");
    }
}
