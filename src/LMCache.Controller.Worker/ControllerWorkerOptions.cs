using LMCache.Core.Configuration;

namespace LMCache.Controller.Worker;

/// <summary>Settings of a <see cref="ControllerWorker"/>.</summary>
public sealed class ControllerWorkerOptions
{
    /// <summary>The engine instance this worker belongs to. Defaults to <c>lmcache_default_instance</c> (LMCache <c>lmcache_instance_id</c>).</summary>
    public string InstanceId { get; set; } = "lmcache_default_instance";

    /// <summary>The controller's pull endpoint, <c>host:port</c> or <c>tcp://host:port</c>. Required (LMCache <c>controller_pull_url</c>).</summary>
    public string PullUrl { get; set; } = string.Empty;

    /// <summary>The address the worker's reply socket binds to: <c>*</c> for all interfaces, or an IP. Defaults to <c>*</c> (the original binds <c>*:port</c>).</summary>
    public string BindHost { get; set; } = "*";

    /// <summary>The worker's reply port; 0 picks a free one. Defaults to 0 (LMCache <c>lmcache_worker_ports[worker_id]</c> when set).</summary>
    public int Port { get; set; }

    /// <summary>The IP the controller uses to reach this worker. Defaults to null: 127.0.0.1 when the controller is on loopback, else this machine's first IPv4 address (the original's <c>get_ip()</c>).</summary>
    public string? AdvertisedHost { get; set; }

    /// <summary>This worker's P2P URL for moves (LMCache <c>distributed_url</c>). Defaults to empty (no P2P transport).</summary>
    public string DistributedUrl { get; set; } = string.Empty;

    /// <summary>Delay before the first heartbeat. Defaults to 10 s (LMCache <c>lmcache_worker_heartbeat_delay_time</c>).</summary>
    public TimeSpan HeartbeatDelay { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Heartbeat period; null sends none. Defaults to null (LMCache <c>lmcache_worker_heartbeat_time</c>).</summary>
    public TimeSpan? HeartbeatInterval { get; set; }

    /// <summary>
    /// The controller's shared token: sent in every message to the controller (field <c>auth_token</c>) and required in
    /// every request from it. Defaults to null (none, as the original; LMCache.NET <c>extra_config.controller_auth_token</c>).
    /// </summary>
    public string? AuthToken { get; set; }

    /// <summary>How often engine and tier counters are pushed. Defaults to 2 s (ours).</summary>
    public TimeSpan StatsInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Reads the worker settings from the engine configuration (the reply socket binds to 127.0.0.1 when the controller
    /// is on loopback, else to all interfaces): <c>lmcache_instance_id</c>, <c>controller_pull_url</c>,
    /// <c>lmcache_worker_ports</c> (indexed by <paramref name="workerId"/>), <c>lmcache_worker_heartbeat_delay_time</c>,
    /// <c>lmcache_worker_heartbeat_time</c>, <c>extra_config.controller_auth_token</c>.
    /// </summary>
    /// <exception cref="Core.Diagnostics.LMCacheConfigurationException"><c>controller_pull_url</c> is not set.</exception>
    public static ControllerWorkerOptions FromEngineOptions(LMCacheEngineOptions options, int workerId)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrWhiteSpace(options.ControllerPullUrl))
        {
            throw new Core.Diagnostics.LMCacheConfigurationException(
                "enable_controller = true needs controller_pull_url (host:port of the controller's pull socket).");
        }
        var ports = options.LMCacheWorkerPorts;
        return new ControllerWorkerOptions
        {
            InstanceId = options.LMCacheInstanceId,
            PullUrl = options.ControllerPullUrl,
            BindHost = IsLoopback(options.ControllerPullUrl) ? "127.0.0.1" : "*",
            Port = ports is { Count: > 0 } ? ports[Math.Min(workerId, ports.Count - 1)] : 0,
            HeartbeatDelay = TimeSpan.FromSeconds(options.LMCacheWorkerHeartbeatDelayTime),
            HeartbeatInterval = options.LMCacheWorkerHeartbeatTime is int s ? TimeSpan.FromSeconds(s) : null,
            AuthToken = options.GetExtraString("controller_auth_token") is { Length: > 0 } token ? token : null,
        };
    }

    internal static bool IsLoopback(string url)
    {
        var host = new Uri(ToTcpAddress(url)).Host;
        return host == "localhost" || (System.Net.IPAddress.TryParse(host, out var ip) && System.Net.IPAddress.IsLoopback(ip));
    }

    internal static string ToTcpAddress(string url) => url.Contains("://", StringComparison.Ordinal) ? url : "tcp://" + url;
}
