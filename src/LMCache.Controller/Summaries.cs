using LMCache.Controller.Protocol;

namespace LMCache.Controller;

/// <summary>Per-instance views built from the registry and the workers' latest counters (summed over an instance's workers).</summary>
internal static class Summaries
{
    public static InstancesResponse Instances(LMCacheController controller)
    {
        var state = controller.State;
        var workers = state.Workers();
        var instances = new List<InstanceSummary>();
        foreach (var group in workers.GroupBy(w => w.InstanceId, StringComparer.Ordinal))
        {
            var list = group.ToList();
            var active = list.Count(state.IsActive);
            var healthy = list.Count(w => state.IsActive(w) && !w.Unresponsive);
            long Sum(string field) => list.Sum(w => w.Stats?.GetInt64OrDefault(field, 0) ?? 0);
            var requested = Sum("num_requested_tokens");
            var hit = Sum("num_hit_tokens");
            instances.Add(new InstanceSummary(
                group.Key, healthy == list.Count ? "active" : healthy > 0 ? "degraded" : active > 0 ? "unresponsive" : "inactive",
                list[0].ModelName, list[0].Ip, list.Count, active, list.Max(w => w.LastHeartbeatTime), state.CountEntries(group.Key),
                Sum("num_lookup_requests"), Sum("num_retrieve_requests"), Sum("num_store_requests"), requested, hit,
                Sum("num_stored_tokens"), requested == 0 ? 0 : (double)hit / requested, Tiers(list)));
        }
        return new InstancesResponse(
            new ControllerSummary(LMCacheController.Version, state.Now, state.IndexedKeys, state.MessagesReceived, instances.Count, workers.Count),
            instances, controller.History());
    }

    public static List<TierUsage> Tiers(IEnumerable<WorkerRecord> workers)
    {
        var byTier = new Dictionary<string, long[]>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var worker in workers)
        {
            foreach (var item in worker.Stats?.GetListOrEmpty("tiers").OfType<Dictionary<string, object?>>() ?? [])
            {
                var tier = new ControlMessage("tier");
                foreach (var (k, v) in item)
                {
                    tier[k] = v;
                }
                var location = tier.GetString("location");
                if (!byTier.TryGetValue(location, out var sums))
                {
                    sums = new long[s_fields.Length];
                    byTier[location] = sums;
                    order.Add(location);
                }
                for (var i = 0; i < s_fields.Length; i++)
                {
                    sums[i] += tier.GetInt64OrDefault(s_fields[i], 0);
                }
            }
        }
        return [.. order.Select(location =>
        {
            var s = byTier[location];
            var lookups = s[4] + s[5];
            return new TierUsage(location, s[0], s[1], s[2], s[4], s[5], lookups == 0 ? 0 : (double)s[4] / lookups, s[3], s[6], s[7], s[8], s[9], s[10]);
        })];
    }

    private static readonly string[] s_fields =
        ["capacity_bytes", "used_bytes", "entries", "puts", "hits", "misses", "bytes_read", "bytes_written", "evictions", "puts_dropped", "errors"];
}
