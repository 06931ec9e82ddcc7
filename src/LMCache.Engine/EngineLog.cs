using Microsoft.Extensions.Logging;

namespace LMCache.Engine;

/// <summary>Source-generated log messages of the engine (event ids 3000–3999). Wording mirrors the original's lines operators grep for.</summary>
internal static partial class EngineLog
{
    [LoggerMessage(EventId = 3001, Level = LogLevel.Debug, Message = "Total tokens {Total}, LMCache hit tokens: {Hit}")]
    public static partial void Lookup(ILogger logger, int total, int hit);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Information, Message = "Retrieved {Loaded} out of {Required} required tokens (from {Total} total tokens); chunks from cpu {Cpu}, disk {Disk}, remote {Remote}; {ElapsedMs:0.0} ms")]
    public static partial void Retrieved(ILogger logger, int loaded, int required, int total, int cpu, int disk, int remote, double elapsedMs);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Information, Message = "Stored {Stored} out of total {Total} tokens. size: {Gib:0.0000} GiB, cost {ElapsedMs:0.0} ms")]
    public static partial void Stored(ILogger logger, int stored, int total, double gib, double elapsedMs);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Warning, Message = "Local CPU memory is under pressure, so only {Stored} of {Wanted} chunks were stored")]
    public static partial void StorePartial(ILogger logger, int stored, int wanted);

    [LoggerMessage(EventId = 3005, Level = LogLevel.Warning, Message = "Releasing the tiers of an engine that failed to start failed")]
    public static partial void AbandonedTiersDisposeFailed(ILogger logger, Exception exception);
}
