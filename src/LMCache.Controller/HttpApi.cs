using System.Collections.Concurrent;
using System.Collections.Frozen;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using LMCache.Controller.Protocol;
using LMCache.Core.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace LMCache.Controller;

/// <summary>The controller's HTTP endpoints: the original's paths and JSON names, plus chunk browsing and usage.</summary>
internal static class HttpApi
{
    private static ControllerJsonContext Json => ControllerJsonContext.Default;

    /// <summary>
    /// The endpoints that change a worker's cache; with an auth token configured they need <c>Authorization: Bearer</c>.
    /// The rest read (the registry, the index, a worker's chunk list and health) and stay open, like <c>/metrics</c>.
    /// </summary>
    internal static readonly FrozenSet<string> MutatingPaths = FrozenSet.Create(StringComparer.OrdinalIgnoreCase,
        "/clear", "/pin", "/move", "/compress", "/decompress", "/delete_chunks", "/pin_chunks", "/unpin_chunks");

    /// <summary>Every mapped path and its method, so a known path with the wrong method answers 405, not 404.</summary>
    private static readonly ConcurrentDictionary<string, string> s_methods = new(StringComparer.OrdinalIgnoreCase);

    public static void Map(WebApplication app, LMCacheController controller)
    {
        var logger = app.Services.GetService(typeof(ILoggerFactory)) is ILoggerFactory factory
            ? factory.CreateLogger("LMCache.Controller.Http")
            : Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
        app.Use(async (context, next) =>
        {
            try
            {
                // Routing also matches a path with a trailing slash ("/clear/"): compare without it.
                if (controller.RequiresToken && MutatingPaths.Contains((context.Request.Path.Value ?? "").TrimEnd('/')) && !Authorized(controller, context.Request))
                {
                    ControllerLog.Unauthorized(logger, context.Request.Method, context.Request.Path.Value, context.Connection.RemoteIpAddress?.ToString() ?? "?");
                    context.Response.Headers.WWWAuthenticate = "Bearer";
                    throw new ControllerApiException(StatusCodes.Status401Unauthorized, "Unauthorized: this call changes a cache and needs 'Authorization: Bearer <token>' (the controller's --auth-token).");
                }
                await next(context).ConfigureAwait(false);
            }
            catch (ControllerApiException ex)
            {
                await WriteAsync(context, new ErrorResponse(ex.Message), Json.ErrorResponse, ex.StatusCode).ConfigureAwait(false);
            }
            catch (BadHttpRequestException ex)
            {
                // Kestrel's own refusals: a body over the limit (413), a malformed or too slow request (400, 408).
                await WriteAsync(context, new ErrorResponse(ex.StatusCode == StatusCodes.Status413PayloadTooLarge
                    ? $"The body is larger than {controller.Options.MaxRequestBodyBytes} bytes."
                    : ex.Message), Json.ErrorResponse, ex.StatusCode).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                ControllerLog.Unhandled(logger, ex, context.Request.Path.Value);
                await WriteAsync(context, new ErrorResponse($"Internal error: {ex.Message}"), Json.ErrorResponse, StatusCodes.Status500InternalServerError).ConfigureAwait(false);
            }
        });

        Post(app, "/lookup", Json.LookupRequest, async (LookupRequest body, CancellationToken _) =>
        {
            var tokens = body.Tokens ?? throw ControllerApiException.BadRequest("tokens is required: a list of token ids.");
            await Task.CompletedTask.ConfigureAwait(false);
            return Ok(new LookupResponse(LMCacheController.NewEventId("Lookup"), controller.Lookup(tokens)), Json.LookupResponse);
        });

        Post(app, "/clear", Json.InstanceLocationRequest, (InstanceLocationRequest body, CancellationToken ct) =>
        {
            var location = RequireLocation(body.Location);
            var workers = controller.ActiveWorkersOf(body.InstanceId);
            var eventId = LMCacheController.NewEventId("Clear");
            return RunEventAsync(controller, eventId, "clear", body.InstanceId!, body.Wait, async lifetime =>
            {
                var replies = await controller.FanOutAsync(workers, w => WorkerRequest(MessageTypes.ClearWorker, "Clear", w, eventId)
                    .With("location", location), MessageTypes.ClearWorkerRet, lifetime, longOperation: true).ConfigureAwait(false);
                return new OperationOutcome(LMCacheController.AgreedTokens(replies));
            }, ct);
        });

        Post(app, "/pin", Json.InstanceLocationRequest, async (InstanceLocationRequest body, CancellationToken ct) =>
        {
            var location = RequireLocation(body.Location);
            var tokens = body.Tokens ?? throw ControllerApiException.BadRequest("tokens is required: a list of token ids.");
            var eventId = LMCacheController.NewEventId("Pin");
            var replies = await controller.FanOutAsync(body.InstanceId, w => WorkerRequest(MessageTypes.PinWorker, "Pin", w, eventId)
                .With("location", location).With("tokens", tokens), MessageTypes.PinWorkerRet, ct).ConfigureAwait(false);
            return Ok(new NumTokensResponse(eventId, LMCacheController.AgreedTokens(replies)), Json.NumTokensResponse);
        });

        Post(app, "/compress", Json.CompressRequest, (CompressRequest body, CancellationToken ct) => ReencodeAsync(controller, body, compress: true, ct));
        Post(app, "/decompress", Json.CompressRequest, (CompressRequest body, CancellationToken ct) => ReencodeAsync(controller, body, compress: false, ct));

        Post(app, "/move", Json.MoveRequest, (MoveRequest body, CancellationToken ct) =>
        {
            if (body.OldPosition is not [var fromInstance, var fromLocation] || body.NewPosition is not [var toInstance, var toLocation])
            {
                throw ControllerApiException.BadRequest("old_position and new_position are required: [instance_id, location] each.");
            }
            RequireLocation(fromLocation);
            RequireLocation(toLocation);
            var copy = body.ShouldCopy ?? body.Copy ?? false;
            var tokens = body.Tokens ?? [];
            var eventId = LMCacheController.NewEventId("Move");
            var sources = controller.ActiveWorkersOf(fromInstance);
            if (toInstance == fromInstance)
            {
                return RunEventAsync(controller, eventId, "move", fromInstance, body.Wait, async lifetime =>
                {
                    var replies = await controller.FanOutAsync(sources, w => WorkerRequest(MessageTypes.MoveWorker, "Move", w, eventId)
                        .With("old_position", fromLocation)
                        .With("new_position", new List<object?> { w.DistributedUrl, toLocation })
                        .With("tokens", tokens)
                        .With("copy", copy), MessageTypes.MoveWorkerRet, lifetime, longOperation: true).ConfigureAwait(false);
                    return new OperationOutcome(LMCacheController.AgreedTokens(replies));
                }, ct);
            }
            var pairs = PairWorkers(sources, controller.ActiveWorkersOf(toInstance));
            return RunEventAsync(controller, eventId, "move", fromInstance, body.Wait,
                lifetime => MoveAcrossAsync(controller, eventId, pairs, fromLocation, toLocation, tokens, copy, lifetime), ct);
        });

        Post(app, "/check_finish", Json.CheckFinishRequest, async (CheckFinishRequest body, CancellationToken _) =>
        {
            await Task.CompletedTask.ConfigureAwait(false);
            var eventId = string.IsNullOrWhiteSpace(body.EventId) ? throw ControllerApiException.BadRequest("event_id is required.") : body.EventId;
            var found = controller.Events.Find(eventId)
                ?? throw ControllerApiException.NotFound($"Unknown event '{eventId}': no clear, move, compress or decompress with this id (or it is older than the last {controller.Options.EventHistory} events).");
            var outcome = found.Outcome;
            return Ok(new CheckFinishResponse(found.EventId, found.Status, found.Operation, found.InstanceId, found.StartedAt, found.FinishedAt,
                outcome?.NumTokens, outcome?.NumChunks, outcome?.OriginalBytes, outcome?.CompressedBytes, found.Error), Json.CheckFinishResponse);
        });

        Post(app, "/health", Json.InstanceLocationRequest, async (InstanceLocationRequest body, CancellationToken ct) =>
        {
            var eventId = LMCacheController.NewEventId("Health");
            if (body.InstanceId is "system" or "test")
            {
                return Ok(new HealthResponse(eventId, [], "Controller is running"), Json.HealthResponse);   // the original dashboard's probe
            }
            var replies = await controller.FanOutAsync(body.InstanceId, w => WorkerRequest(MessageTypes.HealthWorker, "Health", w, eventId),
                MessageTypes.HealthWorkerRet, ct).ConfigureAwait(false);
            var codes = replies.ToDictionary(r => r.Worker.WorkerId.ToString(CultureInfo.InvariantCulture), r => (int)r.Reply.GetInt64("error_code"));
            return Ok(new HealthResponse(eventId, codes), Json.HealthResponse);
        });

        Post(app, "/query_instance", Json.QueryInstanceRequest, async (QueryInstanceRequest body, CancellationToken _) =>
        {
            var ip = string.IsNullOrWhiteSpace(body.Ip) ? throw ControllerApiException.BadRequest("ip is required.") : body.Ip;
            await Task.CompletedTask.ConfigureAwait(false);
            var worker = controller.State.Workers().FirstOrDefault(w => w.Ip == ip)
                ?? throw ControllerApiException.NotFound($"No instance is registered from ip {ip}.");
            return Ok(new QueryInstanceResponse(body.EventId ?? LMCacheController.NewEventId("QueryInst"), worker.InstanceId), Json.QueryInstanceResponse);
        });

        Post(app, "/query_worker_info", Json.QueryWorkerInfoRequest, async (QueryWorkerInfoRequest body, CancellationToken _) =>
        {
            await Task.CompletedTask.ConfigureAwait(false);
            var all = string.IsNullOrEmpty(body.InstanceId) || body.InstanceId == "all";
            var workers = controller.State.Workers(all ? null : body.InstanceId);
            if (!all && workers.Count == 0)
            {
                throw ControllerApiException.NotFound($"Unknown instance '{body.InstanceId}': no worker of it is registered.");
            }
            if (body.WorkerIds is { Length: > 0 } ids)
            {
                workers = [.. workers.Where(w => ids.Contains(w.WorkerId))];
            }
            var infos = workers.Select(w => new WorkerInfo(w.InstanceId, w.WorkerId, w.Ip, w.Port, w.DistributedUrl, w.RegistrationTime,
                w.LastHeartbeatTime, controller.State.StatusOf(w), w.ModelName, w.ChunkSize)).ToList();
            return Ok(new WorkerInfosResponse(LMCacheController.NewEventId("QueryWorkerInfo"), infos), Json.WorkerInfosResponse);
        });

        Post(app, "/list_chunks", Json.ListChunksRequest, async (ListChunksRequest body, CancellationToken ct) =>
        {
            var eventId = LMCacheController.NewEventId("ListChunks");
            var limit = body.Limit ?? 1000;
            if (limit <= 0)
            {
                throw ControllerApiException.BadRequest($"limit = {limit}: must be a positive number of chunks.");
            }
            var replies = await controller.FanOutAsync(body.InstanceId, w => WorkerRequest(MessageTypes.ListChunksWorker, "ListChunks", w, eventId)
                .With("location", body.Location), MessageTypes.ListChunksWorkerRet, ct).ConfigureAwait(false);
            var chunks = new List<ChunkInfo>();
            foreach (var (worker, reply) in replies)
            {
                foreach (var item in reply.GetListOrEmpty("chunks").OfType<Dictionary<string, object?>>())
                {
                    var fields = new ControlMessage("chunk");
                    foreach (var (k, v) in item)
                    {
                        fields[k] = v;
                    }
                    var key = fields.GetString("key");
                    if (!string.IsNullOrEmpty(body.Search) && !key.Contains(body.Search, StringComparison.OrdinalIgnoreCase))
                    {
                        continue;
                    }
                    chunks.Add(new ChunkInfo(key, fields.GetString("location"), worker.WorkerId, fields.GetInt64("size"),
                        fields.GetInt64("num_tokens"), fields.GetBoolOrDefault("pinned", false), fields.GetDoubleOrDefault("admitted_at", 0),
                        fields.GetBoolOrDefault("compressed", false), fields.GetDoubleOrDefault("last_access", 0)));
                }
            }
            chunks.Sort((a, b) => b.AdmittedAt.CompareTo(a.AdmittedAt) is var c && c != 0 ? c : string.CompareOrdinal(a.Key, b.Key));
            return Ok(new ChunksResponse(eventId, body.InstanceId!, chunks.Count, [.. chunks.Take(limit)]), Json.ChunksResponse);
        });

        Post(app, "/delete_chunks", Json.ChunkKeysRequest, (ChunkKeysRequest body, CancellationToken ct) =>
            ChunkKeysAsync(controller, body, "DeleteChunks", MessageTypes.RemoveChunksWorker, MessageTypes.RemoveChunksWorkerRet, null, ct));
        Post(app, "/pin_chunks", Json.ChunkKeysRequest, (ChunkKeysRequest body, CancellationToken ct) =>
            ChunkKeysAsync(controller, body, "PinChunks", MessageTypes.PinChunksWorker, MessageTypes.PinChunksWorkerRet, false, ct));
        Post(app, "/unpin_chunks", Json.ChunkKeysRequest, (ChunkKeysRequest body, CancellationToken ct) =>
            ChunkKeysAsync(controller, body, "UnpinChunks", MessageTypes.PinChunksWorker, MessageTypes.PinChunksWorkerRet, true, ct));

        app.MapGet("/instances", () => Results.Json(Summaries.Instances(controller), Json.InstancesResponse));
        app.MapGet("/metrics", () => Results.Text(controller.Exporter.Write(), PrometheusExporter.ContentType, Encoding.UTF8));
        app.MapGet("/", () => Static("index.html"));
        app.MapGet("/static/{file}", (string file) => Static(file));
        foreach (var path in new[] { "/instances", "/metrics", "/" })
        {
            s_methods[path] = HttpMethods.Get;
        }
        app.MapFallback((HttpContext context) =>
        {
            if (s_methods.TryGetValue(context.Request.Path.Value ?? "", out var allowed))
            {
                context.Response.Headers.Allow = allowed;
                return Results.Json(new ErrorResponse($"{context.Request.Path} answers {allowed} only."), Json.ErrorResponse, statusCode: StatusCodes.Status405MethodNotAllowed);
            }
            return Results.Json(new ErrorResponse("Not found."), Json.ErrorResponse, statusCode: StatusCodes.Status404NotFound);
        });
    }

