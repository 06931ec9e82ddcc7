using LMCache.Core.Configuration;

namespace LMCache.Connectors.Redis;

/// <summary>Client behaviour of the Redis connectors. Every property states its unit, default and source.</summary>
public sealed class RedisConnectorOptions
{
    /// <summary>
    /// Limit of one Redis command (SE.Redis <c>syncTimeout</c>/<c>asyncTimeout</c>), so a dead or paused server cannot
    /// hang a caller. Defaults to 10 s (<c>blocking_timeout_secs</c>).
    /// </summary>
    public TimeSpan OperationTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Limit of one connection attempt. Defaults to 5 s, or <see cref="OperationTimeout"/> when shorter
    /// (<c>extra_config.redis_connect_timeout_secs</c> overrides).
    /// </summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Shortest wait before a new connection attempt after one failed outright (e.g. no sentinel answered); lost
    /// connections of an established client are re-established by SE.Redis every <see cref="ReconnectInterval"/> too.
    /// Defaults to 1 s (the original waits 10 s; <c>extra_config.redis_reconnect_interval_secs</c>).
    /// </summary>
    public TimeSpan ReconnectInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Whether puts append the 16-byte XxHash3 checksum trailer to the 28-byte metadata. Turn it off only when an
    /// original LMCache that insists on exactly 28 bytes reads the same store. Readers verify a trailer whenever one is
    /// present. Defaults to true (<c>extra_config.redis_checksum</c>).
    /// </summary>
    public bool WriteChecksum { get; set; } = true;

    /// <summary>
    /// Whether reads serve entries whose checksum does not cover their key: the original's 28-byte layout (no checksum
    /// at all: a flipped payload byte would be served) and our earlier payload-only trailer (version 1: verified, but a
    /// pair copied onto another key would be served). Off, such entries are misses (left in place for their writers).
    /// Defaults to true, so a store shared with the original's writers keeps its hits (<c>extra_config.redis_accept_unbound</c>).
    /// </summary>
    public bool AcceptUnbound { get; set; } = true;

    /// <summary>
    /// Payload bytes a read keeps requested ahead of the one being copied (at least one payload is always in flight).
    /// Large enough to keep the connection busy with small chunks, small enough that multi-MiB payloads reuse pooled
    /// buffers. Defaults to 8 MiB (<c>extra_config.redis_read_window_mib</c>).
    /// </summary>
    public long ReadWindowBytes { get; set; } = 8L << 20;

    /// <summary>Idle seconds before the client sends a keep-alive PING. Defaults to 5 s.</summary>
    public int KeepAliveSeconds { get; set; } = 5;

    /// <summary>Reads the options from the engine configuration.</summary>
    public static RedisConnectorOptions FromEngineOptions(LMCacheEngineOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var timeout = TimeSpan.FromSeconds(Math.Max(1, options.BlockingTimeoutSecs));
        var connect = TimeSpan.FromSeconds(options.GetExtraDouble("redis_connect_timeout_secs", Math.Min(5, timeout.TotalSeconds)));
        return new RedisConnectorOptions
        {
            OperationTimeout = timeout,
            ConnectTimeout = connect,
            ReconnectInterval = TimeSpan.FromSeconds(options.GetExtraDouble("redis_reconnect_interval_secs", 1)),
            WriteChecksum = options.GetExtraBool("redis_checksum", true),
            AcceptUnbound = options.GetExtraBool("redis_accept_unbound", true),
            ReadWindowBytes = (long)(options.GetExtraDouble("redis_read_window_mib", 8) * (1 << 20)),
        };
    }

    internal void Validate()
    {
        if (OperationTimeout <= TimeSpan.Zero || ConnectTimeout <= TimeSpan.Zero || ReconnectInterval <= TimeSpan.Zero || KeepAliveSeconds < 1 || ReadWindowBytes < 0)
        {
            throw new Core.Diagnostics.LMCacheConfigurationException(
                "redis connector options: operation and connect timeouts and the reconnect interval must be positive, keep-alive at least 1 s, the read window not negative.");
        }
    }
}
