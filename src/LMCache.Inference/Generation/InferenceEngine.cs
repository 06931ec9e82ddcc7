using System.Collections.Concurrent;
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
using Microsoft.ML.OnnxRuntime;

namespace LMCache.Inference.Generation;

/// <summary>Options of <see cref="InferenceEngine"/>.</summary>
public sealed class InferenceEngineOptions
{
    /// <summary>
    /// Most prompt tokens per model run during prefill (one prefill chunk), in tokens. Bounds the attention scratch
    /// memory of long prompts (scores are heads × step × context floats); a chunk is also bounded by what
    /// <see cref="MaxNumBatchedTokens"/> leaves after the step's decode rows. Defaults to 512.
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

/// <summary>What one scheduler step ran (for metrics): decode rows, prefill tokens and how long it took.</summary>
/// <param name="DecodeRows">Sequences that decoded one token in this step (the batch size).</param>
/// <param name="PrefillTokens">Prompt tokens computed in this step (chunked prefill).</param>
/// <param name="Running">Sequences holding a slot after the step.</param>
/// <param name="Waiting">Requests waiting for a slot after the step.</param>
/// <param name="Seconds">Wall time of the step.</param>
public readonly record struct SchedulerStep(int DecodeRows, int PrefillTokens, int Running, int Waiting, double Seconds);

/// <summary>
/// The serving engine over an <see cref="OnnxDecoder"/> with LMCache as its KV connector: a scheduler with continuous
/// batching and chunked prefill. Requests wait in a bounded queue (<see cref="InferenceEngineOptions.MaxWaitingRequests"/>)
/// for one of <see cref="InferenceEngineOptions.MaxNumSeqs"/> slots. Each scheduler step runs one batched decode
/// forward over every decoding sequence (one token each), then prefill chunks of the sequences still reading their
/// prompt, shortest remaining first, within <see cref="InferenceEngineOptions.MaxNumBatchedTokens"/>; sequences join
/// and leave between steps. Per sequence, exactly as one at a time: admitted → chunk keys computed once → LMCache
/// <c>retrieve</c> of the cached prefix (at most all but the last prompt token, off the scheduler thread) → prefill
/// of the rest → first token → <c>store</c> of the prompt's new chunks → decode → with <c>save_decode_cache</c>, store
/// of the chunks completed while decoding. Each sequence's KV is its own <see cref="KvSequence"/> (prefill, LMCache)
/// or its own row of the decode batch (masked, so no sequence sees another's KV). A cancelled request frees its slot
/// and KV at the next step.
/// </summary>
public sealed partial class InferenceEngine : IAsyncDisposable
{
    private readonly LanguageModel _model;
    private readonly LMCacheEngine? _cache;
    private readonly InferenceEngineOptions _options;
    private readonly ILogger _logger;
    private readonly HashSet<int> _eos;
    private readonly bool _saveDecodeCache;

    // Shared between request threads and the scheduler: under _lock.
    private readonly Lock _lock = new();
    private readonly Queue<Sequence> _waiting = new();
    private int _running;   // sequences holding a slot
    private int _active;    // waiting + running, until released
    private TaskCompletionSource? _idle;
    private bool _disposed;

    // Finished retrieves, handed to the scheduler.
    private readonly ConcurrentQueue<Sequence> _retrieved = new();
    private readonly ManualResetEventSlim _wake = new(false);
    private readonly Thread _scheduler;
    private volatile bool _stopping;
    private bool _schedulerStarted;   // under _lock

    // The scheduler thread's own state.
    private readonly List<Sequence> _slots = [];
    private readonly List<Sequence> _batchRows = [];
    private DecodeBatch? _batch;
    private float[] _logits = [];
    private int[] _tokens = [];
    private long _kvBytes;
    private TaskCompletionSource? _idleReached;

