using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Text.Json;
using System.Text.Json.Nodes;
using LMCache.Core.Diagnostics;
using LMCache.Engine;
using LMCache.Inference.Generation;
using LMCache.Inference.Templates.Jinja;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LMCache.Serving;

/// <summary>Where and how the server listens.</summary>
public sealed class OpenAiServerOptions
{
    /// <summary>Address to bind. Defaults to 127.0.0.1 (loopback only), as vLLM's examples.</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>TCP port; 0 picks a free one (tests). Defaults to 8000, vLLM's default.</summary>
    public int Port { get; init; } = 8000;

    /// <summary>
    /// Largest request body in bytes; a larger one is answered 413 (a declared <c>Content-Length</c> before anything
    /// is read, a chunked body as soon as it passes the limit). At most 1 GiB. Defaults to 32 MiB.
    /// </summary>
    public long MaxRequestBodyBytes { get; init; } = 32L << 20;

    /// <summary>
    /// Where the serving meter comes from. Defaults to null: the web host's <see cref="IMeterFactory"/>. <c>/metrics</c>
    /// shows the meters of this factory and of the cache engine's (<see cref="LMCacheEngine.MeterFactory"/>).
    /// </summary>
    public IMeterFactory? MeterFactory { get; init; }

    /// <summary>
    /// Largest prompt text in UTF-8 bytes (the completion's <c>prompt</c> string, or the chat messages' text in all);
    /// a larger one is answered 400 before the chat template or the tokenizer sees it. Text too long to fit the
    /// model's context whatever its tokens (more bytes than the context times the longest token's bytes) is refused
    /// the same way, whatever this limit. Below both, tokenizing stops as soon as the prompt passes the context, so a
    /// request's memory is bounded by its body, not by what tokenizing it would produce. Must not exceed
    /// <see cref="MaxRequestBodyBytes"/>. Defaults to 16 MiB (far beyond any context: 128k tokens are about 0.5 MB of text).
    /// </summary>
    public long MaxPromptBytes { get; init; } = 16L << 20;

    /// <summary>
    /// Slowest accepted request body, in bytes per second, averaged after <see cref="RequestBodyGracePeriod"/>; a
    /// slower body (a client trickling bytes to hold a connection) is answered 408 and the connection closed. 0
    /// turns the check off. Defaults to 240 bytes/s (Kestrel's default).
    /// </summary>
    public double MinRequestBodyBytesPerSecond { get; init; } = 240;

