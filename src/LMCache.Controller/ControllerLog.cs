using LMCache.Core.Diagnostics;
using Microsoft.Extensions.Logging;

namespace LMCache.Controller;

/// <summary>Log lines of the controller (event ids 7000–7099).</summary>
internal static partial class ControllerLog
{
    [LoggerMessage(EventId = 7000, Level = LogLevel.Information, Message = "LMCache controller: HTTP on {Http}, pull socket on {Pull}, reply socket on {Reply}, auth token {Auth}")]
    public static partial void Started(ILogger logger, string http, string pull, string reply, string auth);

    [LoggerMessage(EventId = 7001, Level = LogLevel.Information, Message = "Registered worker {InstanceId}/{WorkerId} at {Ip}:{Port}")]
    public static partial void Registered(ILogger logger, LogText instanceId, int workerId, LogText ip, int port);

    [LoggerMessage(EventId = 7002, Level = LogLevel.Information, Message = "Deregistered worker {InstanceId}/{WorkerId}")]
    public static partial void Deregistered(ILogger logger, LogText instanceId, int workerId);

    [LoggerMessage(EventId = 7003, Level = LogLevel.Warning, Message = "Dropped a bad message from a worker: {Error}")]
    public static partial void BadMessage(ILogger logger, LogText error);

    [LoggerMessage(EventId = 7004, Level = LogLevel.Warning, Message = "Worker {InstanceId}/{WorkerId} did not answer {Type} within {TimeoutMs} ms; marked unresponsive")]
    public static partial void WorkerTimeout(ILogger logger, LogText instanceId, int workerId, string type, double timeoutMs);

    [LoggerMessage(EventId = 7005, Level = LogLevel.Error, Message = "Unhandled error in {Path}")]
    public static partial void Unhandled(ILogger logger, Exception exception, LogText path);

    [LoggerMessage(EventId = 7006, Level = LogLevel.Warning, Message = "Dropped a {Type} message (instance {InstanceId}) with {Which} auth token")]
    public static partial void Unauthenticated(ILogger logger, LogText type, LogText instanceId, string which);

    [LoggerMessage(EventId = 7007, Level = LogLevel.Warning, Message = "Refused {Method} {Path} from {Remote}: no valid auth token")]
    public static partial void Unauthorized(ILogger logger, LogText method, LogText path, string remote);
}
