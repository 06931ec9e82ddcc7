using System.Collections.Concurrent;
using System.Diagnostics;
using LMCache.Core.Configuration;
using LMCache.Engine;
using LMCache.Inference.Generation;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>
/// Issue #15: the continuous-batching scheduler. Sequences decoded together give exactly what they give alone, a
/// short chat is not held behind a long prefill, a cancelled request frees its slot and KV, a full queue refuses.
/// </summary>
[IntegrationTest]
public sealed class BatchingTests : IClassFixture<TinyLlamaModel>
{
    private const int ChunkSize = 256;
    private readonly TinyLlamaModel _fixture;

    public BatchingTests(TinyLlamaModel fixture) => _fixture = fixture;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Mixed lengths: the reference prompts and prefixes of the long one (1 to 1,872 tokens).</summary>
    private static int[][] MixedPrompts()
    {
        var reference = TinyLlama.Reference;
        var longIds = reference.Prompt("long").InputIds;
        return
        [
            reference.Prompt("short").InputIds,
            longIds,
            reference.Prompt("shared_prefix_a").InputIds,
            longIds[..1],
            longIds[..37],
            reference.Prompt("shared_prefix_b").InputIds,
            longIds[..300],
        ];
    }

    private static GenerationRequest Request(int[] prompt, int maxTokens, string? salt = null) => new()
    {
        PromptTokens = prompt,
        MaxTokens = maxTokens,
        IgnoreEos = true,
        LogProbs = true,
        CacheSalt = salt,
    };

    /// <summary>Each request run on its own, one at a time: the reference a batch must reproduce.</summary>
    private async Task<GenerationResult[]> AloneAsync(IReadOnlyList<GenerationRequest> requests, LMCacheEngine? cache = null)
    {
        await using var engine = new InferenceEngine(_fixture.Model, cache, new InferenceEngineOptions { MaxNumSeqs = 1 });
        var results = new GenerationResult[requests.Count];
        for (var i = 0; i < requests.Count; i++)
        {
            results[i] = await engine.GenerateToEndAsync(requests[i], Ct);
        }
        await engine.WhenIdleAsync(Ct);
        return results;
    }

    private static void AssertSameAsAlone(GenerationResult[] alone, GenerationResult[] together)
    {
        Assert.Equal(alone.Length, together.Length);
        for (var i = 0; i < alone.Length; i++)
        {
            Assert.Equal(alone[i].TokenIds, together[i].TokenIds);
            var worst = 0.0;
            for (var t = 0; t < alone[i].Tokens.Count; t++)
            {
                worst = Math.Max(worst, Math.Abs(alone[i].Tokens[t].LogProb!.Value - together[i].Tokens[t].LogProb!.Value));
            }
            Assert.True(worst <= 1e-4, $"request {i}: max |Δlogprob| = {worst:E3} exceeds 1e-4");
        }
    }

    /// <summary>Records the largest decode batch of the engine's steps.</summary>
    private sealed class StepLog
    {
        private int _maxRows;
        private readonly ConcurrentBag<int> _rows = [];

        public StepLog(InferenceEngine engine) => engine.StepCompleted += s =>
        {
            _rows.Add(s.DecodeRows);
            int seen;
            while (s.DecodeRows > (seen = Volatile.Read(ref _maxRows)) && Interlocked.CompareExchange(ref _maxRows, s.DecodeRows, seen) != seen)
            {
            }
        };

        public int MaxRows => Volatile.Read(ref _maxRows);

        public int DistinctBatchSizes => _rows.Where(r => r > 1).Distinct().Count();
    }

    [Fact]
    public async Task Concurrent_requests_of_mixed_lengths_give_the_tokens_and_logprobs_they_give_alone_cold()
    {
        // Different max_tokens: sequences leave the batch at different steps.
        var requests = MixedPrompts().Select((p, i) => Request(p, 6 + (5 * i))).ToArray();
        var alone = await AloneAsync(requests);

        await using var engine = new InferenceEngine(_fixture.Model, cache: null, new InferenceEngineOptions { MaxNumSeqs = 8 });
        var steps = new StepLog(engine);
        var together = await Task.WhenAll(requests.Select(r => engine.GenerateToEndAsync(r, Ct)));

        Assert.True(steps.MaxRows >= 4, $"at most {steps.MaxRows} sequences were decoded together");
        Assert.True(steps.DistinctBatchSizes >= 2, "the batch never changed size as sequences left");
        AssertSameAsAlone(alone, together);
    }

