namespace LMCache.Controller;

/// <summary>Settings of an <see cref="LMCacheController"/> (the original's <c>lmcache_controller</c> flags and config keys).</summary>
public sealed class ControllerOptions
{
    /// <summary>HTTP listen address. Defaults to <c>0.0.0.0</c> (LMCache <c>controller_host</c>).</summary>
    public string Host { get; set; } = "0.0.0.0";

    /// <summary>HTTP port; 0 picks a free one. Defaults to 9000 (LMCache <c>controller_port</c>).</summary>
    public int Port { get; set; } = 9000;

    /// <summary>The address the ZeroMQ sockets bind to. Defaults to <c>*</c> (all interfaces, as the original).</summary>
    public string MonitorHost { get; set; } = "*";

    /// <summary>Port of the pull socket that receives worker pushes; 0 picks a free one. Defaults to 8300 (LMCache <c>controller_monitor_ports.pull</c>).</summary>
    public int PullPort { get; set; } = 8300;

    /// <summary>Port of the reply socket for synchronous worker requests; null binds none, 0 picks a free one. Defaults to 8400 (LMCache <c>controller_monitor_ports.reply</c>).</summary>
    public int? ReplyPort { get; set; } = 8400;

    /// <summary>A worker not heard from for this long is inactive (left out of lookups and control operations). Defaults to 300 s (LMCache <c>lmcache_worker_timeout</c>).</summary>
    public TimeSpan WorkerTimeout { get; set; } = TimeSpan.FromSeconds(300);

    /// <summary>How long a control request waits for a worker's reply. Defaults to 30 s (ours: the original waits without limit).</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(30);
}
