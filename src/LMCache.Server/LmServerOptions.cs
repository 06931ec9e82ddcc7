using System.Security.Cryptography.X509Certificates;

namespace LMCache.Server;

/// <summary>Settings of an <see cref="LmServer"/>. Validated by <see cref="LmServer.StartAsync"/>.</summary>
public sealed class LmServerOptions
{
    /// <summary>One GiB in bytes.</summary>
    public const long GiB = 1L << 30;

    /// <summary>
    /// Host name or address to bind; only that address is bound (a name resolves to its first IPv4 address, like the
    /// original's <c>AF_INET</c> socket). Defaults to <c>localhost</c>.
    /// </summary>
    public string Host { get; set; } = "localhost";

    /// <summary>TCP port; 0 picks a free one (see the endpoint returned by <see cref="LmServer.StartAsync"/>). Defaults to 65432 (the seed's).</summary>
    public int Port { get; set; } = 65432;

    /// <summary>
    /// Bytes of payload the server keeps (<c>--max-size</c>, GiB on the command line). Stored values live in one
    /// native pool of this size, so resident memory is bounded by construction; when it is full the least recently
    /// used entries are evicted. Defaults to 4 GiB (the original has no limit and grows until it is killed).
    /// </summary>
    public long CapacityBytes { get; set; } = 4 * GiB;

    /// <summary>
    /// Largest PUT payload accepted, in bytes (<c>--max-payload</c>). A larger <c>length</c> closes the connection before
    /// anything is allocated. Values above <see cref="CapacityBytes"/> are lowered to it. Defaults to 1 GiB.
    /// </summary>
    public long MaxPayloadBytes { get; set; } = GiB;

    /// <summary>
    /// Folder of the optional disk spill (<c>--disk-path</c>): entries evicted from memory are written there (the
    /// foundation's disk tier: atomic checksummed files, index rebuilt on restart) and read back on a GET. Entries whose
    /// header does not describe their payload (unknown format/shape) are not spilled. Defaults to null (off).
    /// </summary>
    public string? SpillFolder { get; set; }

    /// <summary>Size limit of the spill folder in bytes (<c>--disk-size</c>, GiB on the command line). Defaults to 0 (required with <see cref="SpillFolder"/>).</summary>
    public long SpillCapacityBytes { get; set; }

    /// <summary>
    /// Connections served at once (<c>--max-connections</c>). At the limit a new connection takes the slot of a
    /// connection that has not completed a request yet (of the client holding the most slots, oldest first: idle sockets
    /// cannot keep a working client out); when
    /// every open connection has completed a request the new one is closed on accept and logged. Defaults to 1024.
    /// </summary>
    public int MaxConnections { get; set; } = 1024;

    /// <summary>
    /// Connections one client address may hold at once (<c>--max-connections-per-client</c>), so that one host cannot
    /// take every slot. At the limit a new connection from that address takes the slot of its own oldest connection
    /// that has not completed a request yet, or is closed on accept. Values above <see cref="MaxConnections"/> mean
    /// no per-client limit. Defaults to 256 (an engine opens 4 by default; 64 engines on one host fit).
    /// </summary>
    public int MaxConnectionsPerClient { get; set; } = 256;

    /// <summary>
    /// Idle limit (<c>--idle-timeout</c>, seconds on the command line): a request header whose first bytes arrived must
    /// be complete within it (a client trickling a header is closed), and a connection that has not completed a
    /// request within it of opening is closed while the server is busy (at least half of <see cref="MaxConnections"/>
    /// open, or half of <see cref="MaxConnectionsPerClient"/> from its address). A quiet server leaves such
    /// connections alone: the original's engines connect at start-up, may send their first request hours later and
    /// never reconnect. A connection that has completed a request may idle between requests as long as it likes.
    /// <see cref="Timeout.InfiniteTimeSpan"/> turns the limit off. Defaults to 10 s (the original has no limit: idle
    /// sockets hold their thread forever).
    /// </summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Longest time one payload may take to arrive (PUT) or leave (GET, LIST) once its header was read. A client
    /// that stalls longer is disconnected and its partial payload freed. Defaults to 60 s.
    /// </summary>
    public TimeSpan PayloadTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Optional shared token. When set, the first request of every connection must be an <c>AUTH</c> carrying it
    /// (our extension); anything else closes the connection. Engines of the original cannot send it. Defaults to null (off).
    /// </summary>
    public string? AuthToken { get; set; }

