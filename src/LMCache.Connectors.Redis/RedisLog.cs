using LMCache.Core.Diagnostics;
using Microsoft.Extensions.Logging;

namespace LMCache.Connectors.Redis;

/// <summary>Source-generated log messages of the Redis connectors (event ids 3100–3199).</summary>
internal static partial class RedisLog
{
    [LoggerMessage(EventId = 3101, Level = LogLevel.Information, Message = "Redis {Remote}: connected ({Servers})")]
    public static partial void Connected(ILogger logger, string remote, string servers);

    [LoggerMessage(EventId = 3102, Level = LogLevel.Warning, Message = "Redis {Remote}: could not connect ({Reason}); operations miss, retrying every {RetryMs} ms")]
    public static partial void ConnectFailed(ILogger logger, string remote, LogText reason, long retryMs);

    [LoggerMessage(EventId = 3103, Level = LogLevel.Error, Message = "Redis {Remote}: authentication failed at {EndPoint}: check the user and password in the URL ({Reason}); every operation misses until fixed")]
    public static partial void AuthenticationFailed(ILogger logger, string remote, string endPoint, LogText reason);

    [LoggerMessage(EventId = 3104, Level = LogLevel.Warning, Message = "Redis {Remote}: connection to {EndPoint} lost ({FailureType}); operations miss until it is back")]
    public static partial void ConnectionLost(ILogger logger, string remote, string endPoint, string failureType);

    [LoggerMessage(EventId = 3105, Level = LogLevel.Information, Message = "Redis {Remote}: connection to {EndPoint} restored")]
    public static partial void ConnectionRestored(ILogger logger, string remote, string endPoint);

    [LoggerMessage(EventId = 3106, Level = LogLevel.Warning, Message = "Redis {Remote}: entry {Key} is invalid ({Reason}); treated as a miss and removed")]
    public static partial void InvalidEntry(ILogger logger, string remote, LogText key, LogText reason);

    [LoggerMessage(EventId = 3107, Level = LogLevel.Information, Message = "Redis {Remote}: the master of '{Service}' is now {EndPoint}")]
    public static partial void MasterChanged(ILogger logger, string remote, string service, string endPoint);
}
