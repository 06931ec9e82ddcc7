using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using System.Threading.Channels;
using LMCache.Engine;
using LMCache.Inference.Models;
using LMCache.Inference.Onnx;
using LMCache.Storage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Inference.Generation;

/// <summary>Options of <see cref="InferenceEngine"/>.</summary>
public sealed class InferenceEngineOptions
{
    /// <summary>
    /// Most prompt tokens per model run during prefill, in tokens. Bounds the attention scratch memory of long
    /// prompts (scores are heads × step × context floats). Defaults to 512.
    /// </summary>
    public int PrefillStepTokens { get; init; } = 512;

    /// <summary>
    /// Also store chunks completed during decoding (the original's <c>save_decode_cache</c>). Defaults to the cache
    /// configuration's value when a cache is attached, else false.
    /// </summary>
    public bool? SaveDecodeCache { get; init; }

    /// <summary>
    /// Most sequences running at once (<c>--max-num-seqs</c>, vLLM's <c>max_num_seqs</c>): each step decodes one token
    /// for every running sequence in one batched model run. A running sequence holds its KV until it finishes.
    /// 1 is the one-at-a-time mode (requests run strictly in turn). Defaults to 8.
    /// </summary>
    public int MaxNumSeqs { get; init; } = 8;

    /// <summary>
    /// Token budget of one scheduler step (<c>--max-num-batched-tokens</c>, vLLM's <c>max_num_batched_tokens</c>):
    /// one token per decoding sequence, the rest goes to prefill chunks of the sequences still reading their prompt
    /// (chunked prefill). A prefill chunk is also at most <see cref="PrefillStepTokens"/>. Must be more than
    /// <see cref="MaxNumSeqs"/>. Defaults to 512.
    /// </summary>
    public int MaxNumBatchedTokens { get; init; } = 512;

    /// <summary>
    /// Most tokens (prompt + generated) of one sequence (<c>--max-model-len</c>, vLLM's <c>max_model_len</c>): longer
    /// prompts are refused, generation stops at it. Null or 0 uses the model's context length; larger values are
    /// capped to it. Defaults to null.
    /// </summary>
    public int? MaxModelLen { get; init; }

    /// <summary>
    /// Most requests waiting for a slot (<c>--max-queue-len</c>); one more is refused with
    /// <see cref="EngineOverloadedException"/> (HTTP 503) instead of growing an unbounded backlog. Defaults to 64.
    /// </summary>
    public int MaxWaitingRequests { get; init; } = 64;
}

/// <summary>
/// The decode loop over an <see cref="OnnxDecoder"/> with LMCache as its KV connector. Per request:
/// tokens → chunk keys (once, shared by retrieve and store) → <c>retrieve</c> the cached prefix into the past, sized
/// from what the tiers returned (at most all but the last token, which is always computed for its logits) → prefill only the rest → first token → <c>store</c> the
/// prompt's new whole chunks (the copy into the CPU tier is synchronous, disk/remote writes are queued) → decode →
/// with <c>save_decode_cache</c>, store the chunks completed while decoding. Requests are queued and run one at a
/// time, so they never share or corrupt each other's KV.
/// </summary>
public sealed partial class InferenceEngine : IAsyncDisposable
{
    private readonly LanguageModel _model;
    private readonly LMCacheEngine? _cache;
    private readonly InferenceEngineOptions _options;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly HashSet<int> _eos;
    private int _queued;

    /// <summary>Creates an engine; <paramref name="cache"/> null runs without a KV cache (every prompt recomputed).</summary>
    /// <param name="model">The model (owned by the caller).</param>
    /// <param name="cache">The cache engine (owned by the caller), created with <see cref="CreateKeyScope"/> and the decoder's layout.</param>
    /// <param name="options">Options; null for defaults.</param>
    /// <param name="logger">Logger; null for none.</param>
    public InferenceEngine(LanguageModel model, LMCacheEngine? cache, InferenceEngineOptions? options = null, ILogger<InferenceEngine>? logger = null)
    {
        _model = model;
        _cache = cache;
        _options = options ?? new InferenceEngineOptions();
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _eos = [.. model.EosTokenIds];
        if (cache is not null && cache.Layout != model.Decoder.Layout)
        {
            throw new ArgumentException($"The cache was created for {cache.Layout} but the model's KV is {model.Decoder.Layout}.", nameof(cache));
        }
    }

