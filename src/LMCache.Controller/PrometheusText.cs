using System.Globalization;
using System.Text;

namespace LMCache.Controller;

/// <summary>
/// <c>/metrics</c> in the Prometheus text exposition format (0.0.4): the original's <c>lmcache:</c> names with labels
/// <c>model_name</c>, <c>worker_id</c> and <c>instance_id</c> for every worker, from its latest report, plus the
/// controller's own gauges.
/// </summary>
internal static class PrometheusText
{
    private static readonly (string Name, string Field, string Type, string Help)[] s_engine =
    [
        ("lmcache:num_lookup_requests", "num_lookup_requests", "counter", "Lookup requests"),
        ("lmcache:num_retrieve_requests", "num_retrieve_requests", "counter", "Retrieve requests"),
        ("lmcache:num_store_requests", "num_store_requests", "counter", "Store requests"),
        ("lmcache:num_requested_tokens", "num_requested_tokens", "counter", "Tokens requested by retrieves"),
        ("lmcache:num_hit_tokens", "num_hit_tokens", "counter", "Tokens retrieved from the cache"),
        ("lmcache:num_stored_tokens", "num_stored_tokens", "counter", "Tokens stored"),
    ];

    public static string Write(LMCacheController controller)
    {
        var state = controller.State;
        var workers = state.Workers();
        var text = new StringBuilder(4096);
        Header(text, "lmcache:controller_registered_instances", "gauge", "Instances with at least one registered worker");
        Sample(text, "lmcache:controller_registered_instances", "", workers.Select(w => w.InstanceId).Distinct().Count());
        Header(text, "lmcache:controller_registered_workers", "gauge", "Registered workers by status");
        Sample(text, "lmcache:controller_registered_workers", "{status=\"active\"}", workers.Count(state.IsActive));
        Sample(text, "lmcache:controller_registered_workers", "{status=\"inactive\"}", workers.Count(w => !state.IsActive(w)));
        Header(text, "lmcache:controller_indexed_keys", "gauge", "Distinct chunk keys in the controller's index");
        Sample(text, "lmcache:controller_indexed_keys", "", state.IndexedKeys);
        Header(text, "lmcache:controller_messages_received", "counter", "Worker messages received");
        Sample(text, "lmcache:controller_messages_received", "", state.MessagesReceived);

        var reporting = workers.Where(w => w.Stats is not null).ToList();
        foreach (var (name, field, type, help) in s_engine)
        {
            Header(text, name, type, help);
            foreach (var worker in reporting)
            {
                Sample(text, name, Labels(worker, null), worker.Stats!.GetInt64OrDefault(field, 0));
            }
        }
        Header(text, "lmcache:cache_hit_rate", "gauge", "Hit tokens / requested tokens since start");
        foreach (var worker in reporting)
        {
            var requested = worker.Stats!.GetInt64OrDefault("num_requested_tokens", 0);
            Sample(text, "lmcache:cache_hit_rate", Labels(worker, null), requested == 0 ? 0 : (double)worker.Stats.GetInt64OrDefault("num_hit_tokens", 0) / requested);
        }
        Header(text, "lmcache:local_cache_usage", "gauge", "Bytes allocated in the CPU pool");
        foreach (var worker in reporting)
        {
            Sample(text, "lmcache:local_cache_usage", Labels(worker, null), TierField(worker, "LocalCPUBackend", "used_bytes"));
        }
        Header(text, "lmcache:local_storage_usage", "gauge", "Bytes used by the local disk tier");
        foreach (var worker in reporting)
        {
            Sample(text, "lmcache:local_storage_usage", Labels(worker, null), TierField(worker, "LocalDiskBackend", "used_bytes"));
        }
        Header(text, "lmcache:remote_cache_usage", "gauge", "Bytes written to the remote tier");
        foreach (var worker in reporting)
        {
            Sample(text, "lmcache:remote_cache_usage", Labels(worker, null), TierField(worker, "RemoteBackend", "bytes_written"));
        }
        foreach (var (field, type) in new[] { ("capacity_bytes", "gauge"), ("used_bytes", "gauge"), ("entries", "gauge"), ("hits", "counter"), ("misses", "counter"), ("evictions", "counter") })
        {
            var name = "lmcache:tier_" + field;
            Header(text, name, type, $"Per-tier {field.Replace('_', ' ')}");
            foreach (var worker in reporting)
            {
                foreach (var tier in Summaries.Tiers([worker]))
                {
                    var value = field switch
                    {
                        "capacity_bytes" => tier.CapacityBytes,
                        "used_bytes" => tier.UsedBytes,
                        "entries" => tier.Entries,
                        "hits" => tier.Hits,
                        "misses" => tier.Misses,
                        _ => tier.Evictions,
                    };
                    Sample(text, name, Labels(worker, tier.Location), value);
                }
            }
        }
        return text.ToString();
    }

    private static long TierField(WorkerRecord worker, string location, string field)
    {
        var tier = Summaries.Tiers([worker]).Find(t => t.Location == location);
        return tier is null ? 0 : field == "used_bytes" ? tier.UsedBytes : tier.BytesWritten;
    }

    private static string Labels(WorkerRecord worker, string? tier) =>
        $"{{model_name=\"{Escape(worker.ModelName)}\",worker_id=\"{worker.WorkerId}\",instance_id=\"{Escape(worker.InstanceId)}\"" +
        (tier is null ? "}" : $",tier=\"{Escape(tier)}\"}}");

    private static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static void Header(StringBuilder text, string name, string type, string help) =>
        text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n').Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');

    private static void Sample(StringBuilder text, string name, string labels, double value) =>
        text.Append(name).Append(labels).Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
}
