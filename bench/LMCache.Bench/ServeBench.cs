using System.ClientModel;
using System.ClientModel.Primitives;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Core.Simd;
using LMCache.Hosting;
using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using LMCache.Serving;
using Microsoft.Extensions.Logging;
using OpenAI;
using OpenAI.Chat;

namespace LMCache.Bench;

/// <summary>
/// <c>lmcache bench serve</c>: the OpenAI server under load. It starts the real server in-process (through
/// <see cref="LMCacheHost"/>, on 127.0.0.1 and a free port) and drives it over HTTP with the official OpenAI .NET client,
/// streaming, with a fixed seeded workload (<see cref="ServeWorkload"/>): per client count, each client sends its
/// chats (a long system prompt shared by all, the cache's case) and long documents one after another; then every
/// client sends one shared-prefix chat at once (the decode phase); then, once per mode, short chats arrive while a
/// long prompt is prefilled. Every run is made twice, against the batching scheduler and against the one-at-a-time
/// mode (<c>MaxNumSeqs = 1</c>), each on a fresh host (an empty cache) over the same loaded model.
/// </summary>
internal static class ServeBench
{
    /// <summary>The scheduler's settings of one mode, and its name in the output.</summary>
    private sealed record ServeMode(string Name, string Description, InferenceEngineOptions Engine);