    /// <summary>The model.</summary>
    public LanguageModel Model => _model;

    /// <summary>The attached cache, or null.</summary>
    public LMCacheEngine? Cache => _cache;

    /// <summary>Requests waiting or running.</summary>
    public int QueueDepth => Volatile.Read(ref _queued);

    /// <summary>
    /// The key scope for a model: format <c>onnx</c>, model name = served name + <c>-</c> + the model's fingerprint
    /// (geometry, dtype and weights), dtype token of the KV dtype — so different models, exports or dtypes never
    /// share chunks.
    /// </summary>
    public static LMCache.Core.Keys.KeyScope CreateKeyScope(LanguageModel model)
    {
        var name = new string(model.Name.Select(c => c == '@' ? '_' : c).ToArray());
        return new LMCache.Core.Keys.KeyScope("onnx", $"{name}-{model.Fingerprint}", 1, 0, LMCache.Core.Memory.KvDTypes.ToKeyToken(model.Decoder.Layout.DType));
    }

    /// <summary>Checks a request before it is queued.</summary>
    /// <exception cref="InvalidGenerationRequestException">Empty prompt, unknown ids, or longer than the context.</exception>
    public void Validate(GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.PromptTokens.Length == 0)
        {
            throw new InvalidGenerationRequestException("The prompt is empty.");
        }
        foreach (var id in request.PromptTokens)
        {
            if (id < 0 || id >= _model.Decoder.VocabSize)
            {
                throw new InvalidGenerationRequestException($"Token id {id} is outside the vocabulary [0, {_model.Decoder.VocabSize}).");
            }
        }
        if (request.MaxTokens < 1)
        {
            throw new InvalidGenerationRequestException($"max_tokens must be at least 1 (got {request.MaxTokens}).");
        }
        if (request.PromptTokens.Length >= _model.ContextLength)
        {
            throw new InvalidGenerationRequestException(
                $"This model's maximum context length is {_model.ContextLength} tokens; the prompt has {request.PromptTokens.Length} tokens and leaves no room to generate.");
        }
    }

    /// <summary>Runs a request to the end and collects its tokens.</summary>
    public async Task<GenerationResult> GenerateToEndAsync(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        var tokens = new List<TokenEvent>();
        var text = new StringBuilder();
        await foreach (var e in GenerateAsync(request, cancellationToken).ConfigureAwait(false))
        {
            switch (e)
            {
                case TokenEvent t:
                    tokens.Add(t);
                    text.Append(t.TextDelta);
                    break;
                case CompletedEvent c:
                    text.Append(c.TrailingText);
                    return new GenerationResult(text.ToString(), tokens, c);
            }
        }
        throw new InvalidOperationException("Generation ended without a completion event.");
    }

    /// <summary>
    /// Queues a request and streams its tokens as they are produced, then one <see cref="CompletedEvent"/>.
    /// Cancelling (e.g. the client went away) stops generation and frees the engine.
    /// </summary>
    /// <exception cref="InvalidGenerationRequestException">The request is invalid (thrown before anything is queued).</exception>
    public async IAsyncEnumerable<GenerationEvent> GenerateAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        Validate(request);
        var channel = Channel.CreateUnbounded<GenerationEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        // The producer owns `linked` (it may outlive this enumerator while it finishes its stores).
        var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var producer = Task.Run(async () =>
        {
            try
            {
                await ProduceAsync(request, channel.Writer, linked.Token).ConfigureAwait(false);
            }
            finally
            {
                linked.Dispose();
            }
        }, CancellationToken.None);
        var completed = false;
        try
        {
            await foreach (var e in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                completed |= e is CompletedEvent;
                yield return e;
            }
        }
        finally
        {
            if (!completed)
            {
                // Abandoned (client gone, error): stop generating and wait until the engine is free again.
                try
                {
                    await linked.CancelAsync().ConfigureAwait(false);
                }
                catch (ObjectDisposedException)
                {
                    // The producer already finished.
                }
                try
                {
                    await producer.ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                }
            }
            // Otherwise the answer is complete; the producer finishes its stores on its own (WhenIdleAsync waits for it).
        }
    }

    /// <summary>
    /// Completes when no request holds the engine, i.e. the stores of every answered request have been handed to the
    /// cache (then <see cref="LMCacheEngine.FlushAsync"/> waits for their disk/remote writes).
    /// </summary>
    public async Task WhenIdleAsync(CancellationToken cancellationToken = default)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        _gate.Release();
    }

    private async Task ProduceAsync(GenerationRequest request, ChannelWriter<GenerationEvent> writer, CancellationToken cancellationToken)
    {
        var arrived = Stopwatch.GetTimestamp();
        Interlocked.Increment(ref _queued);
        try
        {
            await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                await RunAsync(request, writer, Stopwatch.GetElapsedTime(arrived).TotalSeconds, cancellationToken).ConfigureAwait(false);
                writer.TryComplete();
            }
            finally
            {
                _gate.Release();
            }
        }
        catch (Exception ex)
        {
            writer.TryComplete(ex);
            if (ex is not OperationCanceledException)
            {
                LogGenerationFailed(_logger, ex);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _queued);
        }
    }

    private async Task RunAsync(GenerationRequest request, ChannelWriter<GenerationEvent> writer, double queueSeconds, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var decoder = _model.Decoder;
        var prompt = request.PromptTokens;
        var n = prompt.Length;
        var cache = request.BypassCache ? null : _cache;
        using var sequence = new KvSequence(decoder.Layout, decoder.KvElementType);

        // 1. Retrieve: at most n - 1 tokens, so the last prompt token is computed for its logits. The prompt's chunk
        // keys are computed once and serve this retrieve and the stores below; the retrieve walks the tiers once and
        // sizes the past from what they returned (no lookup first: it would walk the remote tier a second time).
        using var prepared = cache?.Prepare(prompt, request.CacheSalt);
        var loaded = 0;
        TierHits tiers = default;
        if (cache is not null && prepared is not null && n > 1)
        {
            var result = await cache.RetrieveAsync(prepared, sequence, n - 1, cancellationToken).ConfigureAwait(false);
            loaded = result.LoadedTokens;
            tiers = result.Tiers;
        }
        var retrieveSeconds = Stopwatch.GetElapsedTime(started).TotalSeconds;

        // 2. Prefill the rest in bounded steps.
        var prefillStarted = Stopwatch.GetTimestamp();
        var logits = new float[decoder.VocabSize];
        var step = Math.Max(1, _options.PrefillStepTokens);
        for (var position = loaded; position < n; position += step)
        {
            cancellationToken.ThrowIfCancellationRequested();
            decoder.Forward(prompt.AsSpan(position, Math.Min(step, n - position)), sequence, logits);
        }
        var prefillSeconds = Stopwatch.GetElapsedTime(prefillStarted).TotalSeconds;
        request.PromptLogitsObserver?.Invoke((float[])logits.Clone());

        // 3. Decode.
        var sampler = new Sampler(request.Sampling);
        var stop = new StopMatcher(request.Stop);
        var utf8 = new UTF8Encoding(false, false).GetDecoder();
        // max_tokens is the client's number (up to int.MaxValue): size by what the context can still hold.
        var maxTokens = Math.Min(request.MaxTokens, _model.ContextLength - n);
        var generated = new List<int>(Math.Max(maxTokens, 0));
        var finishReason = "length";
        double ttft = 0;
        var promptStored = false;
        var charBuffer = new char[64];
        while (true)
        {
            var token = sampler.Next(logits);
            if (!request.IgnoreEos && _eos.Contains(token))
            {
                finishReason = "stop";
                if (generated.Count == 0)
                {
                    ttft = Stopwatch.GetElapsedTime(started).TotalSeconds;
                }
                break;
            }
            generated.Add(token);
            float? logProb = null;
            IReadOnlyList<(int, float)>? top = null;
            if (request.LogProbs)
            {
                var (lp, best) = Sampler.LogProbs(logits, token, request.TopLogProbs);
                logProb = lp;
                top = best;
            }
            var bytes = _model.Tokenizer.IsSpecial(token) ? [] : _model.Tokenizer.TokenBytesOf(token);
            var needed = utf8.GetCharCount(bytes, flush: false);
            if (needed > charBuffer.Length)
            {
                charBuffer = new char[needed * 2];
            }
            var chars = utf8.GetChars(bytes, charBuffer, flush: false);
            var delta = stop.Append(new string(charBuffer, 0, chars));
            await writer.WriteAsync(new TokenEvent(token, _model.Tokenizer.Decode([token], skipSpecialTokens: false), delta, logProb, top), cancellationToken).ConfigureAwait(false);
            if (generated.Count == 1)
            {
                ttft = Stopwatch.GetElapsedTime(started).TotalSeconds;
                // 4. Store the prompt's new chunks once the first token is out (off the TTFT path), before decoding
                // on. A request that ends here stores after its answer is out (below).
                if (cache is not null && prepared is not null && !stop.Stopped && generated.Count < maxTokens)
                {
                    cache.Store(prepared, sequence, loaded);
                    promptStored = true;
                }
            }
            if (stop.Stopped)
            {
                finishReason = "stop";
                break;
            }
            if (generated.Count >= maxTokens)
            {
                break;
            }
            cancellationToken.ThrowIfCancellationRequested();
            decoder.Forward([token], sequence, logits);
        }
        var tail = utf8.GetCharCount([], flush: true) > 0 ? stop.Append(new string(charBuffer, 0, utf8.GetChars([], charBuffer, flush: true))) : "";
        tail += stop.Flush();
        var stats = new GenerationStats(n, generated.Count, loaded, tiers, queueSeconds, ttft, retrieveSeconds, prefillSeconds,
            Stopwatch.GetElapsedTime(started).TotalSeconds);
        LogRequest(_logger, n, loaded, n - loaded, generated.Count, ttft * 1000, tiers.Cpu, tiers.Disk, tiers.Remote);
        await writer.WriteAsync(new CompletedEvent(finishReason, tail, stats), cancellationToken).ConfigureAwait(false);

        // Stores still due run after the answer is out, while this request still owns the engine and its KV.
        if (cache is not null && prepared is not null && !promptStored)
        {
            cache.Store(prepared, sequence, loaded);
        }

        // 5. save_decode_cache: the chunks completed while decoding (the KV of every token but the last sampled one).
        if (cache is not null && (_options.SaveDecodeCache ?? cache.Options.SaveDecodeCache) && sequence.Length > n)
        {
            var all = new int[sequence.Length];
            prompt.CopyTo(all, 0);
            generated.CopyTo(0, all, n, sequence.Length - n);
            cache.Store(all, sequence, n, request.CacheSalt);
        }
    }

    /// <summary>Waits for the request in progress to finish its stores, then releases the engine's queue.</summary>
    public async ValueTask DisposeAsync()
    {
        await WhenIdleAsync().ConfigureAwait(false);
        _gate.Dispose();
    }

    [LoggerMessage(EventId = 5000, Level = LogLevel.Information,
        Message = "Total tokens {Total}, LMCache hit tokens: {Hit}, prefilled: {Prefilled}, generated: {Generated}, TTFT {TtftMs:F1} ms (chunks from cpu {Cpu}, disk {Disk}, remote {Remote})")]
    private static partial void LogRequest(ILogger logger, int total, int hit, int prefilled, int generated, double ttftMs, int cpu, int disk, int remote);

    [LoggerMessage(EventId = 5001, Level = LogLevel.Error, Message = "Generation failed")]
    private static partial void LogGenerationFailed(ILogger logger, Exception exception);
}