    [Fact]
    public async Task Concurrent_requests_give_the_tokens_and_logprobs_they_give_alone_with_the_cache_warm()
    {
        var salt = Guid.NewGuid().ToString("N");
        var requests = MixedPrompts().Select((p, i) => Request(p, 20 - i, salt)).ToArray();
        var cold = await AloneAsync(requests);

        await using var cache = LMCacheEngine.Create(new LMCacheEngineOptions { ChunkSize = ChunkSize, MaxLocalCpuSizeGib = 0.25 },
            InferenceEngine.CreateKeyScope(_fixture.Model), _fixture.Model.Decoder.Layout);
        await AloneAsync(requests, cache);   // stores every prompt's whole chunks

        await using var engine = new InferenceEngine(_fixture.Model, cache, new InferenceEngineOptions { MaxNumSeqs = 8 });
        var steps = new StepLog(engine);
        var warm = await Task.WhenAll(requests.Select(r => engine.GenerateToEndAsync(r, Ct)));

        Assert.True(steps.MaxRows >= 4, $"at most {steps.MaxRows} sequences were decoded together");
        for (var i = 0; i < requests.Length; i++)
        {
            var n = requests[i].PromptTokens.Length;
            Assert.Equal(n > 1 ? (n - 1) / ChunkSize * ChunkSize : 0, warm[i].Completed.Stats.CachedTokens);
        }
        Assert.Contains(warm, r => r.Completed.Stats.CachedTokens >= 1536);
        AssertSameAsAlone(cold, warm);
    }

    [Fact]
    public async Task Sequences_joining_and_leaving_mid_generation_give_what_they_give_alone()
    {
        var prompts = MixedPrompts();
        var requests = prompts.Select((p, i) => Request(p, 40 - (3 * i))).ToArray();
        var alone = await AloneAsync(requests);

        await using var engine = new InferenceEngine(_fixture.Model, cache: null, new InferenceEngineOptions { MaxNumSeqs = 4, MaxNumBatchedTokens = 128 });
        var steps = new StepLog(engine);
        // Each request starts once the previous one has produced a few tokens, so every one joins a running batch;
        // with 4 slots and 7 requests the later ones also wait for a slot that a finished sequence frees.
        var tasks = new List<Task<GenerationResult>>();
        for (var i = 0; i < requests.Length; i++)
        {
            var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            tasks.Add(CollectAsync(engine, requests[i], started));
            await started.Task.WaitAsync(TimeSpan.FromMinutes(2), Ct);
        }
        var together = await Task.WhenAll(tasks);

        Assert.True(steps.MaxRows >= 3, $"at most {steps.MaxRows} sequences were decoded together");
        Assert.True(steps.DistinctBatchSizes >= 2, "the batch never changed size");
        AssertSameAsAlone(alone, together);

        static async Task<GenerationResult> CollectAsync(InferenceEngine engine, GenerationRequest request, TaskCompletionSource started)
        {
            var tokens = new List<TokenEvent>();
            await foreach (var e in engine.GenerateAsync(request, Ct))
            {
                if (e is TokenEvent t)
                {
                    tokens.Add(t);
                    if (tokens.Count == 3)
                    {
                        started.TrySetResult();
                    }
                }
                else if (e is CompletedEvent c)
                {
                    started.TrySetResult();
                    return new GenerationResult("", tokens, c);
                }
            }
            throw new InvalidOperationException("no completion");
        }
    }

    [Fact]
    public async Task Max_num_seqs_one_runs_requests_strictly_in_turn()
    {
        var requests = MixedPrompts().Take(3).Select(p => Request(p, 8)).ToArray();
        await using var engine = new InferenceEngine(_fixture.Model, cache: null, new InferenceEngineOptions { MaxNumSeqs = 1 });
        var steps = new StepLog(engine);
        var firsts = new long[requests.Length];
        var lasts = new long[requests.Length];
        await Task.WhenAll(requests.Select(async (r, i) =>
        {
            await foreach (var e in engine.GenerateAsync(r, Ct))
            {
                if (e is TokenEvent && firsts[i] == 0)
                {
                    firsts[i] = Stopwatch.GetTimestamp();
                }
                lasts[i] = Stopwatch.GetTimestamp();
            }
        }));
        Assert.Equal(1, steps.MaxRows);
        var order = Enumerable.Range(0, requests.Length).OrderBy(i => firsts[i]).ToArray();
        for (var k = 1; k < order.Length; k++)
        {
            Assert.True(firsts[order[k]] > lasts[order[k - 1]], "a request started before the previous one finished");
        }
    }

