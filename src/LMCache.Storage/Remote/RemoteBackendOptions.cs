using LMCache.Core.Configuration;

namespace LMCache.Storage.Remote;

/// <summary>Behaviour of the <see cref="RemoteBackend"/> around its connector. Every property states its default and source.</summary>
public sealed class RemoteBackendOptions
{
    /// <summary>Limit of every remote read, lookup and put. Defaults to 10 s (<c>blocking_timeout_secs</c>).</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Puts waiting to be sent; when full, a new put is dropped and counted, so inference never waits on the remote.
    /// Defaults to 64 chunks (<c>extra_config.remote_put_queue_size</c>).
    /// </summary>
    public int PutQueueCapacity { get; set; } = 64;

    /// <summary>Puts sent concurrently. Defaults to 2 (<c>extra_config.remote_put_concurrency</c>).</summary>
    public int PutConcurrency { get; set; } = 2;

    /// <summary>Consecutive failures that open the circuit. Defaults to 3 (<c>extra_config.remote_failure_threshold</c>).</summary>
    public int FailureThreshold { get; set; } = 3;

    /// <summary>First wait before probing an open circuit; doubles up to <see cref="MaxCooldown"/>. Defaults to 1 s.</summary>
    public TimeSpan InitialCooldown { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Longest wait between probes of an open circuit. Defaults to 30 s (the original's <c>ping_interval</c>).</summary>
    public TimeSpan MaxCooldown { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Limit of one health probe. Defaults to 5 s (<c>extra_config.ping_timeout</c>).</summary>
    public TimeSpan PingTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Reads the options from the engine configuration.</summary>
    public static RemoteBackendOptions FromEngineOptions(LMCacheEngineOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new RemoteBackendOptions
        {
            Timeout = TimeSpan.FromSeconds(options.BlockingTimeoutSecs),
            PutQueueCapacity = (int)options.GetExtraDouble("remote_put_queue_size", 64),
            PutConcurrency = (int)options.GetExtraDouble("remote_put_concurrency", 2),
            FailureThreshold = (int)options.GetExtraDouble("remote_failure_threshold", 3),
            MaxCooldown = TimeSpan.FromSeconds(options.GetExtraDouble("ping_interval", 30)),
            PingTimeout = TimeSpan.FromSeconds(options.GetExtraDouble("ping_timeout", 5)),
        };
    }

    internal void Validate()
    {
        if (Timeout <= TimeSpan.Zero || PutQueueCapacity < 1 || PutConcurrency < 1 || FailureThreshold < 1
            || InitialCooldown <= TimeSpan.Zero || MaxCooldown < InitialCooldown || PingTimeout <= TimeSpan.Zero)
        {
            throw new Core.Diagnostics.LMCacheConfigurationException(
                "remote backend options: timeouts and cooldowns must be positive (max cooldown ≥ initial), queue size, concurrency and failure threshold at least 1.");
        }
    }
}