    public static Command Create()
    {
        var json = BenchOptions.Json();
        var model = new Option<DirectoryInfo?>("--model") { Description = "Model folder (default: the built-in model named by --demo-model)." };
        var clients = new Option<string>("--clients") { Description = "Comma-separated client counts to run.", DefaultValueFactory = _ => "1,4,8,16" };
        var defaults = new ServeWorkloadShape();
        var requestsPerClient = new Option<int>("--requests-per-client") { Description = "Requests each client sends one after another; every fourth is a long document, the others shared-prefix chats.", DefaultValueFactory = _ => defaults.RequestsPerClient };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Generated tokens of each chat and document (ignore_eos: exactly this many).", DefaultValueFactory = _ => defaults.MaxTokens };
        var prefixTokens = new Option<int>("--prefix-tokens") { Description = "Tokens of the system prompt all chats share.", DefaultValueFactory = _ => defaults.PrefixTokens };
        var questionTokens = new Option<int>("--question-tokens") { Description = "Tokens of each chat's own question.", DefaultValueFactory = _ => defaults.QuestionTokens };
        var documentMin = new Option<int>("--document-min-tokens") { Description = "Shortest long document, in tokens.", DefaultValueFactory = _ => defaults.DocumentMinTokens };
        var documentMax = new Option<int>("--document-max-tokens") { Description = "Longest long document, in tokens.", DefaultValueFactory = _ => defaults.DocumentMaxTokens };
        var decodeTokens = new Option<int>("--decode-tokens") { Description = "Generated tokens of each request of the decode phase.", DefaultValueFactory = _ => defaults.DecodeTokens };
        var longPrompt = new Option<int>("--long-prompt-tokens") { Description = "Tokens of the long prompt the short chats arrive during.", DefaultValueFactory = _ => defaults.LongPromptTokens };
        var shortChats = new Option<int>("--short-chats") { Description = "Short chats sent during the long prefill.", DefaultValueFactory = _ => defaults.ShortChats };
        var shortChatTokens = new Option<int>("--short-chat-tokens") { Description = "Tokens of each short chat's message.", DefaultValueFactory = _ => defaults.ShortChatTokens };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads (0 = one per core).", DefaultValueFactory = _ => 0 };
        var quantize = new Option<string>("--quantize") { Description = "Weight quantization of the model's built graph: none, int8 or int4.", DefaultValueFactory = _ => "none" };
        quantize.AcceptOnlyFromAmong("none", "int8", "int4");
        var demoModel = BenchOptions.DemoModel();
        var engineDefaults = new InferenceEngineOptions();
        var maxNumSeqs = new Option<int>("--max-num-seqs") { Description = "The batched mode's most sequences running at once (the baseline runs 1).", DefaultValueFactory = _ => engineDefaults.MaxNumSeqs };
        var maxNumBatchedTokens = new Option<int>("--max-num-batched-tokens") { Description = "The batched mode's token budget of one scheduler step.", DefaultValueFactory = _ => engineDefaults.MaxNumBatchedTokens };
        var command = new Command("serve", "The OpenAI server under load: throughput, TTFT, ITL and cached-token share per client count, batched versus one at a time.")
        {
            json, model, clients, requestsPerClient, maxTokens, prefixTokens, questionTokens, documentMin, documentMax, decodeTokens, longPrompt, shortChats, shortChatTokens, threads, quantize, demoModel,
            maxNumSeqs, maxNumBatchedTokens,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var shape = new ServeWorkloadShape
            {
                RequestsPerClient = parse.GetValue(requestsPerClient),
                MaxTokens = parse.GetValue(maxTokens),
                PrefixTokens = parse.GetValue(prefixTokens),
                QuestionTokens = parse.GetValue(questionTokens),
                DocumentMinTokens = parse.GetValue(documentMin),
                DocumentMaxTokens = parse.GetValue(documentMax),
                DecodeTokens = parse.GetValue(decodeTokens),
                LongPromptTokens = parse.GetValue(longPrompt),
                ShortChats = parse.GetValue(shortChats),
                ShortChatTokens = parse.GetValue(shortChatTokens),
            };
            var clientCounts = ParseClientCounts(parse.GetValue(clients));
            var problem = clientCounts is null ? $"--clients '{parse.GetValue(clients)}' must be comma-separated positive integers." : Validate(shape);
            if (parse.GetValue(maxNumSeqs) < 1 || parse.GetValue(maxNumBatchedTokens) <= parse.GetValue(maxNumSeqs))
            {
                problem ??= $"--max-num-seqs {parse.GetValue(maxNumSeqs)} must be at least 1 and --max-num-batched-tokens {parse.GetValue(maxNumBatchedTokens)} more than it.";
            }
            if (problem is not null)
            {
                Console.Error.WriteLine($"error: {problem}");
                return 2;
            }
            var given = parse.GetValue(model)?.FullName;
            var builtIn = BuiltInModels.Parse(parse.GetValue(demoModel)!);
            var folder = given ?? BuiltInModels.Resolve(builtIn, step => BenchOutput.Progress($"generating the demo model (first run only): {step}"));
            var load = new ModelLoadOptions
            {
                ServedName = given is null ? BuiltInModels.NameOf(builtIn) : null,
                IntraOpThreads = parse.GetValue(threads),
                Quantization = parse.GetValue(quantize) switch { "int8" => WeightQuantization.Int8, "int4" => WeightQuantization.Int4, _ => WeightQuantization.None },
                Progress = line => BenchOutput.Progress($"loading the model: {line}"),
            };
            var batched = new InferenceEngineOptions { MaxNumSeqs = parse.GetValue(maxNumSeqs), MaxNumBatchedTokens = parse.GetValue(maxNumBatchedTokens) };
            JsonObject result;
            try
            {
                result = await RunAsync(folder, load, batched, shape, clientCounts!, cancellationToken);
            }
            catch (LMCacheConfigurationException ex)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
            catch (Exception ex) when (ex is IOException or InvalidDataException or NotSupportedException)
            {
                Console.Error.WriteLine($"error: cannot load the model in '{folder}': {ex.Message}");
                return 2;
            }
            if (parse.GetValue(json))
            {
                Console.WriteLine(result.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            }
            else
            {
                PrintTable(result);
            }
            return 0;
        });
        return command;
    }