    [Fact]
    public async Task Short_chats_get_their_first_token_before_a_long_prefill_finishes()
    {
        var random = new Random(15);
        var document = Enumerable.Range(0, 4000).Select(_ => random.Next(10, _fixture.Model.Decoder.VocabSize)).ToArray();
        await using var engine = new InferenceEngine(_fixture.Model, cache: null, new InferenceEngineOptions { MaxNumSeqs = 8, MaxNumBatchedTokens = 64 });
        var prefilling = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        engine.StepCompleted += s =>
        {
            if (s.PrefillTokens > 0)
            {
                prefilling.TrySetResult();
            }
        };
        var longFirstToken = FirstTokenAsync(Request(document, 2));
        await prefilling.Task.WaitAsync(TimeSpan.FromMinutes(1), Ct);
        var shortFirstTokens = Enumerable.Range(0, 3).Select(i => FirstTokenAsync(Request(document[(100 * i)..((100 * i) + 20)], 4))).ToArray();

        var shorts = await Task.WhenAll(shortFirstTokens);
        var longest = await longFirstToken;
        foreach (var first in shorts)
        {
            Assert.True(first < longest, $"a short chat's first token came {Stopwatch.GetElapsedTime(longest, first).TotalMilliseconds:0} ms after the long prefill's");
        }

        async Task<long> FirstTokenAsync(GenerationRequest request)
        {
            long first = 0;
            await foreach (var e in engine.GenerateAsync(request, Ct))
            {
                if (e is TokenEvent && first == 0)
                {
                    first = Stopwatch.GetTimestamp();
                }
            }
            return first;
        }
    }

    [Fact]
    public async Task A_cancelled_request_frees_its_slot_for_the_waiting_one_and_leaves_no_kv()
    {
        await using var engine = new InferenceEngine(_fixture.Model, cache: null, new InferenceEngineOptions { MaxNumSeqs = 1 });
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var endless = Request(TinyLlama.Reference.Prompt("long").InputIds, 100_000);
        var tokens = 0;
        long kvWhileRunning = 0;
        Task<GenerationResult>? waiting = null;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var e in engine.GenerateAsync(endless, cancel.Token))
            {
                if (e is TokenEvent && ++tokens == 3)
                {
                    // A second request queues behind the first (one slot), then the first client goes away.
                    waiting = engine.GenerateToEndAsync(Request(TinyLlama.Reference.Prompt("short").InputIds, 5), Ct);
                    kvWhileRunning = engine.KvBytes;
                    Assert.Equal(1, engine.WaitingRequests);
                    await cancel.CancelAsync();
                }
            }
        });
        Assert.NotNull(waiting);
        var second = await waiting.WaitAsync(TimeSpan.FromMinutes(1), Ct);
        Assert.Equal(5, second.Tokens.Count);
        await engine.WhenIdleAsync(Ct);
        Assert.True(kvWhileRunning > 0, "the running request held no KV");
        Assert.Equal(0, engine.KvBytes);
        Assert.Equal(0, engine.QueueDepth);
        Assert.Equal(0, engine.RunningRequests);
    }

    [Fact]
    public async Task A_full_queue_refuses_new_requests_before_queueing_them()
    {
        await using var engine = new InferenceEngine(_fixture.Model, cache: null, new InferenceEngineOptions { MaxNumSeqs = 1, MaxWaitingRequests = 1 });
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var endless = Request(TinyLlama.Reference.Prompt("short").InputIds, 100_000);
        var running = engine.GenerateToEndAsync(endless, cancel.Token);
        var queued = engine.GenerateToEndAsync(endless, cancel.Token);
        var error = await Assert.ThrowsAsync<EngineOverloadedException>(() => engine.GenerateToEndAsync(endless, Ct));
        Assert.Contains("max_queue_len 1", error.Message, StringComparison.Ordinal);
        Assert.Equal(2, engine.QueueDepth);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => running);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => queued);
        await engine.WhenIdleAsync(Ct);
        var after = await engine.GenerateToEndAsync(Request(TinyLlama.Reference.Prompt("short").InputIds, 3), Ct);
        Assert.Equal(3, after.Tokens.Count);
        Assert.Equal(0, engine.KvBytes);
    }
}
