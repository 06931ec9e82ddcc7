namespace LMCache.Controller.Protocol;

/// <summary>The <c>type</c> tags of controller messages: the original's class names, plus ours where it has none.</summary>
public static class MessageTypes
{
    // Worker → controller pushes (the original's names and fields; ours add fields, see docs/controller.md).
    /// <summary>Worker → controller: a worker started (identity, <c>registration_info</c>).</summary>
    public const string Register = "RegisterMsg";
    /// <summary>Worker → controller: a worker stopped.</summary>
    public const string DeRegister = "DeRegisterMsg";
    /// <summary>Worker → controller: still alive (identity, <c>registration_info</c>).</summary>
    public const string Heartbeat = "HeartbeatMsg";
    /// <summary>Worker → controller: a tier admitted a chunk (<c>key</c>, <c>location</c>).</summary>
    public const string KvAdmit = "KVAdmitMsg";
    /// <summary>Worker → controller: a tier dropped a chunk (<c>key</c>, <c>location</c>).</summary>
    public const string KvEvict = "KVEvictMsg";

    /// <summary>Ours: engine and tier counters of one worker (the original exports them per process to Prometheus).</summary>
    public const string WorkerStats = "WorkerStatsMsg";

    // Replies of the controller's reply socket (ours: the original's names for these are unconfirmed).
    /// <summary>Controller → worker reply to a register request.</summary>
    public const string RegisterRet = "RegisterRetMsg";
    /// <summary>Controller → worker reply to a heartbeat request.</summary>
    public const string HeartbeatRet = "HeartbeatRetMsg";

    // Controller → worker requests and replies.
    /// <summary>Controller → worker: clear the unpinned chunks of a tier (<c>location</c>).</summary>
    public const string ClearWorker = "ClearWorkerMsg";
    /// <summary>Reply to <see cref="ClearWorker"/> (<c>num_tokens</c>).</summary>
    public const string ClearWorkerRet = "ClearWorkerRetMsg";
    /// <summary>Controller → worker: pin the cached prefix of <c>tokens</c>.</summary>
    public const string PinWorker = "PinWorkerMsg";
    /// <summary>Reply to <see cref="PinWorker"/> (<c>num_tokens</c>).</summary>
    public const string PinWorkerRet = "PinWorkerRetMsg";
    /// <summary>Controller → worker: move or copy chunks between tiers (<c>old_position</c>, <c>new_position</c>).</summary>
    public const string MoveWorker = "MoveWorkerMsg";
    /// <summary>Reply to <see cref="MoveWorker"/> (<c>num_tokens</c>).</summary>
    public const string MoveWorkerRet = "MoveWorkerRetMsg";
    /// <summary>Controller → worker: re-encode a tier's chunks with cachegen in place.</summary>
    public const string CompressWorker = "CompressWorkerMsg";
    /// <summary>Reply to <see cref="CompressWorker"/> (<c>num_tokens</c>, <c>num_chunks</c>, byte counts).</summary>
    public const string CompressWorkerRet = "CompressWorkerRetMsg";
    /// <summary>Controller → worker: decode compressed chunks back in place.</summary>
    public const string DecompressWorker = "DecompressWorkerMsg";
    /// <summary>Reply to <see cref="DecompressWorker"/>.</summary>
    public const string DecompressWorkerRet = "DecompressWorkerRetMsg";
    /// <summary>Controller → worker: health check.</summary>
    public const string HealthWorker = "HealthWorkerMsg";
    /// <summary>Reply to <see cref="HealthWorker"/> (<c>error_code</c>: 0 healthy).</summary>
    public const string HealthWorkerRet = "HealthWorkerRetMsg";

    /// <summary>Ours: list the chunks a worker's tiers hold (key, size, pinned, first/last seen).</summary>
    public const string ListChunksWorker = "ListChunksWorkerMsg";
    /// <summary>Reply to <see cref="ListChunksWorker"/> (<c>chunks</c>).</summary>
    public const string ListChunksWorkerRet = "ListChunksWorkerRetMsg";

    /// <summary>Ours: remove chunks by key.</summary>
    public const string RemoveChunksWorker = "RemoveChunksWorkerMsg";
    /// <summary>Reply to <see cref="RemoveChunksWorker"/> (<c>num_chunks</c>).</summary>
    public const string RemoveChunksWorkerRet = "RemoveChunksWorkerRetMsg";

    /// <summary>Ours: pin or unpin chunks by key.</summary>
    public const string PinChunksWorker = "PinChunksWorkerMsg";
    /// <summary>Reply to <see cref="PinChunksWorker"/> (<c>num_chunks</c>).</summary>
    public const string PinChunksWorkerRet = "PinChunksWorkerRetMsg";

    /// <summary>Ours: the destination half of a move to another instance (load keys from the shared remote tier).</summary>
    public const string LoadChunksWorker = "LoadChunksWorkerMsg";
    /// <summary>Reply to <see cref="LoadChunksWorker"/> (<c>num_tokens</c>, <c>num_chunks</c>, <c>keys</c>).</summary>
    public const string LoadChunksWorkerRet = "LoadChunksWorkerRetMsg";

    /// <summary>Any failure answered instead of a reply (<c>error</c>: the message).</summary>
    public const string Error = "ErrorMsg";
}
