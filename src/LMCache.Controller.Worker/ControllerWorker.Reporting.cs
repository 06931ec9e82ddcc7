using System.Diagnostics;
using LMCache.Controller.Protocol;
using LMCache.Core.Keys;
using LMCache.Storage;

namespace LMCache.Controller.Worker;

/// <summary>What the worker pushes on its own: registration, heartbeats, admissions and evictions per tier, counters.</summary>
public sealed partial class ControllerWorker
{
    /// <summary>Pushes the admissions and evictions the tiers raised since the last call (or a full resync after an overflow).</summary>
    private void ReportEvents()
    {
        if (_events.Overflowed)
        {
            Resync();
            return;
        }
        while (_events.TryDequeue(out var e))
        {
            var keys = ReportedIn(e.Tier);
            var text = e.Key.ToString();
            if (e.Admitted)
            {
                if (keys.TryAdd(text, UnixNow()))
                {
                    Enqueue(KvMessage(MessageTypes.KvAdmit, text, e.Tier));
                }
            }
            else if (keys.Remove(text))
            {
                if (!_engine.Storage.Backends.OfType<IListableBackend>().Any(t => t.Contains(e.Key)))
                {
                    _compressedTokens.TryRemove(e.Key, out _);   // gone from every tier: forget its token count
                }
                Enqueue(KvMessage(MessageTypes.KvEvict, text, e.Tier));
            }
        }
    }

    /// <summary>Compares each tier's snapshot with what was reported (at start, and after the event queue overflowed).</summary>
    private void Resync()
    {
        _events.Reset();   // events raised from here on are applied on top of this snapshot, in order
        var now = UnixNow();
        foreach (var tier in _engine.Storage.Backends.OfType<IListableBackend>())
        {
            var previous = ReportedIn(tier.Name);
            var current = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in tier.Snapshot())
            {
                var text = entry.Key.ToString();
                current.Add(text);
                if (previous.TryAdd(text, now))
                {
                    Enqueue(KvMessage(MessageTypes.KvAdmit, text, tier.Name));
                }
            }
            foreach (var gone in previous.Keys.Where(k => !current.Contains(k)).ToList())
            {
                previous.Remove(gone);
                Enqueue(KvMessage(MessageTypes.KvEvict, gone, tier.Name));
            }
        }
    }

    private Dictionary<string, double> ReportedIn(string tier)
    {
        if (!_reported.TryGetValue(tier, out var keys))
        {
            keys = new Dictionary<string, double>(StringComparer.Ordinal);
            _reported[tier] = keys;
        }
        return keys;
    }

    private ControlMessage KvMessage(string type, string key, string location) =>
        new ControlMessage(type).With("instance_id", InstanceId).With("worker_id", WorkerId).With("key", key).With("location", location);

    private ControlMessage Identity(string type) =>
        new ControlMessage(type)
            .With("instance_id", InstanceId)
            .With("worker_id", WorkerId)
            .With("ip", Host)
            .With("port", Port)
            .With("distributed_url", _options.DistributedUrl);

    /// <summary>Ours: what the controller needs to hash tokens exactly as this engine does, and the tiers it has.</summary>
    private Dictionary<string, object?> RegistrationInfo()
    {
        var scope = _engine.Scope;
        return new Dictionary<string, object?>
        {
            ["model_name"] = scope.ModelName,
            ["key_format"] = scope.Format,
            ["world_size"] = scope.WorldSize,
            ["kv_dtype"] = scope.DType,
            ["chunk_size"] = _engine.Options.ChunkSize,
            ["save_unfull_chunk"] = _engine.Options.SaveUnfullChunk,
            ["hash_algorithm"] = Sha256CborChunkHasher.AlgorithmName,
            ["hash_seed"] = _engine.Options.HashSeed,
            ["uptime_seconds"] = Stopwatch.GetElapsedTime(_registeredAt).TotalSeconds,
        };
    }

    private ControlMessage Stats()
    {
        var statistics = _engine.Statistics;
        var tiers = new List<object?>();
        var pool = _engine.Storage.Cpu;
        foreach (var tier in _engine.Storage.Backends)
        {
            var s = tier.Statistics;
            // The CPU tier is also the allocator of every chunk: its used bytes are the pool's (objects in flight
            // included), which is what its capacity bounds; other tiers count what they hold.
            var isPool = ReferenceEquals(tier, pool);
            tiers.Add(new Dictionary<string, object?>
            {
                ["location"] = tier.Name,
                ["capacity_bytes"] = isPool ? pool.Capacity : s.CapacityBytes,
                ["used_bytes"] = isPool ? pool.Used : s.UsedBytes,
                ["entries"] = s.Entries,
                ["hits"] = s.Hits,
                ["misses"] = s.Misses,
                ["bytes_read"] = s.BytesRead,
                ["puts"] = s.Puts,
                ["bytes_written"] = s.BytesWritten,
                ["puts_dropped"] = s.PutsDropped,
                ["evictions"] = s.Evictions,
                ["errors"] = s.Errors,
            });
        }
        return Identity(MessageTypes.WorkerStats)
            .With("model_name", _engine.Scope.ModelName)
            .With("num_lookup_requests", statistics.LookupRequests)
            .With("num_retrieve_requests", statistics.RetrieveRequests)
            .With("num_store_requests", statistics.StoreRequests)
            .With("num_requested_tokens", statistics.RequestedTokens)
            .With("num_hit_tokens", statistics.HitTokens)
            .With("num_stored_tokens", statistics.StoredTokens)
            .With("tiers", tiers);
    }

    private static double UnixNow() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;

    private static double UnixTime(DateTimeOffset time) => time.ToUnixTimeMilliseconds() / 1000.0;
}
