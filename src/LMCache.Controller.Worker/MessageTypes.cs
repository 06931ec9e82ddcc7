namespace LMCache.Controller.Worker;

/// <summary>The <c>type</c> tags of controller messages: the original's class names, plus ours where it has none.</summary>
internal static class MessageTypes
{
    // Worker → controller pushes (the original's names and fields; ours add fields, see docs/controller.md).
    public const string Register = "RegisterMsg";
    public const string DeRegister = "DeRegisterMsg";
    public const string Heartbeat = "HeartbeatMsg";
    public const string KvAdmit = "KVAdmitMsg";
    public const string KvEvict = "KVEvictMsg";

    /// <summary>Ours: engine and tier counters of one worker (the original exports them per process to Prometheus).</summary>
    public const string WorkerStats = "WorkerStatsMsg";

    // Replies of the controller's reply socket (ours: the original's names for these are unconfirmed).
    public const string RegisterRet = "RegisterRetMsg";
    public const string HeartbeatRet = "HeartbeatRetMsg";

    // Controller → worker requests and replies.
    public const string ClearWorker = "ClearWorkerMsg";
    public const string ClearWorkerRet = "ClearWorkerRetMsg";
    public const string PinWorker = "PinWorkerMsg";
    public const string PinWorkerRet = "PinWorkerRetMsg";
    public const string MoveWorker = "MoveWorkerMsg";
    public const string MoveWorkerRet = "MoveWorkerRetMsg";
    public const string CompressWorker = "CompressWorkerMsg";
    public const string CompressWorkerRet = "CompressWorkerRetMsg";
    public const string DecompressWorker = "DecompressWorkerMsg";
    public const string DecompressWorkerRet = "DecompressWorkerRetMsg";
    public const string HealthWorker = "HealthWorkerMsg";
    public const string HealthWorkerRet = "HealthWorkerRetMsg";

    /// <summary>Ours: list the chunks a worker's tiers hold (key, size, pinned, first/last seen).</summary>
    public const string ListChunksWorker = "ListChunksWorkerMsg";
    public const string ListChunksWorkerRet = "ListChunksWorkerRetMsg";

    /// <summary>Ours: remove chunks by key.</summary>
    public const string RemoveChunksWorker = "RemoveChunksWorkerMsg";
    public const string RemoveChunksWorkerRet = "RemoveChunksWorkerRetMsg";

    /// <summary>Ours: pin or unpin chunks by key.</summary>
    public const string PinChunksWorker = "PinChunksWorkerMsg";
    public const string PinChunksWorkerRet = "PinChunksWorkerRetMsg";

    /// <summary>Ours: the destination half of a move to another instance (load keys from the shared remote tier).</summary>
    public const string LoadChunksWorker = "LoadChunksWorkerMsg";
    public const string LoadChunksWorkerRet = "LoadChunksWorkerRetMsg";

    public const string Error = "ErrorMsg";
}