    private static async Task<IResult> ChunkKeysAsync(
        LMCacheController controller, ChunkKeysRequest body, string operation, string requestType, string replyType, bool? unpin, CancellationToken ct)
    {
        var keys = body.Keys is { Length: > 0 } k ? k : throw ControllerApiException.BadRequest("keys is required: a non-empty list of chunk keys.");
        var eventId = LMCacheController.NewEventId(operation);
        var replies = await controller.FanOutAsync(body.InstanceId, w =>
        {
            var request = WorkerRequest(requestType, operation, w, eventId).With("keys", keys).With("location", body.Location);
            return unpin is bool u ? request.With("unpin", u) : request;
        }, replyType, ct).ConfigureAwait(false);
        if (unpin is null)
        {
            controller.State.RemoveKeys(body.InstanceId!, keys, string.IsNullOrEmpty(body.Location) ? null : body.Location);
        }
        return Ok(new NumChunksResponse(eventId, replies.Sum(r => r.Reply.GetInt64("num_chunks"))), Json.NumChunksResponse);
    }

    /// <summary>
    /// Starts a long operation as an event. With <c>wait</c> false the caller gets 202 and the event id at once; otherwise
    /// (the original's behaviour) the reply waits for the end: <c>{event_id, num_tokens, …}</c>, or the failure's status.
    /// </summary>
    private static async Task<IResult> RunEventAsync(
        LMCacheController controller, string eventId, string operation, string instanceId, bool? wait,
        Func<CancellationToken, Task<OperationOutcome>> run, CancellationToken requestAborted)
    {
        var started = controller.Events.Start(eventId, operation, instanceId, run, controller.Lifetime);
        if (wait == false)
        {
            return Results.Json(new EventAcceptedResponse(eventId, ControllerEvents.Running), Json.EventAcceptedResponse, statusCode: StatusCodes.Status202Accepted);
        }
        await started.Completion.WaitAsync(requestAborted).ConfigureAwait(false);
        if (started.Status == ControllerEvents.Failed)
        {
            throw new ControllerApiException(started.ErrorStatus, started.Error!);
        }
        var outcome = started.Outcome!;
        return Ok(new NumTokensResponse(eventId, outcome.NumTokens, outcome.NumChunks, outcome.OriginalBytes, outcome.CompressedBytes), Json.NumTokensResponse);
    }

