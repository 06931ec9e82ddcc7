using LMCache.Core.Diagnostics;
using Microsoft.Extensions.Logging;

namespace LMCache.Storage.Diagnostics;

/// <summary>Source-generated log messages of the storage layer (event ids 2000–2999).</summary>
internal static partial class StorageLog
{
    [LoggerMessage(EventId = 2001, Level = LogLevel.Warning, Message = "Local CPU memory is under pressure: could not allocate {Bytes} bytes after evicting {Evicted} entries")]
    public static partial void CpuAllocationFailed(ILogger logger, long bytes, int evicted);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Warning, Message = "Chunk {Key} from the {Tier} tier is {Actual}, expected {Expected}; the hit ends before it and it is not promoted")]
    public static partial void ChunkRejected(ILogger logger, LogText key, string tier, string actual, string expected);

    [LoggerMessage(EventId = 2010, Level = LogLevel.Information, Message = "Disk tier at {Folder}: recovered {Entries} entries ({Bytes} bytes) from a previous run; removed {Removed} invalid or partial files")]
    public static partial void DiskRecovered(ILogger logger, string folder, int entries, long bytes, int removed);

    [LoggerMessage(EventId = 2011, Level = LogLevel.Warning, Message = "Disk tier: no room for {Bytes} bytes (capacity {Capacity}); put of {Key} dropped")]
    public static partial void DiskNoRoom(ILogger logger, long bytes, long capacity, LogText key);

    [LoggerMessage(EventId = 2012, Level = LogLevel.Error, Message = "Disk tier: writing {Path} failed; put of {Key} dropped")]
    public static partial void DiskWriteFailed(ILogger logger, Exception exception, string path, LogText key);

    [LoggerMessage(EventId = 2013, Level = LogLevel.Warning, Message = "Disk tier: {Path} is invalid ({Reason}); treated as a miss and removed")]
    public static partial void DiskEntryInvalid(ILogger logger, string path, LogText reason);

    [LoggerMessage(EventId = 2014, Level = LogLevel.Warning, Message = "Disk tier: reading {Path} failed; treated as a miss")]
    public static partial void DiskReadFailed(ILogger logger, Exception exception, string path);

    [LoggerMessage(EventId = 2020, Level = LogLevel.Warning, Message = "Remote {Remote}: {Operation} failed ({Reason}); treated as a miss")]
    public static partial void RemoteOperationFailed(ILogger logger, string remote, string operation, LogText reason);

    [LoggerMessage(EventId = 2021, Level = LogLevel.Warning, Message = "Remote {Remote}: circuit opened after {Failures} consecutive failures; bypassing it for {CooldownMs} ms")]
    public static partial void RemoteCircuitOpened(ILogger logger, string remote, int failures, long cooldownMs);

    [LoggerMessage(EventId = 2022, Level = LogLevel.Information, Message = "Remote {Remote}: healthy again; circuit closed")]
    public static partial void RemoteCircuitClosed(ILogger logger, string remote);

    [LoggerMessage(EventId = 2023, Level = LogLevel.Warning, Message = "Remote {Remote}: put queue full ({Capacity}); put of {Key} dropped")]
    public static partial void RemotePutQueueFull(ILogger logger, string remote, int capacity, LogText key);

    [LoggerMessage(EventId = 2024, Level = LogLevel.Warning, Message = "Remote {Remote}: could not connect ({Reason}); retrying in the background")]
    public static partial void RemoteConnectFailed(ILogger logger, string remote, LogText reason);

    [LoggerMessage(EventId = 2025, Level = LogLevel.Warning, Message = "Remote {Remote}: entry {Key} failed validation ({Reason}); treated as a miss")]
    public static partial void RemoteEntryInvalid(ILogger logger, string remote, LogText key, LogText reason);
}