    /// <summary>
    /// Optional server certificate (with private key). When set, every connection is TLS (our extension; engines of the
    /// original speak plain TCP only). Defaults to null (plain TCP, as the original).
    /// </summary>
    public X509Certificate2? TlsCertificate { get; set; }

    /// <summary>Longest time a TLS handshake or the AUTH request may take. Defaults to 10 s.</summary>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Port of the Prometheus text endpoint (<c>GET /metrics</c>, also <c>/health</c>) bound on <see cref="Host"/>;
    /// 0 picks a free one. Defaults to null (no HTTP endpoint).
    /// </summary>
    public int? MetricsPort { get; set; }

    /// <summary>
    /// Kernel socket send/receive buffer size for client connections, in bytes; 0 keeps the OS default (autotuned).
    /// Defaults to 0.
    /// </summary>
    public int SocketBufferBytes { get; set; }

    internal void Validate()
    {
        List<string> problems = [];
        if (string.IsNullOrWhiteSpace(Host))
        {
            problems.Add("host must not be empty");
        }
        if (Port is < 0 or > 65535)
        {
            problems.Add($"port {Port} is outside 0..65535");
        }
        if (CapacityBytes < 1 << 20)
        {
            problems.Add($"max size {CapacityBytes} bytes is below the minimum of 1 MiB");
        }
        if (MaxPayloadBytes < 1)
        {
            problems.Add($"max payload {MaxPayloadBytes} bytes must be positive");
        }
        if (MaxConnections < 1)
        {
            problems.Add($"max connections {MaxConnections} must be at least 1");
        }
        if (MaxConnectionsPerClient < 1)
        {
            problems.Add($"max connections per client {MaxConnectionsPerClient} must be at least 1");
        }
        if (IdleTimeout <= TimeSpan.Zero && IdleTimeout != Timeout.InfiniteTimeSpan)
        {
            problems.Add($"idle timeout {IdleTimeout} must be positive (or infinite to turn it off)");
        }
        if (PayloadTimeout <= TimeSpan.Zero || HandshakeTimeout <= TimeSpan.Zero)
        {
            problems.Add("timeouts must be positive");
        }
        if (AuthToken is { Length: 0 })
        {
            problems.Add("the auth token must not be empty (leave it unset to disable authentication)");
        }
        if (AuthToken is not null && System.Text.Encoding.UTF8.GetByteCount(AuthToken) > Protocol.LmWire.MaxTokenBytes)
        {
            problems.Add($"the auth token is longer than {Protocol.LmWire.MaxTokenBytes} bytes");
        }
        if (TlsCertificate is { HasPrivateKey: false })
        {
            problems.Add("the TLS certificate has no private key");
        }
        if (MetricsPort is < 0 or > 65535)
        {
            problems.Add($"metrics port {MetricsPort} is outside 0..65535");
        }
        if (SpillFolder is not null && SpillCapacityBytes < 1 << 20)
        {
            problems.Add($"disk size {SpillCapacityBytes} bytes is below 1 MiB; give --disk-size with --disk-path");
        }
        if (SpillFolder is null && SpillCapacityBytes > 0)
        {
            problems.Add("a disk size was given without a disk path");
        }
        if (SocketBufferBytes < 0)
        {
            problems.Add("socket buffer size must not be negative");
        }
        if (problems.Count > 0)
        {
            throw new Core.Diagnostics.LMCacheConfigurationException(problems);
        }
    }
}
