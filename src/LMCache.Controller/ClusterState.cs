using LMCache.Controller.Protocol;
using LMCache.Core.Keys;

namespace LMCache.Controller;

/// <summary>One registered worker: identity, how it hashes, when it was last heard from, its latest counters.</summary>
internal sealed class WorkerRecord
{
    public required string InstanceId { get; init; }

    public required int WorkerId { get; init; }

    public required string Ip { get; set; }

    public required int Port { get; set; }

    public string DistributedUrl { get; set; } = string.Empty;

    public double RegistrationTime { get; set; }

    public double LastHeartbeatTime { get; set; }

    public double LastMessageTime { get; set; }

    public string ModelName { get; set; } = string.Empty;

    public string KeyFormat { get; set; } = "vllm";

    public int WorldSize { get; set; } = 1;

    public string? KvDType { get; set; }

    public int ChunkSize { get; set; } = 256;

    public bool SaveUnfullChunk { get; set; }

    public string HashSeed { get; set; } = Sha256CborChunkHasher.DefaultSeed;

    public ControlMessage? Stats { get; set; }

    public WorkerClient? Client { get; set; }

    /// <summary>The last control request to this worker got no answer by its deadline (cleared by its next answer or a new address).</summary>
    public bool Unresponsive
    {
        get => Volatile.Read(ref _unresponsive);
        set => Volatile.Write(ref _unresponsive, value);
    }

    private bool _unresponsive;

    public KeyScope Scope => new(KeyFormat, ModelName, WorldSize, WorkerId, KvDType);
}

/// <summary>Where one chunk is: which worker of which instance, in which tier.</summary>
internal readonly record struct IndexEntry(string InstanceId, int WorkerId, string Location);

/// <summary>
/// The registry (instances → workers) and the global chunk index (key string → where it is), fed by worker pushes.
/// Thread-safe through one lock: pushes arrive on the socket thread, queries on HTTP threads.
/// </summary>
internal sealed class ClusterState(TimeProvider time, TimeSpan workerTimeout)
{
    private readonly Lock _lock = new();
    private readonly Dictionary<(string Instance, int Worker), WorkerRecord> _workers = [];
    private readonly Dictionary<string, List<IndexEntry>> _index = new(StringComparer.Ordinal);

    public long MessagesReceived { get; private set; }

    public double Now => time.GetUtcNow().ToUnixTimeMilliseconds() / 1000.0;

    public bool IsActive(WorkerRecord worker) => Now - Math.Max(worker.LastHeartbeatTime, worker.LastMessageTime) <= workerTimeout.TotalSeconds;

    /// <summary><c>active</c>, <c>unresponsive</c> (heard from, but its last control request timed out) or <c>inactive</c>.</summary>
    public string StatusOf(WorkerRecord worker) => !IsActive(worker) ? "inactive" : worker.Unresponsive ? "unresponsive" : "active";