    /// <summary>Creates an engine; <paramref name="cache"/> null runs without a KV cache (every prompt recomputed).</summary>
    /// <param name="model">The model (owned by the caller).</param>
    /// <param name="cache">The cache engine (owned by the caller), created with <see cref="CreateKeyScope"/> and the decoder's layout.</param>
    /// <param name="options">Options; null for defaults.</param>
    /// <param name="logger">Logger; null for none.</param>
    /// <exception cref="LMCache.Core.Diagnostics.LMCacheConfigurationException">A scheduler setting is out of range.</exception>
    public InferenceEngine(LanguageModel model, LMCacheEngine? cache, InferenceEngineOptions? options = null, ILogger<InferenceEngine>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        _model = model;
        _cache = cache;
        _options = options ?? new InferenceEngineOptions();
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _eos = [.. model.EosTokenIds];
        if (cache is not null && cache.Layout != model.Decoder.Layout)
        {
            throw new ArgumentException($"The cache was created for {cache.Layout} but the model's KV is {model.Decoder.Layout}.", nameof(cache));
        }
        var problems = new List<string>();
        if (_options.MaxNumSeqs < 1)
        {
            problems.Add($"max_num_seqs must be at least 1 (got {_options.MaxNumSeqs}).");
        }
        if (_options.MaxNumBatchedTokens <= _options.MaxNumSeqs)
        {
            problems.Add($"max_num_batched_tokens ({_options.MaxNumBatchedTokens}) must be more than max_num_seqs ({_options.MaxNumSeqs}): a step decodes one token per running sequence and needs room for prefill.");
        }
        if (_options.MaxWaitingRequests < 0)
        {
            problems.Add($"max_queue_len must be 0 or more (got {_options.MaxWaitingRequests}).");
        }
        if (_options.PrefillStepTokens < 1)
        {
            problems.Add($"The prefill step must be at least 1 token (got {_options.PrefillStepTokens}).");
        }
        if (_options.MaxModelLen is < 0 or 1)
        {
            problems.Add($"max_model_len must be at least 2 (got {_options.MaxModelLen}).");
        }
        if (problems.Count > 0)
        {
            throw new LMCache.Core.Diagnostics.LMCacheConfigurationException(problems);
        }
        MaxModelLength = _options.MaxModelLen is > 0 and var limit ? Math.Min(limit, model.ContextLength) : model.ContextLength;
        _saveDecodeCache = cache is not null && (_options.SaveDecodeCache ?? cache.Options.SaveDecodeCache);
        _scheduler = new Thread(RunScheduler) { IsBackground = true, Name = "LMCache inference scheduler" };
    }

    /// <summary>The model.</summary>
    public LanguageModel Model => _model;

    /// <summary>The attached cache, or null.</summary>
    public LMCacheEngine? Cache => _cache;

    /// <summary>The options in effect.</summary>
    public InferenceEngineOptions Options => _options;

    /// <summary>Most tokens (prompt + generated) of one sequence: <see cref="InferenceEngineOptions.MaxModelLen"/> capped to the model's context length.</summary>
    public int MaxModelLength { get; }

    /// <summary>Requests waiting or running.</summary>
    public int QueueDepth => Volatile.Read(ref _active);

    /// <summary>Sequences holding a slot (retrieving, prefilling or decoding): vLLM's <c>num_requests_running</c>.</summary>
    public int RunningRequests => Volatile.Read(ref _running);

    /// <summary>Requests waiting for a slot: vLLM's <c>num_requests_waiting</c>.</summary>
    public int WaitingRequests
    {
        get
        {
            lock (_lock)
            {
                return _waiting.Count;
            }
        }
    }

    /// <summary>
    /// Bytes of KV the scheduler holds (every slot's own KV plus the decode batch, padding included), as of the end of
    /// its last step: 0 once every request has been released.
    /// </summary>
    public long KvBytes => Interlocked.Read(ref _kvBytes);

    /// <summary>Raised on the scheduler thread after every step that ran the model (keep handlers short).</summary>
    public event Action<SchedulerStep>? StepCompleted;

    /// <summary>
    /// The key scope for a model: format <c>onnx</c>, model name = served name + <c>-</c> + the model's fingerprint
    /// (geometry, dtype and weights), dtype token of the KV dtype — so different models, exports or dtypes never
    /// share chunks.
    /// </summary>
    public static LMCache.Core.Keys.KeyScope CreateKeyScope(LanguageModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
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
        if (request.PromptTokens.Length >= MaxModelLength)
        {
            throw new InvalidGenerationRequestException(
                $"This model's maximum context length is {MaxModelLength} tokens; the prompt has {request.PromptTokens.Length} tokens and leaves no room to generate.");
        }
    }

