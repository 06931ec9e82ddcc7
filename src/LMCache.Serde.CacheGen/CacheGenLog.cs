using Microsoft.Extensions.Logging;

namespace LMCache.Serde.CacheGen;

/// <summary>Source-generated log messages of the cachegen serde (event ids 6000–6099).</summary>
internal static partial class CacheGenLog
{
    [LoggerMessage(EventId = 6001, Level = LogLevel.Warning, Message = "cachegen: stored blob of {Bytes} bytes is invalid ({Reason}); treated as a miss")]
    public static partial void BlobInvalid(ILogger logger, int bytes, string reason);

    [LoggerMessage(EventId = 6002, Level = LogLevel.Warning, Message = "cachegen: blob references shared table {TableId}, which is not available here; treated as a miss")]
    public static partial void TableMissing(ILogger logger, string tableId);

    [LoggerMessage(EventId = 6003, Level = LogLevel.Debug, Message = "cachegen: chunk {Shape} stored losslessly ({Reason})")]
    public static partial void StoredRaw(ILogger logger, string shape, string reason);

    [LoggerMessage(EventId = 6004, Level = LogLevel.Warning, Message = "cachegen: cannot serialize a {Format} chunk of {DType}; the put is skipped")]
    public static partial void Unsupported(ILogger logger, string format, string dtype);

    [LoggerMessage(EventId = 6005, Level = LogLevel.Warning, Message = "cachegen: no memory for a {Bytes}-byte output; the put is skipped")]
    public static partial void NoMemory(ILogger logger, long bytes);

    [LoggerMessage(EventId = 6010, Level = LogLevel.Information, Message = "cachegen: shared table {TableId} published ({Layers} layers, hidden {Hidden}, profiled over {Chunks} chunks, {Bytes} bytes)")]
    public static partial void TablePublished(ILogger logger, string tableId, int layers, int hidden, int chunks, int bytes);

    [LoggerMessage(EventId = 6011, Level = LogLevel.Warning, Message = "cachegen: saving shared table {TableId} failed; readers elsewhere will miss on blobs using it")]
    public static partial void TableSaveFailed(ILogger logger, Exception exception, string tableId);

    [LoggerMessage(EventId = 6012, Level = LogLevel.Warning, Message = "cachegen: loading shared table {TableId} failed")]
    public static partial void TableLoadFailed(ILogger logger, Exception exception, string tableId);

    [LoggerMessage(EventId = 6013, Level = LogLevel.Information, Message = "cachegen: shared table {TableId} is not in the table store")]
    public static partial void TableNotFound(ILogger logger, string tableId);

    [LoggerMessage(EventId = 6014, Level = LogLevel.Warning, Message = "cachegen: stored shared table {TableId} is invalid or does not match its id; ignored")]
    public static partial void TableInvalid(ILogger logger, string tableId);
}
