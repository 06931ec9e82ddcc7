using System.Net;
using LMCache.Core.Diagnostics;
using Microsoft.Extensions.Logging;

namespace LMCache.Server;

/// <summary>Log messages of the server (event ids 4000–4099).</summary>
internal static partial class ServerLog
{
    [LoggerMessage(EventId = 4000, Level = LogLevel.Information, Message = "lm:// server listening on {Endpoint} (capacity {CapacityBytes} bytes, max payload {MaxPayloadBytes} bytes, tls {Tls}, auth {Auth})")]
    public static partial void Listening(ILogger logger, EndPoint endpoint, long capacityBytes, long maxPayloadBytes, bool tls, bool auth);

    [LoggerMessage(EventId = 4001, Level = LogLevel.Information, Message = "Prometheus metrics on http://{Endpoint}/metrics")]
    public static partial void MetricsListening(ILogger logger, string endpoint);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Information, Message = "lm:// server stopped")]
    public static partial void Stopped(ILogger logger);

    [LoggerMessage(EventId = 4010, Level = LogLevel.Debug, Message = "Connection {ConnectionId} from {Remote} opened")]
    public static partial void ConnectionOpened(ILogger logger, long connectionId, EndPoint? remote);

    [LoggerMessage(EventId = 4011, Level = LogLevel.Debug, Message = "Connection {ConnectionId} from {Remote} closed by the client")]
    public static partial void ConnectionClosed(ILogger logger, long connectionId, EndPoint? remote);

    [LoggerMessage(EventId = 4012, Level = LogLevel.Warning, Message = "Connection {ConnectionId} from {Remote} closed: {Reason}")]
    public static partial void ConnectionError(ILogger logger, long connectionId, EndPoint? remote, LogText reason);

    [LoggerMessage(EventId = 4013, Level = LogLevel.Warning, Message = "Connection from {Remote} refused: {Active} connections already open, each past its first request (max {Max})")]
    public static partial void ConnectionLimit(ILogger logger, EndPoint? remote, int active, int max);

    [LoggerMessage(EventId = 4014, Level = LogLevel.Warning, Message = "Connection from {Remote} refused: that client already holds {Active} connections, each past its first request (max {Max} per client)")]
    public static partial void ClientConnectionLimit(ILogger logger, EndPoint? remote, int active, int max);

    [LoggerMessage(EventId = 4020, Level = LogLevel.Warning, Message = "Connection {ConnectionId}: PUT of {Key} ({Bytes} bytes) dropped: no room even after eviction (payload drained)")]
    public static partial void PutRejected(ILogger logger, long connectionId, LogText key, int bytes);

    [LoggerMessage(EventId = 4030, Level = LogLevel.Error, Message = "Accept loop failed")]
    public static partial void AcceptFailed(ILogger logger, Exception exception);
}