    /// <summary>Runs a request to the end and collects its tokens.</summary>
    /// <exception cref="EngineOverloadedException">The waiting queue is full.</exception>
    public Task<GenerationResult> GenerateToEndAsync(GenerationRequest request, CancellationToken cancellationToken = default) =>
        GenerateToEndAsync(request, onToken: null, cancellationToken);

    /// <summary>Runs a request to the end and collects its tokens, calling <paramref name="onToken"/> as each one is produced.</summary>
    /// <exception cref="EngineOverloadedException">The waiting queue is full.</exception>
    public async Task<GenerationResult> GenerateToEndAsync(GenerationRequest request, Action<TokenEvent>? onToken, CancellationToken cancellationToken = default)
    {
        var tokens = new List<TokenEvent>();
        var text = new StringBuilder();
        await foreach (var e in GenerateAsync(request, cancellationToken).ConfigureAwait(false))
        {
            switch (e)
            {
                case TokenEvent t:
                    onToken?.Invoke(t);
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
    /// Cancelling or abandoning the enumeration (e.g. the client went away) frees the request's slot and KV at the
    /// next scheduler step; the enumerator's disposal waits for that.
    /// </summary>
    /// <exception cref="InvalidGenerationRequestException">The request is invalid (thrown before anything is queued).</exception>
    /// <exception cref="EngineOverloadedException">The waiting queue is full (thrown before anything is queued).</exception>
    public async IAsyncEnumerable<GenerationEvent> GenerateAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        Validate(request);
        var channel = Channel.CreateUnbounded<GenerationEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var sequence = new Sequence(request, channel.Writer, cancellationToken);
        Enqueue(sequence);
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
                // Abandoned (client gone, error): the scheduler frees the slot and the KV at its next step.
                sequence.Abandon();
                Wake();
                await sequence.Released.ConfigureAwait(false);
            }
            // Otherwise the answer is complete; the scheduler finishes the stores on its own (WhenIdleAsync waits for them).
        }
    }

    /// <summary>
    /// Completes when no request is waiting or running, i.e. the stores of every answered request have been handed to
    /// the cache (then <see cref="LMCacheEngine.FlushAsync"/> waits for their disk/remote writes).
    /// </summary>
    public Task WhenIdleAsync(CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            if (_active == 0)
            {
                return Task.CompletedTask;
            }
            _idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _idle.Task.WaitAsync(cancellationToken);
        }
    }