    private static Task<IResult> ReencodeAsync(LMCacheController controller, CompressRequest body, bool compress, CancellationToken ct)
    {
        var operation = compress ? "Compress" : "Decompress";
        var method = string.IsNullOrWhiteSpace(body.Method) ? throw ControllerApiException.BadRequest("method is required (\"cachegen\").") : body.Method;
        if (!string.Equals(method, "cachegen", StringComparison.OrdinalIgnoreCase))
        {
            throw ControllerApiException.BadRequest($"method '{method}' is not supported; the only compression method is \"cachegen\".");
        }
        var location = RequireLocation(body.Location);
        var workers = controller.ActiveWorkersOf(body.InstanceId);
        var eventId = LMCacheController.NewEventId(operation);
        return RunEventAsync(controller, eventId, operation.ToLowerInvariant(), body.InstanceId!, body.Wait, async lifetime =>
        {
            var replies = await controller.FanOutAsync(workers, w => WorkerRequest(compress ? MessageTypes.CompressWorker : MessageTypes.DecompressWorker, operation, w, eventId)
                .With("method", method).With("location", location).With("tokens", body.Tokens ?? []),
                compress ? MessageTypes.CompressWorkerRet : MessageTypes.DecompressWorkerRet, lifetime, longOperation: true).ConfigureAwait(false);
            return new OperationOutcome(
                LMCacheController.AgreedTokens(replies),
                replies.Sum(r => r.Reply.GetInt64OrDefault("num_chunks", 0)),
                replies.Sum(r => r.Reply.GetInt64OrDefault("original_bytes", 0)),
                replies.Sum(r => r.Reply.GetInt64OrDefault("compressed_bytes", 0)));
        }, ct);
    }