    /// <summary>Time a body may take before <see cref="MinRequestBodyBytesPerSecond"/> applies. Defaults to 5 s (Kestrel's default).</summary>
    public TimeSpan RequestBodyGracePeriod { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Longest time the request line and headers may take to arrive; slower clients get 408. Defaults to 30 s (Kestrel's default).</summary>
    public TimeSpan RequestHeadersTimeout { get; init; } = TimeSpan.FromSeconds(30);

    internal void Validate()
    {
        List<string> problems = [];
        if (MaxRequestBodyBytes is < 1024 or > 1L << 30)
        {
            problems.Add($"MaxRequestBodyBytes {MaxRequestBodyBytes} is outside 1 KiB..1 GiB");
        }
        if (MaxPromptBytes < 1 || MaxPromptBytes > MaxRequestBodyBytes)
        {
            problems.Add($"MaxPromptBytes {MaxPromptBytes} must be positive and at most MaxRequestBodyBytes ({MaxRequestBodyBytes})");
        }
        if (MinRequestBodyBytesPerSecond < 0 || !double.IsFinite(MinRequestBodyBytesPerSecond))
        {
            problems.Add($"MinRequestBodyBytesPerSecond {MinRequestBodyBytesPerSecond} must be a finite number >= 0");
        }
        if (RequestBodyGracePeriod <= TimeSpan.Zero || RequestHeadersTimeout <= TimeSpan.Zero)
        {
            problems.Add("RequestBodyGracePeriod and RequestHeadersTimeout must be positive");
        }
        if (problems.Count > 0)
        {
            throw new Core.Diagnostics.LMCacheConfigurationException(problems);
        }
    }
}

/// <summary>
/// The OpenAI-compatible HTTP server: <c>POST /v1/chat/completions</c>, <c>POST /v1/completions</c> (streaming
/// SSE or not, logprobs, stop, seed, temperature, top_p, max_tokens, vLLM's <c>cache_salt</c> and
/// <c>ignore_eos</c>), <c>GET /v1/models</c>, <c>GET /health</c>, <c>GET /metrics</c> (Prometheus). Client errors are
/// answered with OpenAI's error object — 400 (malformed or wrongly typed fields, prompts over the context), 404
/// (another model), 408 (a body arriving too slowly), 413 (a body over the limit) — never 500; requests queue on the
/// engine. Memory per request is bounded by its body (see <see cref="OpenAiServerOptions.MaxPromptBytes"/>).
/// </summary>
public sealed partial class OpenAiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly InferenceEngine _engine;
    private readonly ServingMetrics _metrics;
    private readonly PrometheusExporter _exporter;
    private readonly ILogger _logger;
    private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    private readonly OpenAiServerOptions _options;

    private OpenAiServer(WebApplication app, InferenceEngine engine, OpenAiServerOptions options, IMeterFactory meterFactory, ILogger logger)
    {
        _app = app;
        _options = options;
        _engine = engine;
        _metrics = new ServingMetrics(meterFactory, () => engine.QueueDepth, () => (engine.RunningRequests, engine.WaitingRequests));
        engine.StepCompleted += OnStep;
        IMeterFactory[] scopes = engine.Cache is { } cache ? [meterFactory, cache.MeterFactory] : [meterFactory];
        _exporter = new PrometheusExporter(scopes, [new("model_name", engine.Model.Name)]);
        _logger = logger;
    }

    /// <summary>The address the server listens on (with the actual port when 0 was asked for).</summary>
    public Uri Address { get; private set; } = new("http://127.0.0.1/");

    /// <summary>The serving metrics.</summary>
    public ServingMetrics Metrics => _metrics;

    /// <summary>Builds and starts the server over <paramref name="engine"/> (owned by the caller).</summary>
    public static async Task<OpenAiServer> StartAsync(InferenceEngine engine, OpenAiServerOptions options, ILoggerFactory loggerFactory, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(loggerFactory);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            k.Limits.MinRequestBodyDataRate = options.MinRequestBodyBytesPerSecond > 0
                ? new MinDataRate(options.MinRequestBodyBytesPerSecond, options.RequestBodyGracePeriod)
                : null;
            k.Limits.RequestHeadersTimeout = options.RequestHeadersTimeout;
            k.AddServerHeader = false;
        });
        builder.WebHost.UseUrls($"http://{(options.Host.Contains(':', StringComparison.Ordinal) ? $"[{options.Host}]" : options.Host)}:{options.Port}");
        var app = builder.Build();
        var meterFactory = options.MeterFactory ?? app.Services.GetRequiredService<IMeterFactory>();
        var server = new OpenAiServer(app, engine, options, meterFactory, loggerFactory.CreateLogger<OpenAiServer>());
        server.Map(app);
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Address = new Uri(address.Replace("[::]", "127.0.0.1", StringComparison.Ordinal).Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal) + "/");
        LogListening(server._logger, server.Address.ToString(), engine.Model.Name);
        return server;
    }

    /// <summary>Completes when the server stops.</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => Microsoft.Extensions.Hosting.HostingAbstractionsHostExtensions.WaitForShutdownAsync(_app, cancellationToken);

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
        _engine.StepCompleted -= OnStep;
        _exporter.Dispose();
        _metrics.Dispose();
    }

    private void OnStep(SchedulerStep step) => _metrics.RecordBatch(step.DecodeRows);

    private void Map(WebApplication app)
    {
        app.MapGet("/health", () => Results.Json(new { status = "ok" }));
        app.MapGet("/v1/models", (HttpContext context) =>
        {
            _metrics.RecordRequest("/v1/models", 200);
            return Results.Json(new JsonObject
            {
                ["object"] = "list",
                ["data"] = new JsonArray(new JsonObject
                {
                    ["id"] = _engine.Model.Name,
                    ["object"] = "model",
                    ["created"] = _created,
                    ["owned_by"] = "lmcache",
                    ["root"] = _engine.Model.Folder,
                    ["max_model_len"] = _engine.MaxModelLength,
                }),
            });
        });
        app.MapGet("/metrics", () => Results.Text(_exporter.Write(), PrometheusExporter.ContentType));
        app.MapPost("/v1/completions", (HttpContext context) => HandleAsync(context, "/v1/completions", chat: false));
        app.MapPost("/v1/chat/completions", (HttpContext context) => HandleAsync(context, "/v1/chat/completions", chat: true));
    }

    private async Task HandleAsync(HttpContext context, string endpoint, bool chat)
    {
        var arrived = Stopwatch.GetTimestamp();
        var status = 200;
        RequestBody? body = null;
        try
        {
            body = await RequestBody.ReadAsync(context.Request, _options.MaxRequestBodyBytes, context.RequestAborted).ConfigureAwait(false);
            var root = body.Document.RootElement;
            var common = OpenAiRequests.ParseCommon(root, chat);
            if (common.Model is not null && common.Model != _engine.Model.Name)
            {
                throw new OpenAiRequestException($"The model '{common.Model}' does not exist; this server serves '{_engine.Model.Name}'.", "model", 404, "NotFoundError", "model_not_found");
            }
            var contextLength = _engine.MaxModelLength;
            // At least one token must be left to generate: a prompt may hold ContextLength - 1 tokens at most.
            var maxPromptTokens = contextLength - 1;
            var param = chat ? "messages" : "prompt";
            var limits = new PromptLimits(contextLength, maxPromptTokens, _options.MaxPromptBytes, _engine.Model.Tokenizer.MaxTextBytes(maxPromptTokens));
            int[] promptIds;
            var logProbs = false;
            var topLogProbs = 0;
            if (chat)
            {
                var template = _engine.Model.ChatTemplate
                    ?? throw new OpenAiRequestException("This model has no chat template; use /v1/completions.", "messages");
                var messages = OpenAiRequests.ParseMessages(root, limits);
                var addGenerationPrompt = OpenAiRequests.OptionalBool(root, "add_generation_prompt") ?? true;
                logProbs = OpenAiRequests.OptionalBool(root, "logprobs") ?? false;
                topLogProbs = OpenAiRequests.OptionalInt(root, "top_logprobs") ?? 0;
                if (topLogProbs is < 0 or > 20)
                {
                    throw new OpenAiRequestException("top_logprobs must be between 0 and 20.", "top_logprobs");
                }
                if (topLogProbs > 0 && !logProbs)
                {
                    throw new OpenAiRequestException("top_logprobs requires logprobs = true.", "top_logprobs");
                }
                string rendered;
                try
                {
                    rendered = template.Render(messages, addGenerationPrompt, root.TryGetProperty("tools", out var tools) ? tools : null);
                }
                catch (JinjaException ex)
                {
                    throw new OpenAiRequestException($"The chat template could not be applied: {ex.Message}", "messages");
                }
                if (!_engine.Model.Tokenizer.TryEncode(rendered, addSpecialTokens: false, maxPromptTokens, out promptIds))
                {
                    throw OpenAiRequests.ContextExceeded(contextLength, maxPromptTokens + 1, common.MaxTokens, param, atLeast: true);
                }
            }
            else
            {
                var lp = OpenAiRequests.OptionalInt(root, "logprobs");
                if (lp is < 0 or > 20)
                {
                    throw new OpenAiRequestException("logprobs must be between 0 and 20.", "logprobs");
                }
                logProbs = lp is not null;
                topLogProbs = lp ?? 0;
                var (text, ids) = OpenAiRequests.ParsePrompt(root, limits);
                if (ids is null && !_engine.Model.Tokenizer.TryEncode(text!, addSpecialTokens: true, maxPromptTokens, out ids))
                {
                    throw OpenAiRequests.ContextExceeded(contextLength, maxPromptTokens + 1, common.MaxTokens, param, atLeast: true);
                }
                promptIds = ids;
            }

            // Checked in long: max_tokens is the client's number (up to int.MaxValue) and must not wrap the sum.
            if ((long)promptIds.Length + (common.MaxTokens ?? 1) > contextLength)
            {
                throw OpenAiRequests.ContextExceeded(contextLength, promptIds.Length, common.MaxTokens, param);
            }
            var maxTokens = common.MaxTokens ?? (chat ? contextLength - promptIds.Length : 16);
            var request = new GenerationRequest
            {
                PromptTokens = promptIds,
                MaxTokens = maxTokens,
                Sampling = common.Sampling,
                Stop = common.Stop,
                IgnoreEos = common.IgnoreEos,
                CacheSalt = common.CacheSalt,
                LogProbs = logProbs,
                TopLogProbs = topLogProbs,
            };
            try
            {
                _engine.Validate(request);
            }
            catch (InvalidGenerationRequestException ex)
            {
                throw new OpenAiRequestException(ex.Message, chat ? "messages" : "prompt");
            }
            // Everything needed is copied out: free the body (and its document) before the long part, generation.
            body.Dispose();
            body = null;
            var id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
            if (common.Stream)
            {
                await StreamAsync(context, request, id, chat, common.IncludeUsage, arrived).ConfigureAwait(false);
            }
            else
            {
                var result = await CollectAsync(request, context.RequestAborted).ConfigureAwait(false);
                RecordGeneration(result.Completed, result.Tokens.Count, arrived);
                await WriteJsonAsync(context, 200, BuildResponse(result, id, chat)).ConfigureAwait(false);
            }
        }
        catch (OpenAiRequestException ex)
        {
            status = ex.Status;
            LogRequestRejected(_logger, endpoint, ex.Status, ex.Message);
            if (!context.Response.HasStarted)
            {
                await WriteJsonAsync(context, ex.Status, OpenAiRequestException.Body(ex.Message, ex.Type, ex.Param, ex.Code)).ConfigureAwait(false);
            }
        }
        catch (EngineOverloadedException ex)
        {
            // A full waiting queue: OpenAI's answer to an overloaded engine, so clients back off and retry.
            status = 503;
            LogRequestRejected(_logger, endpoint, status, ex.Message);
            if (!context.Response.HasStarted)
            {
                context.Response.Headers.RetryAfter = "1";
                await WriteJsonAsync(context, status, OpenAiRequestException.Body(ex.Message, "server_error", null, null)).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            status = 499;
        }
        catch (Exception ex)
        {
            status = 500;
            LogRequestFailed(_logger, endpoint, ex);
            if (!context.Response.HasStarted)
            {
                await WriteJsonAsync(context, 500, OpenAiRequestException.Body($"Internal error: {ex.Message}", "internal_error", null, null)).ConfigureAwait(false);
            }
        }
        finally
        {
            body?.Dispose();
            _metrics.RecordRequest(endpoint, status);
        }
    }

    private void RecordGeneration(CompletedEvent completed, int tokens, long arrived)
    {
        var s = completed.Stats;
        _metrics.RecordGeneration(s.PromptTokens, tokens, s.CachedTokens, s.QueueSeconds + s.TimeToFirstTokenSeconds);
        _metrics.RecordRequestLatency(Stopwatch.GetElapsedTime(arrived).TotalSeconds);
    }

    /// <summary>A non-streaming generation, collected as the engine produces it, timing its tokens like a stream.</summary>
    private Task<GenerationResult> CollectAsync(GenerationRequest request, CancellationToken cancellationToken)
    {
        var timer = new TokenTimer(_metrics);
        return _engine.GenerateToEndAsync(request, _ => timer.Token(), cancellationToken);
    }

    /// <summary>Records the inter-token latency of one request's tokens as the server receives them.</summary>
    private struct TokenTimer(ServingMetrics metrics)
    {
        private long _last;

        public void Token()
        {
            var now = Stopwatch.GetTimestamp();
            if (_last != 0)
            {
                metrics.RecordInterTokenLatency(Stopwatch.GetElapsedTime(_last, now).TotalSeconds);
            }
            _last = now;
        }
    }

    private JsonObject BuildResponse(GenerationResult result, string id, bool chat)
    {
        var choice = new JsonObject { ["index"] = 0 };
        if (chat)
        {
            choice["message"] = new JsonObject { ["role"] = "assistant", ["content"] = result.Text };
            choice["logprobs"] = result.Tokens.Count > 0 && result.Tokens[0].LogProb is not null
                ? new JsonObject { ["content"] = new JsonArray([.. result.Tokens.Select(ChatLogProb)]) }
                : null;
        }
        else
        {
            choice["text"] = result.Text;
            choice["logprobs"] = result.Tokens.Count > 0 && result.Tokens[0].LogProb is not null ? CompletionLogProbs(result.Tokens, 0) : null;
        }
        choice["finish_reason"] = result.Completed.FinishReason;
        return new JsonObject
        {
            ["id"] = id,
            ["object"] = chat ? "chat.completion" : "text_completion",
            ["created"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
            ["model"] = _engine.Model.Name,
            ["choices"] = new JsonArray(choice),
            ["usage"] = Usage(result.Completed.Stats, result.Tokens.Count),
        };
    }

    private static JsonObject Usage(GenerationStats stats, int completionTokens) => new()
    {
        ["prompt_tokens"] = stats.PromptTokens,
        ["completion_tokens"] = completionTokens,
        ["total_tokens"] = stats.PromptTokens + completionTokens,
        ["prompt_tokens_details"] = new JsonObject { ["cached_tokens"] = stats.CachedTokens },
    };

    private JsonObject ChatLogProb(TokenEvent token) => new()
    {
        ["token"] = token.Token,
        ["logprob"] = token.LogProb,
        ["bytes"] = new JsonArray([.. _engine.Model.Tokenizer.TokenBytesOf(token.TokenId).ToArray().Select(b => (JsonNode)(int)b)]),
        ["top_logprobs"] = new JsonArray([.. (token.TopLogProbs ?? []).Select(t => (JsonNode)new JsonObject
        {
            ["token"] = _engine.Model.Tokenizer.Decode([t.TokenId], skipSpecialTokens: false),
            ["logprob"] = t.LogProb,
            ["bytes"] = new JsonArray([.. _engine.Model.Tokenizer.TokenBytesOf(t.TokenId).ToArray().Select(b => (JsonNode)(int)b)]),
        })]),
    };

    private JsonObject CompletionLogProbs(IReadOnlyList<TokenEvent> tokens, int textOffset)
    {
        var offsets = new JsonArray();
        var offset = textOffset;
        foreach (var t in tokens)
        {
            offsets.Add(offset);
            offset += t.Token.Length;
        }
        return new JsonObject
        {
            ["tokens"] = new JsonArray([.. tokens.Select(t => (JsonNode)t.Token)]),
            ["token_logprobs"] = new JsonArray([.. tokens.Select(t => (JsonNode?)t.LogProb)]),
            ["top_logprobs"] = new JsonArray([.. tokens.Select(t =>
            {
                var top = new JsonObject();
                foreach (var (tokenId, lp) in t.TopLogProbs ?? [])
                {
                    top[_engine.Model.Tokenizer.Decode([tokenId], skipSpecialTokens: false)] = lp;
                }
                return (JsonNode)top;
            })]),
            ["text_offset"] = offsets,
        };
    }

    private async Task StreamAsync(HttpContext context, GenerationRequest request, string id, bool chat, bool includeUsage, long arrived)
    {
        var created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var response = context.Response;
        var started = false;
        var count = 0;
        var timer = new TokenTimer(_metrics);
        var textOffset = 0;

        JsonObject Chunk(JsonObject choice) => new()
        {
            ["id"] = id,
            ["object"] = chat ? "chat.completion.chunk" : "text_completion",
            ["created"] = created,
            ["model"] = _engine.Model.Name,
            ["choices"] = new JsonArray(choice),
        };

        async Task StartAsync()
        {
            if (started)
            {
                return;
            }
            started = true;
            response.StatusCode = 200;
            response.ContentType = "text/event-stream";
            response.Headers.CacheControl = "no-cache";
            if (chat)
            {
                await SendAsync(response, Chunk(new JsonObject
                {
                    ["index"] = 0,
                    ["delta"] = new JsonObject { ["role"] = "assistant", ["content"] = "" },
                    ["logprobs"] = null,
                    ["finish_reason"] = null,
                }), context.RequestAborted).ConfigureAwait(false);
            }
        }

        await foreach (var e in _engine.GenerateAsync(request, context.RequestAborted).ConfigureAwait(false))
        {
            await StartAsync().ConfigureAwait(false);
            switch (e)
            {
                case TokenEvent t:
                    timer.Token();
                    count++;
                    if (t.TextDelta.Length == 0 && t.LogProb is null)
                    {
                        continue;
                    }
                    var choice = new JsonObject { ["index"] = 0 };
                    if (chat)
                    {
                        choice["delta"] = new JsonObject { ["content"] = t.TextDelta };
                        choice["logprobs"] = t.LogProb is null ? null : new JsonObject { ["content"] = new JsonArray(ChatLogProb(t)) };
                    }
                    else
                    {
                        choice["text"] = t.TextDelta;
                        choice["logprobs"] = t.LogProb is null ? null : CompletionLogProbs([t], textOffset);
                        textOffset += t.Token.Length;
                    }
                    choice["finish_reason"] = null;
                    await SendAsync(response, Chunk(choice), context.RequestAborted).ConfigureAwait(false);
                    break;
                case CompletedEvent c:
                    RecordGeneration(c, count, arrived);
                    var last = new JsonObject { ["index"] = 0 };
                    if (chat)
                    {
                        last["delta"] = c.TrailingText.Length > 0 ? new JsonObject { ["content"] = c.TrailingText } : new JsonObject();
                    }
                    else
                    {
                        last["text"] = c.TrailingText;
                    }
                    last["logprobs"] = null;
                    last["finish_reason"] = c.FinishReason;
                    await SendAsync(response, Chunk(last), context.RequestAborted).ConfigureAwait(false);
                    if (includeUsage)
                    {
                        var usage = Chunk(new JsonObject());
                        usage["choices"] = new JsonArray();
                        usage["usage"] = Usage(c.Stats, count);
                        await SendAsync(response, usage, context.RequestAborted).ConfigureAwait(false);
                    }
                    break;
            }
        }
        await StartAsync().ConfigureAwait(false);
        await response.WriteAsync("data: [DONE]\n\n", context.RequestAborted).ConfigureAwait(false);
        await response.Body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    private static async Task SendAsync(HttpResponse response, JsonObject chunk, CancellationToken cancellationToken)
    {
        await response.WriteAsync("data: " + chunk.ToJsonString(s_json) + "\n\n", cancellationToken).ConfigureAwait(false);
        await response.Body.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task WriteJsonAsync(HttpContext context, int status, JsonObject body)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(body.ToJsonString(s_json), context.RequestAborted).ConfigureAwait(false);
    }

    private static readonly JsonSerializerOptions s_json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    [LoggerMessage(EventId = 5100, Level = LogLevel.Information, Message = "OpenAI-compatible server listening on {Address} serving model '{Model}'")]
    private static partial void LogListening(ILogger logger, string address, string model);

    [LoggerMessage(EventId = 5101, Level = LogLevel.Error, Message = "Request to {Endpoint} failed")]
    private static partial void LogRequestFailed(ILogger logger, string endpoint, Exception exception);

    // The reason may quote the client (a model name, a template error): LogText escapes its control characters.
    [LoggerMessage(EventId = 5102, Level = LogLevel.Debug, Message = "Request to {Endpoint} answered {Status}: {Reason}")]
    private static partial void LogRequestRejected(ILogger logger, string endpoint, int status, LogText reason);
}