    /// <summary>Applies one worker push; returns the worker that is new (to open a request socket to), if any.</summary>
    public (WorkerRecord? Added, WorkerRecord? Removed) Apply(ControlMessage message)
    {
        var instance = message.GetString("instance_id");
        var workerId = checked((int)message.GetInt64("worker_id"));
        var now = Now;
        lock (_lock)
        {
            MessagesReceived++;
            _workers.TryGetValue((instance, workerId), out var worker);
            if (worker is not null)
            {
                worker.LastMessageTime = now;
            }
            switch (message.Type)
            {
                case MessageTypes.Register:
                case MessageTypes.Heartbeat:
                    {
                        var added = worker is null;
                        worker ??= new WorkerRecord { InstanceId = instance, WorkerId = workerId, Ip = "", Port = 0, RegistrationTime = now };
                        if (message.Type == MessageTypes.Register)
                        {
                            worker.RegistrationTime = now;
                        }
                        var moved = worker.Ip != message.GetString("ip") || worker.Port != (int)message.GetInt64("port");
                        worker.Ip = message.GetString("ip");
                        worker.Port = checked((int)message.GetInt64("port"));
                        worker.DistributedUrl = message.GetStringOrNull("distributed_url") ?? string.Empty;
                        worker.LastHeartbeatTime = now;
                        worker.LastMessageTime = now;
                        if (message["registration_info"] is Dictionary<string, object?> info)
                        {
                            var fields = new ControlMessage("registration_info");
                            foreach (var (k, v) in info)
                            {
                                fields[k] = v;
                            }
                            worker.ModelName = fields.GetStringOrNull("model_name") ?? worker.ModelName;
                            worker.KeyFormat = fields.GetStringOrNull("key_format") ?? worker.KeyFormat;
                            worker.WorldSize = (int)fields.GetInt64OrDefault("world_size", worker.WorldSize);
                            worker.KvDType = fields.GetStringOrNull("kv_dtype");
                            worker.ChunkSize = (int)fields.GetInt64OrDefault("chunk_size", worker.ChunkSize);
                            worker.SaveUnfullChunk = fields.GetBoolOrDefault("save_unfull_chunk", worker.SaveUnfullChunk);
                            worker.HashSeed = fields.GetStringOrNull("hash_seed") ?? worker.HashSeed;
                        }
                        _workers[(instance, workerId)] = worker;
                        return (added || moved ? worker : null, null);
                    }
                case MessageTypes.DeRegister:
                    if (worker is not null)
                    {
                        _workers.Remove((instance, workerId));
                        RemoveEntriesLocked(instance, workerId, null);
                    }
                    return (null, worker);
                case MessageTypes.KvAdmit:
                    {
                        var key = message.GetString("key");
                        var entry = new IndexEntry(instance, workerId, message.GetString("location"));
                        if (!_index.TryGetValue(key, out var entries))
                        {
                            entries = new List<IndexEntry>(1);
                            _index[key] = entries;
                        }
                        if (!entries.Contains(entry))
                        {
                            entries.Add(entry);
                        }
                        return (null, null);
                    }
                case MessageTypes.KvEvict:
                    {
                        var key = message.GetString("key");
                        if (_index.TryGetValue(key, out var entries))
                        {
                            entries.Remove(new IndexEntry(instance, workerId, message.GetString("location")));
                            if (entries.Count == 0)
                            {
                                _index.Remove(key);
                            }
                        }
                        return (null, null);
                    }
                case MessageTypes.WorkerStats:
                    if (worker is not null)
                    {
                        worker.Stats = message;
                    }
                    return (null, null);
                default:
                    throw new FormatException($"Unknown worker message type '{message.Type}'.");
            }
        }
    }

    public List<WorkerRecord> Workers(string? instanceId = null)
    {
        lock (_lock)
        {
            return [.. _workers.Values
                .Where(w => instanceId is null || w.InstanceId == instanceId)
                .OrderBy(w => w.InstanceId, StringComparer.Ordinal).ThenBy(w => w.WorkerId)];
        }
    }

    public int IndexedKeys
    {
        get
        {
            lock (_lock)
            {
                return _index.Count;
            }
        }
    }

    public int CountEntries(string instanceId)
    {
        lock (_lock)
        {
            return _index.Values.Sum(list => list.Count(e => e.InstanceId == instanceId));
        }
    }

    /// <summary>The tier of <paramref name="key"/> in that worker, or null when the index does not have it there.</summary>
    public string? Locate(string key, string instanceId, int workerId)
    {
        lock (_lock)
        {
            if (_index.TryGetValue(key, out var entries))
            {
                foreach (var entry in entries)
                {
                    if (entry.WorkerId == workerId && entry.InstanceId == instanceId)
                    {
                        return entry.Location;
                    }
                }
            }
            return null;
        }
    }

    /// <summary>Forgets what the index holds for an instance (in one tier, or all when <paramref name="location"/> is null).</summary>
    public void RemoveEntries(string instanceId, string? location)
    {
        lock (_lock)
        {
            foreach (var worker in _workers.Values.Where(w => w.InstanceId == instanceId).ToList())
            {
                RemoveEntriesLocked(instanceId, worker.WorkerId, location);
            }
        }
    }

    /// <summary>Forgets specific keys of an instance.</summary>
    public void RemoveKeys(string instanceId, IEnumerable<string> keys, string? location)
    {
        lock (_lock)
        {
            foreach (var key in keys)
            {
                if (_index.TryGetValue(key, out var entries))
                {
                    entries.RemoveAll(e => e.InstanceId == instanceId && (location is null || e.Location == location));
                    if (entries.Count == 0)
                    {
                        _index.Remove(key);
                    }
                }
            }
        }
    }

    private void RemoveEntriesLocked(string instanceId, int workerId, string? location)
    {
        var empty = new List<string>();
        foreach (var (key, entries) in _index)
        {
            entries.RemoveAll(e => e.InstanceId == instanceId && e.WorkerId == workerId && (location is null || e.Location == location));
            if (entries.Count == 0)
            {
                empty.Add(key);
            }
        }
        foreach (var key in empty)
        {
            _index.Remove(key);
        }
    }
}