    /// <summary>
    /// Pairs source and destination workers by sorted worker id (the original's rule). A chunk's key names its model,
    /// world size and worker id, so a destination can serve what a source wrote only when these (and the chunking) agree.
    /// </summary>
    private static List<(WorkerRecord Source, WorkerRecord Target)> PairWorkers(List<WorkerRecord> sources, List<WorkerRecord> targets)
    {
        if (sources.Count != targets.Count)
        {
            throw ControllerApiException.BadRequest(
                $"Instance '{sources[0].InstanceId}' has {sources.Count} active workers and '{targets[0].InstanceId}' has {targets.Count}: a move pairs them one to one.");
        }
        var pairs = sources.OrderBy(w => w.WorkerId).Zip(targets.OrderBy(w => w.WorkerId)).ToList();
        foreach (var (source, target) in pairs)
        {
            if (source.WorkerId != target.WorkerId || source.ModelName != target.ModelName || source.KeyFormat != target.KeyFormat
                || source.WorldSize != target.WorldSize || source.KvDType != target.KvDType || source.ChunkSize != target.ChunkSize
                || source.HashSeed != target.HashSeed || source.SaveUnfullChunk != target.SaveUnfullChunk)
            {
                throw ControllerApiException.BadRequest(
                    $"Workers {source.InstanceId}/{source.WorkerId} and {target.InstanceId}/{target.WorkerId} do not name chunks alike (model, format, world size, worker id, dtype, chunk size and hash seed must match): the destination could not serve the moved chunks.");
            }
        }
        return pairs;
    }

