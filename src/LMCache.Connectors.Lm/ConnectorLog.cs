using LMCache.Core.Diagnostics;
using Microsoft.Extensions.Logging;

namespace LMCache.Connectors.Lm;

/// <summary>Log messages of the lm:// connector (event ids 4100–4199).</summary>
internal static partial class ConnectorLog
{
    [LoggerMessage(EventId = 4100, Level = LogLevel.Warning, Message = "{Server}: connect failed ({Reason}); next attempt in {DelayMs} ms")]
    public static partial void ConnectFailed(ILogger logger, string server, LogText reason, long delayMs);

    [LoggerMessage(EventId = 4101, Level = LogLevel.Information, Message = "{Server}: connected")]
    public static partial void Connected(ILogger logger, string server);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Warning, Message = "{Server}: connection dropped during {Operation} ({Reason})")]
    public static partial void ConnectionDropped(ILogger logger, string server, string operation, LogText reason);

    [LoggerMessage(EventId = 4103, Level = LogLevel.Warning, Message = "{Server}: the server refuses HEALTH ({Reason}) but answers EXIST; probing it with EXIST from now on")]
    public static partial void HealthRefused(ILogger logger, string server, string reason);

    [LoggerMessage(EventId = 4104, Level = LogLevel.Debug, Message = "{Server}: the server read the PUT of {Key} but did not keep it (no room)")]
    public static partial void PutNotKept(ILogger logger, string server, string key);

    [LoggerMessage(EventId = 4110, Level = LogLevel.Warning, Message = "{Server}: entry {Key} is invalid ({Reason}); treated as a miss")]
    public static partial void InvalidEntry(ILogger logger, string server, LogText key, LogText reason);

    [LoggerMessage(EventId = 4111, Level = LogLevel.Warning, Message = "{Server}: no memory for {Bytes} bytes of {Key}; payload drained, treated as a miss")]
    public static partial void NoMemory(ILogger logger, string server, LogText key, int bytes);

    [LoggerMessage(EventId = 4112, Level = LogLevel.Warning, Message = "{Server}: key {Key} is longer than the protocol's 150 bytes; it cannot be stored or found remotely")]
    public static partial void KeyTooLong(ILogger logger, string server, LogText key);
}