    /// <summary>Refuses new requests, waits for the queued and running ones to finish (and store), then stops the scheduler.</summary>
    public async ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
        }
        await WhenIdleAsync().ConfigureAwait(false);
        _stopping = true;
        Wake();
        if (_schedulerStarted)
        {
            await Task.Run(_scheduler.Join).ConfigureAwait(false);
        }
        _batch?.Dispose();
        _batch = null;
        _wake.Dispose();
    }

    private void Enqueue(Sequence sequence)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            // Requests in the queue that a free slot will take at the next step are not waiting for long.
            if (_waiting.Count + _running >= _options.MaxNumSeqs + _options.MaxWaitingRequests)
            {
                throw new EngineOverloadedException(
                    $"The server is overloaded: {_running} requests are running and {_waiting.Count} are waiting (max_num_seqs {_options.MaxNumSeqs}, max_queue_len {_options.MaxWaitingRequests}). Retry later.");
            }
            _waiting.Enqueue(sequence);
            _active++;
            if (!_schedulerStarted)
            {
                // Started with the first request: an engine only used to validate requests holds no thread.
                _scheduler.Start();
                _schedulerStarted = true;
            }
        }
        sequence.WakeOnCancel(Wake);
        Wake();
    }

    private void Wake()
    {
        try
        {
            _wake.Set();
        }
        catch (ObjectDisposedException)
        {
            // Disposed: nothing is left to schedule.
        }
    }

    private void RunScheduler()
    {
        while (true)
        {
            _wake.Reset();
            if (_stopping)
            {
                return;
            }
            bool ranModel;
            try
            {
                ranModel = Step();
            }
            catch (Exception ex)
            {
                // A bug in the scheduler itself: fail what it holds rather than hang every client.
                LogSchedulerFailed(_logger, ex);
                foreach (var sequence in _slots.ToArray())
                {
                    if (sequence.Phase != Phase.Retrieving)
                    {
                        Release(sequence, ex);
                    }
                }
                DropBatch();
                UpdateKvBytes();
                ranModel = true;   // step again: the queue may hold requests that nothing else would wake it for
            }
            // Idle is signalled after the step's accounting, so an idle engine reports no KV held.
            _idleReached?.TrySetResult();
            _idleReached = null;
            if (!ranModel)
            {
                _wake.Wait();
            }
        }
    }

    /// <summary>One scheduler step; false when there was nothing to run (the scheduler sleeps until woken).</summary>
    private bool Step()
    {
        var started = Stopwatch.GetTimestamp();

        // 1. Free the slots of cancelled requests (their KV goes with them) and take in finished retrieves.
        for (var i = _slots.Count - 1; i >= 0; i--)
        {
            var sequence = _slots[i];
            if (sequence.IsCancelled && sequence.Phase != Phase.Retrieving)
            {
                Release(sequence, null);
            }
        }
        while (_retrieved.TryDequeue(out var sequence))
        {
            if (sequence.Error is { } error)
            {
                Release(sequence, error);
            }
            else if (sequence.IsCancelled)
            {
                Release(sequence, null);
            }
            else
            {
                sequence.Phase = Phase.Prefill;
            }
        }

        // 2. Drop cancelled requests from the queue (their clients are gone: they must not hold a queue place until a
        // slot frees) and admit waiting requests into free slots.
        List<Sequence>? admitted = null;
        List<Sequence>? dropped = null;
        lock (_lock)
        {
            if (_waiting.Any(s => s.IsCancelled))
            {
                var kept = _waiting.Where(s => !s.IsCancelled).ToArray();
                dropped = [.. _waiting.Where(s => s.IsCancelled)];
                _waiting.Clear();
                foreach (var sequence in kept)
                {
                    _waiting.Enqueue(sequence);
                }
            }
            while (_running < _options.MaxNumSeqs && _waiting.TryDequeue(out var sequence))
            {
                if (sequence.IsCancelled)
                {
                    (dropped ??= []).Add(sequence);
                    continue;
                }
                _running++;
                (admitted ??= []).Add(sequence);
            }
        }
        foreach (var sequence in dropped ?? [])
        {
            Release(sequence, null);
        }
        foreach (var sequence in admitted ?? [])
        {
            Admit(sequence);
        }

        // 3. One decode token for every decoding sequence, in one batched run.
        var decoding = _slots.FindAll(s => s.Phase == Phase.Decode);
        if (decoding.Count > 0)
        {
            Decode(decoding);
        }

        // 4. Prefill chunks within what is left of the step's token budget, shortest remaining prompt first (a short
        // chat is not held behind a long document; the long one takes the rest of the budget).
        var budget = _options.MaxNumBatchedTokens - decoding.Count;
        var prefillTokens = 0;
        foreach (var sequence in _slots.Where(s => s.Phase == Phase.Prefill).OrderBy(s => s.Request.PromptTokens.Length - s.Kv.Length).ToList())
        {
            if (budget <= 0)
            {
                break;
            }
            var chunk = Prefill(sequence, budget);
            budget -= chunk;
            prefillTokens += chunk;
        }

        // 5. Finish what ended in this step (answer first, then its stores), and drop a batch nobody decodes in.
        foreach (var sequence in _slots.FindAll(s => s.Phase == Phase.Finished))
        {
            Finish(sequence);
        }
        if (_batch is not null && _batchRows.TrueForAll(s => s.Phase != Phase.Decode))
        {
            DropBatch();
        }

        UpdateKvBytes();

        var ran = decoding.Count > 0 || prefillTokens > 0;
        if (ran && StepCompleted is { } observers)
        {
            var step = new SchedulerStep(decoding.Count, prefillTokens, Volatile.Read(ref _running), WaitingRequests, Stopwatch.GetElapsedTime(started).TotalSeconds);
            try
            {
                observers(step);
            }
            catch (Exception ex)
            {
                // An observer's bug must not end the requests this step served.
                LogStepObserverFailed(_logger, ex);
            }
        }
        return ran || !_retrieved.IsEmpty;
    }

    private void UpdateKvBytes()
    {
        var kvBytes = _batch?.ByteCount ?? 0;
        foreach (var sequence in _slots)
        {
            if (sequence.Phase != Phase.Retrieving)
            {
                kvBytes += sequence.Kv.ByteCount;
            }
        }
        Interlocked.Exchange(ref _kvBytes, kvBytes);
    }

    private void Admit(Sequence sequence)
    {
        sequence.Admitted = Stopwatch.GetTimestamp();
        sequence.Kv = new KvSequence(_model.Decoder.Layout, _model.Decoder.KvElementType);
        _slots.Add(sequence);
        var cache = sequence.Request.BypassCache ? null : _cache;
        if (cache is null)
        {
            sequence.Phase = Phase.Prefill;
            return;
        }
        sequence.Cache = cache;
        sequence.Phase = Phase.Retrieving;
        // Off the scheduler thread: a slow remote tier delays this sequence only, never the others' steps.
        _ = Task.Run(() => RetrieveAsync(sequence, cache));
    }

    private async Task RetrieveAsync(Sequence sequence, LMCacheEngine cache)
    {
        try
        {
            // The prompt's chunk keys are computed once and serve this retrieve and the stores. At most n - 1 tokens
            // are loaded, so the last prompt token is computed for its logits; the retrieve walks the tiers once and
            // sizes the past from what they returned.
            var prompt = sequence.Request.PromptTokens;
            sequence.Prepared = cache.Prepare(prompt, sequence.Request.CacheSalt);
            if (prompt.Length > 1)
            {
                var result = await cache.RetrieveAsync(sequence.Prepared, sequence.Kv, prompt.Length - 1, sequence.CancellationToken).ConfigureAwait(false);
                sequence.Loaded = result.LoadedTokens;
                sequence.Tiers = result.Tiers;
            }
        }
        catch (OperationCanceledException) when (sequence.IsCancelled)
        {
            // Released by the scheduler as cancelled.
        }
        catch (Exception ex)
        {
            sequence.Error = ex;
        }
        sequence.RetrieveSeconds = Stopwatch.GetElapsedTime(sequence.Admitted).TotalSeconds;
        _retrieved.Enqueue(sequence);
        Wake();
    }

    private void Decode(List<Sequence> decoding)
    {
        var decoder = _model.Decoder;
        var vocab = decoder.VocabSize;
        if (_logits.Length < decoding.Count * vocab)
        {
            _logits = new float[decoding.Count * vocab];
        }
        if (_tokens.Length < decoding.Count)
        {
            _tokens = new int[decoding.Count];
        }
        try
        {
            if (decoder.SupportsBatching)
            {
                EnsureBatch(decoding);
                for (var b = 0; b < decoding.Count; b++)
                {
                    _tokens[b] = decoding[b].NextToken;
                }
                decoder.ForwardBatch(_batch!, _tokens.AsSpan(0, decoding.Count), _logits.AsSpan(0, decoding.Count * vocab));
            }
            else
            {
                // No attention_mask in the graph: rows cannot share a run, so each decodes on its own.
                for (var b = 0; b < decoding.Count; b++)
                {
                    decoder.Forward([decoding[b].NextToken], decoding[b].Kv, _logits.AsSpan(b * vocab, vocab));
                }
            }
        }
        catch (Exception ex) when (ex is OnnxRuntimeException or InvalidOperationException or OutOfMemoryException)
        {
            LogGenerationFailed(_logger, ex);
            DropBatch();
            foreach (var sequence in decoding)
            {
                Release(sequence, ex);
            }
            return;
        }
        for (var b = 0; b < decoding.Count; b++)
        {
            Emit(decoding[b], _logits.AsSpan(b * vocab, vocab));
        }
    }

    /// <summary>Makes the decode batch hold exactly <paramref name="decoding"/>, in order, rebuilding it when the set changed.</summary>
    private void EnsureBatch(List<Sequence> decoding)
    {
        if (_batch is not null && _batchRows.Count == decoding.Count && _batchRows.SequenceEqual(decoding))
        {
            return;
        }
        UnpackBatch();
        _batch = DecodeBatch.Gather([.. decoding.Select(s => s.Kv)], _model.Decoder.KvElementType, _model.Decoder.DecodesInPlace);
        _batchRows.AddRange(decoding);
        for (var b = 0; b < decoding.Count; b++)
        {
            decoding[b].BatchRow = b;
        }
    }

    /// <summary>Moves the KV of every batch row still decoding back to its own sequence and frees the batch.</summary>
    private void UnpackBatch()
    {
        if (_batch is null)
        {
            return;
        }
        foreach (var sequence in _batchRows)
        {
            if (sequence.Phase is Phase.Decode or Phase.Finished && sequence.BatchRow >= 0)
            {
                _batch.Scatter(sequence.BatchRow, sequence.Kv);
            }
            sequence.BatchRow = -1;
        }
        DropBatch();
    }

    private void DropBatch()
    {
        foreach (var sequence in _batchRows)
        {
            sequence.BatchRow = -1;
        }
        _batchRows.Clear();
        _batch?.Dispose();
        _batch = null;
    }

    /// <summary>Computes up to <paramref name="budget"/> of a sequence's uncached prompt tokens; returns how many.</summary>
    private int Prefill(Sequence sequence, int budget)
    {
        var prompt = sequence.Request.PromptTokens;
        var position = sequence.Kv.Length;
        if (sequence.PrefillStarted == 0)
        {
            sequence.PrefillStarted = Stopwatch.GetTimestamp();
        }
        var chunk = Math.Min(Math.Min(prompt.Length - position, budget), _options.PrefillStepTokens);
        var vocab = _model.Decoder.VocabSize;
        if (_logits.Length < vocab)
        {
            _logits = new float[vocab];
        }
        var logits = _logits.AsSpan(0, vocab);
        try
        {
            _model.Decoder.Forward(prompt.AsSpan(position, chunk), sequence.Kv, logits);
        }
        catch (Exception ex) when (ex is OnnxRuntimeException or InvalidOperationException or OutOfMemoryException)
        {
            LogGenerationFailed(_logger, ex);
            Release(sequence, ex);
            return chunk;
        }
        if (sequence.Kv.Length == prompt.Length)
        {
            sequence.PrefillSeconds = Stopwatch.GetElapsedTime(sequence.PrefillStarted).TotalSeconds;
            sequence.Request.PromptLogitsObserver?.Invoke(logits.ToArray());
            sequence.StartDecoding(MaxModelLength);
            Emit(sequence, logits);
        }
        return chunk;
    }

    /// <summary>Samples the next token of <paramref name="sequence"/> from its logits, streams it, and decides whether it goes on.</summary>
    private void Emit(Sequence sequence, ReadOnlySpan<float> logits)
    {
        var request = sequence.Request;
        var token = sequence.Sampler!.Next(logits);
        if (!request.IgnoreEos && _eos.Contains(token))
        {
            if (sequence.Generated.Count == 0)
            {
                sequence.TimeToFirstToken = Stopwatch.GetElapsedTime(sequence.Admitted).TotalSeconds;
            }
            sequence.End("stop");
            return;
        }
        sequence.Generated.Add(token);
        float? logProb = null;
        IReadOnlyList<(int, float)>? top = null;
        if (request.LogProbs)
        {
            var (lp, best) = Sampler.LogProbs(logits, token, request.TopLogProbs);
            logProb = lp;
            top = best;
        }
        var delta = sequence.AppendText(_model.Tokenizer.IsSpecial(token) ? [] : _model.Tokenizer.TokenBytesOf(token));
        sequence.Writer.TryWrite(new TokenEvent(token, _model.Tokenizer.Decode([token], skipSpecialTokens: false), delta, logProb, top));
        if (sequence.Generated.Count == 1)
        {
            sequence.TimeToFirstToken = Stopwatch.GetElapsedTime(sequence.Admitted).TotalSeconds;
            // Store the prompt's new chunks once the first token is out (off the TTFT path), before decoding on. A
            // request that ends here stores after its answer is out (Finish).
            if (sequence.Cache is not null && sequence.Prepared is not null && !sequence.Stop!.Stopped && sequence.Generated.Count < sequence.MaxTokens)
            {
                sequence.Cache.Store(sequence.Prepared, sequence.Kv, sequence.Loaded);
                sequence.PromptStored = true;
            }
        }
        if (sequence.Stop!.Stopped)
        {
            sequence.End("stop");
        }
        else if (sequence.Generated.Count >= sequence.MaxTokens)
        {
            sequence.End("length");
        }
        else
        {
            sequence.NextToken = token;
            sequence.Phase = Phase.Decode;
        }
    }

    /// <summary>Sends the completion, runs the stores still due (after the answer is out) and frees the slot.</summary>
    private void Finish(Sequence sequence)
    {
        var request = sequence.Request;
        var n = request.PromptTokens.Length;
        var tail = sequence.FlushText();
        var stats = new GenerationStats(n, sequence.Generated.Count, sequence.Loaded, sequence.Tiers,
            Stopwatch.GetElapsedTime(sequence.Arrived, sequence.Admitted).TotalSeconds, sequence.TimeToFirstToken, sequence.RetrieveSeconds,
            sequence.PrefillSeconds, Stopwatch.GetElapsedTime(sequence.Admitted).TotalSeconds);
        LogRequest(_logger, n, sequence.Loaded, n - sequence.Loaded, sequence.Generated.Count, sequence.TimeToFirstToken * 1000,
            sequence.Tiers.Cpu, sequence.Tiers.Disk, sequence.Tiers.Remote);
        sequence.Writer.TryWrite(new CompletedEvent(sequence.FinishReason, tail, stats));

        var cache = sequence.Cache;
        if (cache is not null && sequence.Prepared is not null)
        {
            if (sequence.BatchRow >= 0)
            {
                // Its KV is a row of the decode batch: take it back for the adapter LMCache copies from.
                _batch!.Scatter(sequence.BatchRow, sequence.Kv);
            }
            if (!sequence.PromptStored)
            {
                cache.Store(sequence.Prepared, sequence.Kv, sequence.Loaded);
            }
            // save_decode_cache: the chunks completed while decoding (the KV of every token but the last sampled one).
            if (_saveDecodeCache && sequence.Kv.Length > n)
            {
                var all = new int[sequence.Kv.Length];
                request.PromptTokens.CopyTo(all, 0);
                sequence.Generated.CopyTo(0, all, n, sequence.Kv.Length - n);
                cache.Store(all, sequence.Kv, n, request.CacheSalt);
            }
        }
        Release(sequence, null);
    }

    /// <summary>Frees a sequence's slot and KV and ends its stream (with <paramref name="error"/> when it failed).</summary>
    private void Release(Sequence sequence, Exception? error)
    {
        var held = _slots.Remove(sequence);
        sequence.Phase = Phase.Released;
        sequence.Dispose();
        if (error is not null)
        {
            sequence.Writer.TryComplete(error);
        }
        else if (sequence.IsCancelled)
        {
            sequence.Writer.TryComplete(new OperationCanceledException(sequence.CancellationToken));
        }
        else
        {
            sequence.Writer.TryComplete();
        }
        TaskCompletionSource? idle = null;
        lock (_lock)
        {
            if (held)
            {
                _running--;
            }
            if (--_active == 0)
            {
                idle = _idle;
                _idle = null;
            }
        }
        sequence.MarkReleased();
        if (idle is not null)
        {
            _idleReached = idle;
        }
    }

    private enum Phase
    {
        Waiting,
        Retrieving,
        Prefill,
        Decode,
        Finished,
        Released,
    }

    /// <summary>One request's state from queue to release. Its fields are the scheduler's, except while its retrieve runs.</summary>
    private sealed class Sequence(GenerationRequest request, ChannelWriter<GenerationEvent> writer, CancellationToken cancellationToken) : IDisposable
    {
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private CancellationTokenRegistration _registration;
        private volatile bool _abandoned;
        private readonly System.Text.Decoder _utf8 = new UTF8Encoding(false, false).GetDecoder();
        private char[] _chars = new char[64];

        public GenerationRequest Request { get; } = request;

        public ChannelWriter<GenerationEvent> Writer { get; } = writer;

        public CancellationToken CancellationToken { get; } = cancellationToken;

        public long Arrived { get; } = Stopwatch.GetTimestamp();

        public long Admitted { get; set; }

        public Phase Phase { get; set; }

        public KvSequence Kv { get; set; } = null!;

        public int BatchRow { get; set; } = -1;

        public LMCacheEngine? Cache { get; set; }

        public PreparedRequest? Prepared { get; set; }

        public int Loaded { get; set; }

        public TierHits Tiers { get; set; }

        public Exception? Error { get; set; }

        public double RetrieveSeconds { get; set; }

        public long PrefillStarted { get; set; }

        public double PrefillSeconds { get; set; }

        public double TimeToFirstToken { get; set; }

        public Sampler? Sampler { get; private set; }

        public StopMatcher? Stop { get; private set; }

        public int MaxTokens { get; private set; }

        public List<int> Generated { get; } = [];

        public int NextToken { get; set; }

        public bool PromptStored { get; set; }

        public string FinishReason { get; private set; } = "length";

        public bool IsCancelled => _abandoned || CancellationToken.IsCancellationRequested;

        public Task Released => _released.Task;

        public void Abandon() => _abandoned = true;

        public void WakeOnCancel(Action wake) => _registration = CancellationToken.UnsafeRegister(static state => ((Action)state!)(), wake);

        public void StartDecoding(int maxModelLength)
        {
            Sampler = new Sampler(Request.Sampling);
            Stop = new StopMatcher(Request.Stop);
            // max_tokens is the client's number (up to int.MaxValue): bounded by what the context can still hold.
            MaxTokens = Math.Min(Request.MaxTokens, maxModelLength - Request.PromptTokens.Length);
        }

        public void End(string reason)
        {
            FinishReason = reason;
            Phase = Phase.Finished;
        }

        /// <summary>The text a token's bytes release to the client (a partial UTF-8 character or a possible stop sequence is held back).</summary>
        public string AppendText(ReadOnlySpan<byte> bytes)
        {
            var needed = _utf8.GetCharCount(bytes, flush: false);
            if (needed > _chars.Length)
            {
                _chars = new char[needed * 2];
            }
            var count = _utf8.GetChars(bytes, _chars, flush: false);
            return Stop!.Append(new string(_chars, 0, count));
        }

        /// <summary>The text held back until the end.</summary>
        public string FlushText()
        {
            if (Stop is null)
            {
                return "";
            }
            var tail = _utf8.GetCharCount([], flush: true) > 0 ? Stop.Append(new string(_chars, 0, _utf8.GetChars([], _chars, flush: true))) : "";
            return tail + Stop.Flush();
        }

        public void MarkReleased() => _released.TrySetResult();

        public void Dispose()
        {
            _registration.Dispose();
            Kv?.Dispose();
            Prepared?.Dispose();
            Prepared = null;
        }
    }

    [LoggerMessage(EventId = 5000, Level = LogLevel.Information,
        Message = "Total tokens {Total}, LMCache hit tokens: {Hit}, prefilled: {Prefilled}, generated: {Generated}, TTFT {TtftMs:F1} ms (chunks from cpu {Cpu}, disk {Disk}, remote {Remote})")]
    private static partial void LogRequest(ILogger logger, int total, int hit, int prefilled, int generated, double ttftMs, int cpu, int disk, int remote);

    [LoggerMessage(EventId = 5001, Level = LogLevel.Error, Message = "Generation failed")]
    private static partial void LogGenerationFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 5003, Level = LogLevel.Warning, Message = "A StepCompleted observer failed")]
    private static partial void LogStepObserverFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 5002, Level = LogLevel.Critical, Message = "The inference scheduler failed; the requests it held were ended")]
    private static partial void LogSchedulerFailed(ILogger logger, Exception exception);
}
