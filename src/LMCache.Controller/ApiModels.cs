using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace LMCache.Controller;

#pragma warning disable CA1819 // request DTOs carry arrays as the JSON has them

internal sealed class LookupRequest
{
    public int[]? Tokens { get; set; }
}

internal sealed class InstanceLocationRequest
{
    public string? InstanceId { get; set; }

    public string? Location { get; set; }

    public int[]? Tokens { get; set; }

    /// <summary>Ours: false answers 202 with the event id at once (poll <c>/check_finish</c>); default true waits.</summary>
    public bool? Wait { get; set; }
}

internal sealed class CompressRequest
{
    public string? InstanceId { get; set; }

    public string? Method { get; set; }

    public string? Location { get; set; }

    public int[]? Tokens { get; set; }

    public bool? Wait { get; set; }
}

internal sealed class CheckFinishRequest
{
    public string? EventId { get; set; }
}

internal sealed class MoveRequest
{
    public string[]? OldPosition { get; set; }

    public string[]? NewPosition { get; set; }

    public int[]? Tokens { get; set; }

    public bool? Copy { get; set; }

    public bool? ShouldCopy { get; set; }

    public bool? Wait { get; set; }
}

internal sealed class QueryInstanceRequest
{
    public string? EventId { get; set; }

    public string? Ip { get; set; }
}

internal sealed class QueryWorkerInfoRequest
{
    public string? InstanceId { get; set; }

    public int[]? WorkerIds { get; set; }
}

internal sealed class ListChunksRequest
{
    public string? InstanceId { get; set; }

    public string? Location { get; set; }

    public string? Search { get; set; }

    public int? Limit { get; set; }
}

internal sealed class ChunkKeysRequest
{
    public string? InstanceId { get; set; }

    public string? Location { get; set; }

    public string[]? Keys { get; set; }
}

internal sealed record ErrorResponse(string Detail);

internal sealed record LookupResponse(string EventId, Dictionary<string, JsonArray> LayoutInfo);

internal sealed record NumTokensResponse(
    string EventId, long NumTokens, long? NumChunks = null, long? OriginalBytes = null, long? CompressedBytes = null);

internal sealed record EventAcceptedResponse(string EventId, string Status);

internal sealed record CheckFinishResponse(
    string EventId, string Status, string Operation, string InstanceId, double StartedAt, double? FinishedAt,
    long? NumTokens, long? NumChunks, long? OriginalBytes, long? CompressedBytes, string? Error);

internal sealed record NumChunksResponse(string EventId, long NumChunks);

internal sealed record HealthResponse(string EventId, Dictionary<string, int> ErrorCodes, string? Message = null);

internal sealed record QueryInstanceResponse(string EventId, string? Res);

internal sealed record WorkerInfo(
    string InstanceId, int WorkerId, string Ip, int Port, string DistributedUrl, double RegistrationTime,
    double LastHeartbeatTime, string Status, string ModelName, int ChunkSize);

internal sealed record WorkerInfosResponse(string EventId, List<WorkerInfo> WorkerInfos);

internal sealed record TierUsage(
    string Location, long CapacityBytes, long UsedBytes, long Entries, long Hits, long Misses, double HitRate,
    long Puts, long BytesRead, long BytesWritten, long Evictions, long PutsDropped, long Errors);

internal sealed record InstanceSummary(
    string InstanceId, string Status, string ModelName, string Ip, int WorkerCount, int ActiveWorkers,
    double LastHeartbeatTime, long IndexedChunks, long NumLookupRequests, long NumRetrieveRequests,
    long NumStoreRequests, long NumRequestedTokens, long NumHitTokens, long NumStoredTokens, double CacheHitRate,
    List<TierUsage> Tiers);

internal sealed record ControllerSummary(string Version, double Now, long IndexedKeys, long MessagesReceived, int Instances, int Workers);

internal sealed record HistoryPoint(double Time, long StoredTokens, long HitTokens, long RequestedTokens);

internal sealed record InstancesResponse(ControllerSummary Controller, List<InstanceSummary> Instances, List<HistoryPoint> History);

internal sealed record ChunkInfo(
    string Key, string Location, int WorkerId, long Size, long NumTokens, bool Pinned, double AdmittedAt, bool Compressed, double LastAccess);

internal sealed record ChunksResponse(string EventId, string InstanceId, int Total, List<ChunkInfo> Chunks);

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    AllowTrailingCommas = true,
    NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(LookupRequest))]
[JsonSerializable(typeof(InstanceLocationRequest))]
[JsonSerializable(typeof(QueryInstanceRequest))]
[JsonSerializable(typeof(MoveRequest))]
[JsonSerializable(typeof(QueryWorkerInfoRequest))]
[JsonSerializable(typeof(ListChunksRequest))]
[JsonSerializable(typeof(ChunkKeysRequest))]
[JsonSerializable(typeof(CompressRequest))]
[JsonSerializable(typeof(CheckFinishRequest))]
[JsonSerializable(typeof(EventAcceptedResponse))]
[JsonSerializable(typeof(CheckFinishResponse))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(LookupResponse))]
[JsonSerializable(typeof(NumTokensResponse))]
[JsonSerializable(typeof(NumChunksResponse))]
[JsonSerializable(typeof(HealthResponse))]
[JsonSerializable(typeof(QueryInstanceResponse))]
[JsonSerializable(typeof(WorkerInfosResponse))]
[JsonSerializable(typeof(InstancesResponse))]
[JsonSerializable(typeof(ChunksResponse))]
internal sealed partial class ControllerJsonContext : JsonSerializerContext;