    /// <summary>
    /// A move to another instance through the remote tier both share: each source worker writes the chunks to its remote
    /// tier (and waits for the writes), its paired destination worker loads them from its remote tier into the target
    /// tier, and without <c>copy</c> the source then removes the chunks the destination loaded. <c>num_tokens</c> is what
    /// the destinations loaded (the smallest over the pairs).
    /// </summary>
    private static async Task<OperationOutcome> MoveAcrossAsync(
        LMCacheController controller, string eventId, List<(WorkerRecord Source, WorkerRecord Target)> pairs,
        string fromLocation, string toLocation, int[] tokens, bool copy, CancellationToken lifetime)
    {
        var results = await Task.WhenAll(pairs.Select(async pair =>
        {
            var published = await controller.FanOutAsync([pair.Source], w => WorkerRequest(MessageTypes.MoveWorker, "Move", w, eventId)
                .With("old_position", fromLocation)
                .With("new_position", new List<object?> { pair.Target.DistributedUrl, toLocation })
                .With("tokens", tokens)
                .With("copy", true)
                .With("via_remote", true), MessageTypes.MoveWorkerRet, lifetime, longOperation: true).ConfigureAwait(false);
            var keys = published[0].Reply.GetStringArray("keys");
            var loaded = await controller.FanOutAsync([pair.Target], w => WorkerRequest(MessageTypes.LoadChunksWorker, "Move", w, eventId)
                .With("keys", keys)
                .With("location", toLocation)
                .With("prefix", tokens.Length > 0), MessageTypes.LoadChunksWorkerRet, lifetime, longOperation: true).ConfigureAwait(false);
            var loadedKeys = loaded[0].Reply.GetStringArray("keys");
            if (!copy && loadedKeys.Length > 0)
            {
                await controller.FanOutAsync([pair.Source], w => WorkerRequest(MessageTypes.RemoveChunksWorker, "Move", w, eventId)
                    .With("keys", loadedKeys).With("location", fromLocation), MessageTypes.RemoveChunksWorkerRet, lifetime).ConfigureAwait(false);
            }
            return (Tokens: loaded[0].Reply.GetInt64("num_tokens"), Chunks: (long)loadedKeys.Length);
        })).ConfigureAwait(false);
        return new OperationOutcome(results.Min(r => r.Tokens), results.Sum(r => r.Chunks));
    }

