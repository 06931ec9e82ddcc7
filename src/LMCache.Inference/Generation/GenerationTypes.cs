using LMCache.Core.Diagnostics;
using LMCache.Storage;

namespace LMCache.Inference.Generation;

/// <summary>One generation request on token ids.</summary>
public sealed record GenerationRequest
{
    /// <summary>The prompt, already tokenized (chat template applied when it is a chat).</summary>
    public required int[] PromptTokens { get; init; }

    /// <summary>Token choice. Defaults to greedy.</summary>
    public SamplingParameters Sampling { get; init; } = SamplingParameters.Greedy;

    /// <summary>Most tokens to generate. Defaults to 16 (OpenAI's completions default).</summary>
    public int MaxTokens { get; init; } = 16;

    /// <summary>Stop sequences (text); generation ends before the first one and it is not returned.</summary>
    public IReadOnlyList<string>? Stop { get; init; }

    /// <summary>Keeps generating past EOS tokens (benchmarks). Defaults to false.</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>Salt mixed into the chunk hashes: requests with different salts never share cached KV.</summary>
    public string? CacheSalt { get; init; }

    /// <summary>Top alternatives to report per token (0 = none); with <see cref="LogProbs"/>.</summary>
    public int TopLogProbs { get; init; }

    /// <summary>Report the log-probability of each generated token.</summary>
    public bool LogProbs { get; init; }

    /// <summary>Bypass the KV cache for this request (no lookup, retrieve or store). Defaults to false.</summary>
    public bool BypassCache { get; init; }

    /// <summary>Receives a copy of the last prompt position's logits (tests compare them with the reference).</summary>
    internal Action<float[]>? PromptLogitsObserver { get; init; }
}

/// <summary>Something a generation produced, in order: <see cref="TokenEvent"/>s, then one <see cref="CompletedEvent"/>.</summary>
public abstract record GenerationEvent;

/// <summary>A generated token.</summary>
/// <param name="TokenId">The token.</param>
/// <param name="Token">The token's own text (possibly a partial UTF-8 character shown as U+FFFD).</param>
/// <param name="TextDelta">Text released to the client with this token (may be empty while a stop sequence or a multi-byte character is pending).</param>
/// <param name="LogProb">Log-probability of the token, when requested.</param>
/// <param name="TopLogProbs">Most likely alternatives with their log-probabilities, when requested.</param>
public sealed record TokenEvent(int TokenId, string Token, string TextDelta, float? LogProb, IReadOnlyList<(int TokenId, float LogProb)>? TopLogProbs) : GenerationEvent;

/// <summary>The end of a generation.</summary>
/// <param name="FinishReason"><c>stop</c> (EOS or a stop sequence) or <c>length</c> (max tokens or context full).</param>
/// <param name="TrailingText">Text released at the end (held back while it could have started a stop sequence).</param>
/// <param name="Stats">Timings and cache use.</param>
public sealed record CompletedEvent(string FinishReason, string TrailingText, GenerationStats Stats) : GenerationEvent;

/// <summary>What a generation cost and how much the cache saved.</summary>
/// <param name="PromptTokens">Prompt length.</param>
/// <param name="CompletionTokens">Tokens generated.</param>
/// <param name="CachedTokens">Prompt tokens whose KV came from LMCache (not recomputed).</param>
/// <param name="Tiers">Chunks loaded per tier.</param>
/// <param name="QueueSeconds">Time waiting for the engine.</param>
/// <param name="TimeToFirstTokenSeconds">From the start of processing (after the queue) to the first token.</param>
/// <param name="RetrieveSeconds">Lookup + retrieve time.</param>
/// <param name="PrefillSeconds">Time to compute the uncached prompt tokens.</param>
/// <param name="TotalSeconds">Processing time, excluding the queue.</param>
public sealed record GenerationStats(
    int PromptTokens, int CompletionTokens, int CachedTokens, TierHits Tiers, double QueueSeconds,
    double TimeToFirstTokenSeconds, double RetrieveSeconds, double PrefillSeconds, double TotalSeconds);

/// <summary>The collected result of a non-streaming generation.</summary>
/// <param name="Text">The generated text (stop sequence excluded).</param>
/// <param name="Tokens">The token events.</param>
/// <param name="Completed">The final event.</param>
public sealed record GenerationResult(string Text, IReadOnlyList<TokenEvent> Tokens, CompletedEvent Completed)
{
    /// <summary>The generated token ids.</summary>
    public int[] TokenIds => [.. Tokens.Select(t => t.TokenId)];
}

/// <summary>A request the engine refuses (too long for the context, empty, invalid ids).</summary>
public sealed class InvalidGenerationRequestException : LMCacheException
{
    /// <summary>Creates the exception.</summary>
    public InvalidGenerationRequestException(string message) : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public InvalidGenerationRequestException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public InvalidGenerationRequestException(string message, Exception innerException) : base(message, innerException)
    {
    }
}

/// <summary>
/// The engine's waiting queue is full (<see cref="InferenceEngineOptions.MaxWaitingRequests"/>): the request was not
/// queued. Servers answer it with HTTP 503; the client may retry later.
/// </summary>
public sealed class EngineOverloadedException : LMCacheException
{
    /// <summary>Creates the exception.</summary>
    public EngineOverloadedException(string message) : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public EngineOverloadedException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public EngineOverloadedException(string message, Exception innerException) : base(message, innerException)
    {
    }
}
