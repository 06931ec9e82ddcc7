using LMCache.Core.Diagnostics;
using Microsoft.Extensions.Logging;

namespace LMCache.Controller.Worker;

/// <summary>Log lines of the controller worker (event ids 7100–7199).</summary>
internal static partial class WorkerLog
{
    [LoggerMessage(EventId = 7100, Level = LogLevel.Information, Message = "Controller worker {InstanceId}/{WorkerId} listening on {Endpoint}, reporting to {PullUrl}")]
    public static partial void Started(ILogger logger, string instanceId, int workerId, string endpoint, string pullUrl);

    [LoggerMessage(EventId = 7101, Level = LogLevel.Warning, Message = "Controller request {Type} failed: {Error}")]
    public static partial void RequestFailed(ILogger logger, LogText type, LogText error);

    [LoggerMessage(EventId = 7102, Level = LogLevel.Warning, Message = "Controller worker loop error: {Error}")]
    public static partial void LoopError(ILogger logger, LogText error);

    [LoggerMessage(EventId = 7103, Level = LogLevel.Warning, Message = "Refused a {Type} request without the controller's auth token")]
    public static partial void Unauthenticated(ILogger logger, LogText type);
}