    private static ControlMessage WorkerRequest(string type, string operation, WorkerRecord worker, string eventId) =>
        new ControlMessage(type).With("worker_event_id", $"{operation}Worker{worker.WorkerId}{eventId}");

    private static string RequireLocation(string? location) =>
        string.IsNullOrWhiteSpace(location) ? throw ControllerApiException.BadRequest("location is required (a tier such as LocalCPUBackend, or \"all\").") : location;

    private static bool IsAll(string location) => string.Equals(location, "all", StringComparison.OrdinalIgnoreCase);

    private static IResult Ok<T>(T value, JsonTypeInfo<T> type) => Results.Json(value, type);

    private static IResult Static(string file)
    {
        var text = LMCacheController.ReadEmbedded(file, out var contentType);
        return text is null
            ? Results.Json(new ErrorResponse($"No file '{file}'."), Json.ErrorResponse, statusCode: StatusCodes.Status404NotFound)
            : Results.Text(text, contentType, Encoding.UTF8);
    }

    /// <summary>Whether the request carries <c>Authorization: Bearer</c> with the controller's token.</summary>
    private static bool Authorized(LMCacheController controller, HttpRequest request)
    {
        var header = request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        return header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase) && controller.TokenMatches(header[scheme.Length..].Trim());
    }

    /// <summary>Maps a POST whose JSON body is read here, so a bad body is a 400 with a message.</summary>
    private static void Post<T>(IEndpointRouteBuilder app, string path, JsonTypeInfo<T> type, Func<T, CancellationToken, Task<IResult>> handler)
        where T : class
    {
        s_methods[path] = HttpMethods.Post;
        app.MapPost(path, async (HttpContext context) =>
        {
            T? body;
            try
            {
                body = await JsonSerializer.DeserializeAsync(context.Request.Body, type, context.RequestAborted).ConfigureAwait(false);
            }
            catch (JsonException ex)
            {
                throw ControllerApiException.BadRequest($"The body is not valid JSON for {path}: {ex.Message}");
            }
            if (body is null)
            {
                throw ControllerApiException.BadRequest($"{path} needs a JSON object body.");
            }
            return await handler(body, context.RequestAborted).ConfigureAwait(false);
        });
    }

    private static Task WriteAsync<T>(HttpContext context, T value, JsonTypeInfo<T> type, int status)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json; charset=utf-8";
        return JsonSerializer.SerializeAsync(context.Response.Body, value, type, context.RequestAborted);
    }
}