    private static int[]? ParseClientCounts(string? text)
    {
        var parts = (text ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var counts = new List<int>();
        foreach (var part in parts)
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var count) || count < 1 || count > 1024)
            {
                return null;
            }
            counts.Add(count);
        }
        return counts.Count == 0 ? null : [.. counts.Distinct()];
    }

    private static string? Validate(ServeWorkloadShape shape)
    {
        if (shape.RequestsPerClient < 1 || shape.MaxTokens < 1 || shape.DecodeTokens < 1 || shape.ShortChatMaxTokens < 1)
        {
            return "--requests-per-client, --max-tokens and --decode-tokens must be at least 1.";
        }
        if (shape.PrefixTokens < 1 || shape.QuestionTokens < 1 || shape.LongPromptTokens < 1 || shape.ShortChatTokens < 1 || shape.ShortChats < 0)
        {
            return "token counts must be at least 1 (--short-chats at least 0).";
        }
        if (shape.DocumentMinTokens < 1 || shape.DocumentMaxTokens < shape.DocumentMinTokens)
        {
            return $"--document-min-tokens {shape.DocumentMinTokens} must be at least 1 and at most --document-max-tokens {shape.DocumentMaxTokens}.";
        }
        return null;
    }

    /// <summary>
    /// The two modes every run is made in: the batching scheduler (<paramref name="batched"/>: its defaults unless
    /// <c>--max-num-seqs</c> or <c>--max-num-batched-tokens</c> say otherwise) and the one-at-a-time baseline
    /// (<c>MaxNumSeqs = 1</c>). Both queue every request the bench can have in flight at once, so neither answers 503:
    /// this bench measures latency and throughput, not overload.
    /// </summary>
    private static ServeMode[] Modes(InferenceEngineOptions batched, int inFlight)
    {
        var queue = Math.Max(batched.MaxWaitingRequests, inFlight);
        return
        [
            new("batched", $"the batching scheduler: MaxNumSeqs = {batched.MaxNumSeqs}, MaxNumBatchedTokens = {batched.MaxNumBatchedTokens}",
                new InferenceEngineOptions { MaxNumSeqs = batched.MaxNumSeqs, MaxNumBatchedTokens = batched.MaxNumBatchedTokens, MaxWaitingRequests = queue }),
            new("one_at_a_time", "MaxNumSeqs = 1: one request at a time, the baseline",
                new InferenceEngineOptions { MaxNumSeqs = 1, MaxNumBatchedTokens = batched.MaxNumBatchedTokens, MaxWaitingRequests = queue }),
        ];
    }

    private static async Task<JsonObject> RunAsync(string folder, ModelLoadOptions load, InferenceEngineOptions batched, ServeWorkloadShape shape, int[] clientCounts, CancellationToken cancellationToken)
    {
        using var model = LanguageModel.Load(folder, load);
        var threads = load.IntraOpThreads;
        // Every prompt fits with its generated tokens and the chat template's few tokens around the messages.
        var longest = shape.LongestPrompt + Math.Max(shape.MaxTokens, shape.DecodeTokens) + 64;
        if (longest > model.ContextLength)
        {
            throw new LMCacheConfigurationException($"The workload's longest prompt ({shape.LongestPrompt} tokens) and its generated tokens do not fit the model's context of {model.ContextLength} tokens.");
        }
        if (model.ChatTemplate is null)
        {
            throw new LMCacheConfigurationException($"The model in '{folder}' has no chat template; bench serve sends chats.");
        }
        using var loggerFactory = ConsoleLogging.CreateLoggerFactory(LogLevel.Warning);
        BenchOutput.Progress("building the workload");
        var workload = new ServeWorkload(model.Tokenizer, shape);
        var modes = Modes(batched, Math.Max(clientCounts.Max(), shape.ShortChats + 1));
        var clock = Stopwatch.StartNew();
        var result = new JsonObject
        {
            ["model"] = model.Name,
            ["threads"] = threads == 0 ? Environment.ProcessorCount : threads,
            ["quantization"] = load.Quantization.ToString().ToLowerInvariant(),
            ["cpu_features"] = new JsonArray([.. SimdPaths.CpuFeatures().Select(f => JsonValue.Create(f))]),
            ["load_average_1m_start"] = LoadAverage(),
            ["workload"] = new JsonObject
            {
                ["requests_per_client"] = shape.RequestsPerClient,
                ["mix"] = "each client: chat, chat, chat, document, repeated; chats share one system prompt",
                ["prefix_tokens"] = shape.PrefixTokens,
                ["question_tokens"] = shape.QuestionTokens,
                ["document_tokens"] = $"{shape.DocumentMinTokens}-{shape.DocumentMaxTokens}",
                ["max_tokens"] = shape.MaxTokens,
                ["decode_tokens"] = shape.DecodeTokens,
                ["long_prompt_tokens"] = shape.LongPromptTokens,
                ["short_chats"] = shape.ShortChats,
                ["short_chat_tokens"] = shape.ShortChatTokens,
                ["short_chat_max_tokens"] = shape.ShortChatMaxTokens,
                ["token_counts"] = "of the model's tokenizer, before the chat template",
            },
            ["modes"] = new JsonObject([.. modes.Select(m => KeyValuePair.Create(m.Name, (JsonNode?)m.Description))]),
        };

        // Warm-up on a host of its own: the JIT, and ONNX Runtime's first runs of every shape the workload has (its
        // memory arena grows on the first long prompt), so neither mode pays them inside its numbers.
        BenchOutput.Progress("warm-up (JIT, ONNX Runtime's first runs of a long prompt, a chat and a batch)");
        await using (var host = await StartHostAsync(model, modes[0], loggerFactory, cancellationToken))
        {
            var client = CreateClient(host, model.Name);
            await SendAsync(client, workload.LongPrompt(-1), clock, cancellationToken);
            await Task.WhenAll(Enumerable.Range(0, 2).Select(k => SendAsync(client, workload.Request(k, 0), clock, cancellationToken)));
        }

        var runs = new JsonArray();
        var summaries = new Dictionary<(string Mode, int Clients), (ServeSummary Mixed, ServeSummary Decode)>();
        for (var c = 0; c < clientCounts.Length; c++)
        {
            var clients = clientCounts[c];
            // The modes take turns per client count, the first one alternating, so a change of the machine's load
            // (and whatever the process still warms up) touches both alike.
            ServeMode[] order = c % 2 == 0 ? modes : [modes[1], modes[0]];
            foreach (var mode in order)
            {
                await using var host = await StartHostAsync(model, mode, loggerFactory, cancellationToken);
                var client = CreateClient(host, model.Name);
                BenchOutput.Progress($"{mode.Name}, {clients} client(s): {clients * shape.RequestsPerClient} requests");
                var mixed = await RunClosedLoopAsync(client, workload, clients, clock, cancellationToken);
                BenchOutput.Progress($"{mode.Name}, {clients} client(s): decode phase, {clients} requests at once");
                var decode = await RunDecodePhaseAsync(client, workload, clients, clock, cancellationToken);
                summaries[(mode.Name, clients)] = (mixed, decode);
                BenchOutput.Progress(FormattableString.Invariant(
                    $"{mode.Name}, {clients} client(s): {mixed.OutputTokensPerSecond:0.0} tok/s, TTFT p95 {mixed.TtftP95:0.000} s, ITL p95 {1000 * mixed.ItlP95:0.0} ms, decode {decode.OutputTokensPerSecond:0.0} tok/s, {mixed.Failed + decode.Failed} failed"));
                runs.Add(new JsonObject
                {
                    ["mode"] = mode.Name,
                    ["clients"] = clients,
                    ["requests"] = mixed.Requests,
                    ["failed"] = mixed.Failed + decode.Failed,
                    ["wall_s"] = Round(mixed.WallSeconds),
                    ["prompt_tokens"] = mixed.PromptTokens,
                    ["output_tokens"] = mixed.OutputTokens,
                    ["output_tokens_per_s"] = Round(mixed.OutputTokensPerSecond),
                    ["ttft_p50_s"] = Round(mixed.TtftP50),
                    ["ttft_p95_s"] = Round(mixed.TtftP95),
                    ["itl_p50_s"] = Round(mixed.ItlP50),
                    ["itl_p95_s"] = Round(mixed.ItlP95),
                    ["cached_token_share"] = Round(mixed.CachedTokenShare),
                    ["decode_output_tokens"] = decode.OutputTokens,
                    ["decode_tokens_per_s"] = Round(decode.OutputTokensPerSecond),
                    ["decode_itl_p50_s"] = Round(decode.ItlP50),
                    ["decode_itl_p95_s"] = Round(decode.ItlP95),
                });
            }
        }
        result["runs"] = runs;

        var longPrefill = new JsonObject();
        ServeMode[] longOrder = clientCounts.Length % 2 == 0 ? modes : [modes[1], modes[0]];
        foreach (var mode in longOrder)
        {
            await using var host = await StartHostAsync(model, mode, loggerFactory, cancellationToken);
            longPrefill[mode.Name] = await RunLongPrefillAsync(CreateClient(host, model.Name), workload, clock, mode.Name, cancellationToken);
        }
        result["long_prefill"] = longPrefill;
        result["load_average_1m_end"] = LoadAverage();
        result["targets"] = Targets(summaries, longPrefill, modes[0].Name, modes[1].Name);
        return result;
    }

    private static Task<LMCacheHost> StartHostAsync(LanguageModel model, ServeMode mode, ILoggerFactory loggerFactory, CancellationToken cancellationToken) =>
        LMCacheHost.StartAsync(new LMCacheHostOptions
        {
            Model = model,
            Inference = mode.Engine,
            Server = new OpenAiServerOptions { Host = "127.0.0.1", Port = 0 },
            Cache = new LMCacheEngineOptions { ChunkSize = 256, MaxLocalCpuSizeGib = 2 },
        }, loggerFactory, cancellationToken);

    private static ChatClient CreateClient(LMCacheHost host, string modelName)
    {
        var options = new OpenAIClientOptions
        {
            Endpoint = new Uri(host.Server!.Address, "v1"),
            NetworkTimeout = TimeSpan.FromMinutes(30),
            // No retries: a refused or failed request is counted as failed, never hidden behind a second attempt.
            RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
        };
        return new ChatClient(modelName, new ApiKeyCredential("unused"), options);
    }

    /// <summary>Each client sends its requests one after another; all clients start together.</summary>
    private static async Task<ServeSummary> RunClosedLoopAsync(ChatClient client, ServeWorkload workload, int clients, Stopwatch clock, CancellationToken cancellationToken)
    {
        var started = clock.Elapsed.TotalSeconds;
        var perClient = await Task.WhenAll(Enumerable.Range(0, clients).Select(async k =>
        {
            var traces = new List<RequestTrace>();
            for (var j = 0; j < workload.Shape.RequestsPerClient; j++)
            {
                traces.Add(await SendAsync(client, workload.Request(k, j), clock, cancellationToken));
            }
            return traces;
        }));
        var traces = perClient.SelectMany(t => t).ToList();
        return ServeStatistics.Summarize(traces, traces.Max(t => t.FinishedAt) - started);
    }

    /// <summary>Every client sends one shared-prefix chat at the same time: the throughput of decoding side by side.</summary>
    private static async Task<ServeSummary> RunDecodePhaseAsync(ChatClient client, ServeWorkload workload, int clients, Stopwatch clock, CancellationToken cancellationToken)
    {
        var started = clock.Elapsed.TotalSeconds;
        var traces = await Task.WhenAll(Enumerable.Range(0, clients).Select(k => SendAsync(client, workload.Decode(k), clock, cancellationToken)));
        return ServeStatistics.Summarize(traces, traces.Max(t => t.FinishedAt) - started);
    }

    /// <summary>
    /// A long prompt alone first (its prefill time P), then another long prompt (also new to the cache) with the short
    /// chats sent while it is prefilled, the i-th at P × (i + 1) / (n + 1) after it.
    /// </summary>
    private static async Task<JsonObject> RunLongPrefillAsync(ChatClient client, ServeWorkload workload, Stopwatch clock, string modeName, CancellationToken cancellationToken)
    {
        BenchOutput.Progress($"{modeName}: long prefill alone ({workload.Shape.LongPromptTokens} tokens)");
        var alone = await SendAsync(client, workload.LongPrompt(0), clock, cancellationToken);
        if (alone.TimeToFirstToken is not { } prefill)
        {
            return new JsonObject { ["error"] = $"the long prompt alone failed: {alone.Error}" };
        }
        BenchOutput.Progress($"{modeName}: {workload.Shape.ShortChats} short chats during a {prefill:0.00} s prefill");
        var longTask = SendAsync(client, workload.LongPrompt(1), clock, cancellationToken);
        var sent = clock.Elapsed.TotalSeconds;
        var n = workload.Shape.ShortChats;
        var shortTasks = Enumerable.Range(0, n).Select(async i =>
        {
            var due = sent + (prefill * (i + 1) / (n + 1));
            var wait = due - clock.Elapsed.TotalSeconds;
            if (wait > 0)
            {
                await Task.Delay(TimeSpan.FromSeconds(wait), cancellationToken);
            }
            return await SendAsync(client, workload.ShortChat(i), clock, cancellationToken);
        }).ToList();
        var shorts = await Task.WhenAll(shortTasks);
        var longTrace = await longTask;
        var ok = shorts.Where(s => s.Error is null).ToList();
        var longFirst = longTrace.TokenArrivals.Count > 0 ? longTrace.TokenArrivals[0] : double.PositiveInfinity;
        return new JsonObject
        {
            ["long_prompt_tokens"] = longTrace.PromptTokens,
            ["long_prefill_alone_s"] = Round(prefill),
            ["long_ttft_s"] = Round(longTrace.TimeToFirstToken),
            ["short_chats"] = shorts.Length,
            ["short_failed"] = shorts.Length - ok.Count + (longTrace.Error is null ? 0 : 1),
            ["short_prompt_tokens_mean"] = ok.Count == 0 ? null : Round(ok.Average(s => s.PromptTokens)),
            ["short_ttft_p50_s"] = Round(ServeStatistics.Percentile(ok.Select(s => s.TimeToFirstToken).OfType<double>(), 50)),
            ["short_ttft_p95_s"] = Round(ServeStatistics.Percentile(ok.Select(s => s.TimeToFirstToken).OfType<double>(), 95)),
            ["short_first_token_before_long"] = ok.Count(s => s.TokenArrivals.Count > 0 && s.TokenArrivals[0] < longFirst),
        };
    }

    /// <summary>Sends one streamed chat and records when each token arrived and what the usage said. Never throws for a failed request.</summary>
    private static async Task<RequestTrace> SendAsync(ChatClient client, ServeWorkItem item, Stopwatch clock, CancellationToken cancellationToken)
    {
        var options = new ChatCompletionOptions
        {
            MaxOutputTokenCount = item.MaxTokens,
            Temperature = 0,
            // With logprobs the server sends every token as its own event, even one whose text is an incomplete UTF-8
            // sequence (which it otherwise holds back and sends with the next): one event = one token, so the gaps are
            // true inter-token latencies.
            IncludeLogProbabilities = true,
        };
#pragma warning disable SCME0001 // JsonPatch is the client's (experimental) way to send a field it does not model: vLLM's ignore_eos, which fixes the output length.
        options.Patch.Set("$.ignore_eos"u8, true);
#pragma warning restore SCME0001
        var trace = new RequestTrace { Kind = item.Kind, SentAt = clock.Elapsed.TotalSeconds };
        try
        {
            await foreach (var update in client.CompleteChatStreamingAsync(item.Messages, options, cancellationToken))
            {
                var now = clock.Elapsed.TotalSeconds;
                if (update.ContentTokenLogProbabilities.Count > 0)
                {
                    trace.TokenArrivals.Add(now);
                }
                if (update.Usage is { } usage)
                {
                    trace.PromptTokens = usage.InputTokenCount;
                    trace.OutputTokens = usage.OutputTokenCount;
                    trace.CachedTokens = usage.InputTokenDetails?.CachedTokenCount ?? 0;
                }
            }
            if (trace.OutputTokens != item.MaxTokens)
            {
                trace.Error = $"expected {item.MaxTokens} generated tokens (ignore_eos), the usage says {trace.OutputTokens}";
            }
        }
        catch (ClientResultException ex)
        {
            trace.Error = $"HTTP {ex.Status}: {ex.Message}";
        }
        catch (IOException ex)
        {
            trace.Error = ex.Message;
        }
        catch (HttpRequestException ex)
        {
            trace.Error = ex.Message;
        }
        trace.FinishedAt = clock.Elapsed.TotalSeconds;
        if (trace.Error is not null)
        {
            BenchOutput.Progress($"warning: a {item.Kind} request failed: {trace.Error}");
        }
        return trace;
    }

    private static JsonObject Targets(Dictionary<(string Mode, int Clients), (ServeSummary Mixed, ServeSummary Decode)> summaries, JsonObject longPrefill, string batched, string baseline)
    {
        ServeSummary? Get(string mode, int clients, bool decode) =>
            summaries.TryGetValue((mode, clients), out var s) ? (decode ? s.Decode : s.Mixed) : null;

        var throughput = ServeStatistics.Ratio(Get(batched, 8, decode: true)?.OutputTokensPerSecond, Get(batched, 1, decode: true)?.OutputTokensPerSecond);
        var throughputBaseline = ServeStatistics.Ratio(Get(baseline, 8, decode: true)?.OutputTokensPerSecond, Get(baseline, 1, decode: true)?.OutputTokensPerSecond);
        var itl = ServeStatistics.Ratio(Get(batched, 8, decode: false)?.ItlP95, Get(batched, 1, decode: false)?.ItlP95);
        var itlBaseline = ServeStatistics.Ratio(Get(baseline, 8, decode: false)?.ItlP95, Get(baseline, 1, decode: false)?.ItlP95);
        var shortTtft = (double?)longPrefill[batched]?["short_ttft_p95_s"];
        var shortTtftBaseline = (double?)longPrefill[baseline]?["short_ttft_p95_s"];

        static string Verdict(double? value, Func<double, bool> met) => value is { } v ? (met(v) ? "met" : "missed") : "not measured";
        return new JsonObject
        {
            ["decode_throughput_8_over_1"] = Round(throughput),
            ["decode_throughput_8_over_1_baseline"] = Round(throughputBaseline),
            ["target_decode_throughput_8_over_1_ge_4"] = Verdict(throughput, v => v >= 4),
            ["short_chat_ttft_p95_during_long_prefill_s"] = shortTtft,
            ["short_chat_ttft_p95_during_long_prefill_baseline_s"] = shortTtftBaseline,
            ["target_short_chat_ttft_p95_le_0.5_s"] = Verdict(shortTtft, v => v <= 0.5),
            ["itl_p95_8_over_1"] = Round(itl),
            ["itl_p95_8_over_1_baseline"] = Round(itlBaseline),
            ["target_itl_p95_8_over_1_le_2"] = Verdict(itl, v => v <= 2),
        };
    }

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "unknown";

    // Six decimals: microseconds for the latencies, which the tiny models' inter-token gaps need.
    private static double? Round(double? value) => value is { } v ? Math.Round(v, 6) : null;

    private static double Round(double value) => Math.Round(value, 6);

    /// <summary>The human table: one row per mode and client count, then the long-prefill scenario and the targets.</summary>
    private static void PrintTable(JsonObject result)
    {
        static string F(JsonNode? node, string format = "0.000") => node is null ? "-" : ((double)node).ToString(format, CultureInfo.InvariantCulture);
        Console.WriteLine($"model {result["model"]} (quantization {result["quantization"]}), {result["threads"]} threads, CPU features {string.Join(",", result["cpu_features"]!.AsArray().Select(f => (string?)f))}");
        Console.WriteLine($"load average (1 min) {result["load_average_1m_start"]} at the start, {result["load_average_1m_end"]} at the end");
        Console.WriteLine();
        static string Ms(JsonNode? node) => node is null ? "-" : (1000 * (double)node).ToString("0.0", CultureInfo.InvariantCulture);
        Console.WriteLine($"{"mode",-14} {"clients",7} {"reqs",5} {"failed",6} {"out tok/s",10} {"TTFT p50",9} {"TTFT p95",9} {"ITL p50",8} {"ITL p95",8} {"cached",7} {"decode tok/s",12}");
        foreach (var run in result["runs"]!.AsArray())
        {
            Console.WriteLine($"{(string?)run!["mode"],-14} {(int)run["clients"]!,7} {(int)run["requests"]!,5} {(int)run["failed"]!,6} {F(run["output_tokens_per_s"], "0.0"),10} {F(run["ttft_p50_s"]),9} {F(run["ttft_p95_s"]),9} {Ms(run["itl_p50_s"]),8} {Ms(run["itl_p95_s"]),8} {F(run["cached_token_share"], "0.00"),7} {F(run["decode_tokens_per_s"], "0.0"),12}");
        }
        Console.WriteLine("(TTFT in s, ITL in ms; out tok/s, latencies and cached share over the chats and documents; decode tok/s: one shared-prefix chat per client, all at once)");
        Console.WriteLine();
        foreach (var (mode, node) in result["long_prefill"]!.AsObject())
        {
            if (node!["error"] is { } error)
            {
                Console.WriteLine($"long prefill, {mode}: {error}");
                continue;
            }
            Console.WriteLine($"long prefill, {mode}: {node!["short_chats"]} short chats during a {node["long_prompt_tokens"]}-token prefill ({F(node["long_prefill_alone_s"])} s alone, {F(node["long_ttft_s"])} s with them): "
                + $"short TTFT p50 {F(node["short_ttft_p50_s"])} s, p95 {F(node["short_ttft_p95_s"])} s; {node["short_first_token_before_long"]} got their first token before the long prompt");
        }
        Console.WriteLine();
        var t = result["targets"]!;
        Console.WriteLine($"decode throughput, 8 clients / 1 client: {F(t["decode_throughput_8_over_1"], "0.00")}x (one at a time: {F(t["decode_throughput_8_over_1_baseline"], "0.00")}x)  target >= 4x: {t["target_decode_throughput_8_over_1_ge_4"]}");
        Console.WriteLine($"short-chat TTFT p95 during a long prefill: {F(t["short_chat_ttft_p95_during_long_prefill_s"])} s (one at a time: {F(t["short_chat_ttft_p95_during_long_prefill_baseline_s"])} s)  target <= 0.5 s: {t["target_short_chat_ttft_p95_le_0.5_s"]}");
        Console.WriteLine($"ITL p95, 8 clients / 1 client: {F(t["itl_p95_8_over_1"], "0.00")}x (one at a time: {F(t["itl_p95_8_over_1_baseline"], "0.00")}x)  target <= 2x: {t["target_itl_p95_8_over_1_le_2"]}");
    }
}
