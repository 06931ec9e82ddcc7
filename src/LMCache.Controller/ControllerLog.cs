using Microsoft.Extensions.Logging;

namespace LMCache.Controller;

/// <summary>Log lines of the controller (event ids 7000–7099).</summary>
internal static partial class ControllerLog
{
    [LoggerMessage(EventId = 7000, Level = LogLevel.Information, Message = "LMCache controller: HTTP on {Http}, pull socket on port {PullPort}, reply socket on port {ReplyPort}")]
    public static partial void Started(ILogger logger, string http, int pullPort, int replyPort);

    [LoggerMessage(EventId = 7001, Level = LogLevel.Information, Message = "Registered worker {InstanceId}/{WorkerId} at {Ip}:{Port}")]
    public static partial void Registered(ILogger logger, string instanceId, int workerId, string ip, int port);

    [LoggerMessage(EventId = 7002, Level = LogLevel.Information, Message = "Deregistered worker {InstanceId}/{WorkerId}")]
    public static partial void Deregistered(ILogger logger, string instanceId, int workerId);

    [LoggerMessage(EventId = 7003, Level = LogLevel.Warning, Message = "Dropped a bad message from a worker: {Error}")]
    public static partial void BadMessage(ILogger logger, string error);

    [LoggerMessage(EventId = 7004, Level = LogLevel.Warning, Message = "Worker {InstanceId}/{WorkerId} did not answer {Type} within {TimeoutMs} ms")]
    public static partial void WorkerTimeout(ILogger logger, string instanceId, int workerId, string type, double timeoutMs);

    [LoggerMessage(EventId = 7005, Level = LogLevel.Error, Message = "Unhandled error in {Path}")]
    public static partial void Unhandled(ILogger logger, Exception exception, string path);
}
