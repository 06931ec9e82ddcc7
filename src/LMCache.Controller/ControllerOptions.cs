namespace LMCache.Controller;

/// <summary>Settings of an <see cref="LMCacheController"/> (the original's <c>lmcache_controller</c> flags and config keys).</summary>
public sealed class ControllerOptions
{
    /// <summary>
    /// HTTP listen address. Defaults to <c>127.0.0.1</c> (ours: the original's <c>controller_host</c> defaults to
    /// <c>0.0.0.0</c>); any other address needs <see cref="AuthToken"/>.
    /// </summary>
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>HTTP port; 0 picks a free one. Defaults to 9000 (LMCache <c>controller_port</c>).</summary>
    public int Port { get; set; } = 9000;

    /// <summary>
    /// The address the ZeroMQ sockets bind to. Defaults to null: the same address as <see cref="Host"/> (so loopback
    /// unless told otherwise; the original binds <c>*</c>). <c>*</c> or <c>0.0.0.0</c> binds every interface.
    /// </summary>
    public string? MonitorHost { get; set; }

    /// <summary>
    /// The shared secret of mutating HTTP calls (<c>Authorization: Bearer</c>) and of every worker message (its
    /// <c>auth_token</c> field). Defaults to null: nothing is authenticated, which is allowed only while every socket
    /// binds a loopback address (like Redis' protected mode); <see cref="LMCacheController.StartAsync"/> refuses to bind
    /// elsewhere without one.
    /// </summary>
    public string? AuthToken { get; set; }

    /// <summary>The largest HTTP request body accepted; larger ones get 413. Defaults to 8 MiB (ours).</summary>
    public long MaxRequestBodyBytes { get; set; } = 8 * 1024 * 1024;

    /// <summary>Port of the pull socket that receives worker pushes; 0 picks a free one. Defaults to 8300 (LMCache <c>controller_monitor_ports.pull</c>).</summary>
    public int PullPort { get; set; } = 8300;

    /// <summary>Port of the reply socket for synchronous worker requests; null binds none, 0 picks a free one. Defaults to 8400 (LMCache <c>controller_monitor_ports.reply</c>).</summary>
    public int? ReplyPort { get; set; } = 8400;

    /// <summary>A worker not heard from for this long is inactive (left out of lookups and control operations). Defaults to 300 s (LMCache <c>lmcache_worker_timeout</c>).</summary>
    public TimeSpan WorkerTimeout { get; set; } = TimeSpan.FromSeconds(300);

    /// <summary>
    /// The deadline of every control request to a worker, queueing behind an earlier request to the same worker
    /// included; past it the HTTP call answers 504 and the worker is marked unresponsive until it answers again.
    /// A long operation must at least be delivered within it. Defaults to 30 s (ours: the original waits without limit).
    /// </summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a long operation (clear, move, compress, decompress) may take on a worker before it is reported failed. Defaults to 10 min (ours).</summary>
    public TimeSpan OperationTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How many finished operations <c>/check_finish</c> remembers. Defaults to 1000 (ours).</summary>
    public int EventHistory { get; set; } = 1000;

    /// <summary>How often the cluster's token counters are sampled for the dashboard's charts. Defaults to 2 s (ours).</summary>
    public TimeSpan HistoryInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How many samples the charts' history keeps. Defaults to 90 (3 minutes at 2 s).</summary>
    public int HistoryLength { get; set; } = 90;
}
