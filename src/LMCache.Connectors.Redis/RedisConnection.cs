using System.Net;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace LMCache.Connectors.Redis;

/// <summary>
/// The connection half of <see cref="RedisConnector"/>: one StackExchange.Redis multiplexer for the URL's topology
/// (standalone, Sentinel-managed master, cluster), connected in the background and again after failures, with failover
/// and outage logging and the translation of refused credentials into <see cref="RedisAuthenticationException"/>. It
/// knows nothing about chunks: the data path and the keyspace tools share it.
/// </summary>
/// <remarks>
/// Creating it never blocks and never fails on an unreachable server; <see cref="GetDatabaseAsync"/> throws (a miss for
/// the <see cref="RemoteBackend"/>) until the connection is up, and a failed attempt is retried no sooner than
/// <see cref="RedisConnectorOptions.ReconnectInterval"/> later. For Sentinel, the sentinels' multiplexer is kept and
/// follows master changes.
/// </remarks>
internal sealed class RedisConnection : IAsyncDisposable
{
    private readonly RedisUrl _url;
    private readonly RedisConnectorOptions _options;
    private readonly ILogger _logger;
    private readonly System.Buffers.MemoryPool<byte>? _responseBufferPool;
    private readonly Lock _gate = new();
    private Task<ConnectionMultiplexer>? _connecting;
    private ConnectionMultiplexer? _multiplexer;
    private ConnectionMultiplexer? _sentinel;
    private long _nextAttemptTicks;
    private int _connectionDown;
    private int _authenticationReported;
    private bool _disposed;

    private readonly RedisMetrics _metrics;

    /// <summary>Starts connecting to <paramref name="url"/> in the background.</summary>
    /// <param name="url">The parsed URL.</param>
    /// <param name="options">Timeouts and the reconnection interval.</param>
    /// <param name="logger">Logger.</param>
    /// <param name="responseBufferPool">Where the data connection's response buffers come from (chunk memory for payload reads), or null for the client's own.</param>
    /// <param name="metrics">The connector's metrics (connection failures are counted here).</param>
    public RedisConnection(RedisUrl url, RedisConnectorOptions options, ILogger logger, System.Buffers.MemoryPool<byte>? responseBufferPool, RedisMetrics metrics)
    {
        _metrics = metrics;
        _url = url;
        _options = options;
        _logger = logger;
        _responseBufferPool = responseBufferPool;
        _ = GetConnectingTaskAsync();
    }

    /// <summary>The URL with any password redacted.</summary>
    public string Description => _url.Redacted;

    /// <summary>True once connected and while at least one server is reachable.</summary>
    public bool IsConnected => Volatile.Read(ref _multiplexer) is { IsConnected: true };

    /// <summary>The endpoint of the current master (standalone and Sentinel), or null when not connected.</summary>
    public EndPoint? CurrentMaster =>
        Volatile.Read(ref _multiplexer)?.GetServers().FirstOrDefault(s => s.IsConnected && !s.IsReplica)?.EndPoint;

    /// <summary>
    /// Waits until the server answers a PING (for tools and tests). Wrong credentials throw
    /// <see cref="RedisAuthenticationException"/> at once; when <paramref name="cancellationToken"/> fires first, a
    /// <see cref="TimeoutException"/> carries the last connection error.
    /// </summary>
    public async Task WaitUntilConnectedAsync(CancellationToken cancellationToken)
    {
        Exception? last = null;
        while (true)
        {
            try
            {
                var db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
                await db.PingAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (RedisConnectionException ex) when (IsAuthenticationFailure(ex))
            {
                throw AuthenticationError(ex);
            }
            catch (Exception ex) when (ex is RedisException or TimeoutException && !cancellationToken.IsCancellationRequested)
            {
                last = ex;
            }
            catch (OperationCanceledException) when (last is not null)
            {
                throw new TimeoutException($"not connected ({Brief(last.Message)})", last);
            }
            try
            {
                await Task.Delay(100, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (last is not null)
            {
                throw new TimeoutException($"not connected ({Brief(last.Message)})", last);
            }
        }
    }

    /// <summary>Opens a <see cref="RedisInfoProbe"/> on the current masters, with this connection's credentials and TLS settings.</summary>
    public async Task<RedisInfoProbe> OpenInfoProbeAsync(CancellationToken cancellationToken)
    {
        var db = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var config = CreateConfiguration(DistinctMasters(db.Multiplexer).Select(server => server.EndPoint), _url.User, _url.Password, _url.UseTls);
        config.AllowAdmin = true;
        config.AbortOnConnectFail = true;
        config.ClientName = "lmcache-info";
        config.CommandMap = CommandMap.Create(["SUBSCRIBE"], available: false);   // no subscription connection
        return new RedisInfoProbe(await ConnectionMultiplexer.ConnectAsync(config).WaitAsync(cancellationToken).ConfigureAwait(false));
    }

    /// <summary>The database of the URL, connecting first when needed.</summary>
    /// <exception cref="RedisConnectionException">Not connected (yet, or any more).</exception>
    public async ValueTask<IDatabase> GetDatabaseAsync(CancellationToken cancellationToken)
    {
        var multiplexer = Volatile.Read(ref _multiplexer)
            ?? await GetConnectingTaskAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
        return multiplexer.GetDatabase(_url.Database);
    }

    internal static List<IServer> DistinctMasters(IConnectionMultiplexer multiplexer)
    {
        // One server may be known under two endpoints (a host name and the address the cluster reports): scan it once.
        var result = new List<IServer>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var server in multiplexer.GetServers().Where(s => s.IsConnected && !s.IsReplica))
        {
            var identity = server.ClusterConfiguration?.Nodes.FirstOrDefault(n => n.IsMyself)?.NodeId ?? server.EndPoint switch
            {
                DnsEndPoint dns => $"{dns.Host}:{dns.Port}",
                IPEndPoint ip => $"{ip.Address}:{ip.Port}",
                var other => other.ToString() ?? "",
            };
            if (seen.Add(identity))
            {
                result.Add(server);
            }
        }
        return result;
    }

    /// <summary>The first line of an SE.Redis message without its diagnostic tail (", mc: ..., IOCP: ...").</summary>
    private static string Brief(string message)
    {
        var line = message.Split('\n')[0];
        var tail = line.IndexOf(", mc: ", StringComparison.Ordinal);
        return tail > 0 ? line[..tail] : line;
    }

    /// <summary>True when <paramref name="exception"/> (or one it wraps) is the server refusing our credentials.</summary>
    internal static bool IsAuthenticationFailure(Exception exception)
    {
        for (Exception? e = exception; e is not null; e = e.InnerException)
        {
            if (e is RedisConnectionException { FailureType: ConnectionFailureType.AuthenticationFailure }
                || e.Message.Contains("WRONGPASS", StringComparison.Ordinal) || e.Message.Contains("NOAUTH", StringComparison.Ordinal))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>The exception a refused credential becomes (logged once per outage).</summary>
    public RedisAuthenticationException AuthenticationError(RedisConnectionException exception)
    {
        var detail = exception.InnerException?.Message ?? exception.Message;
        if (Interlocked.Exchange(ref _authenticationReported, 1) == 0)
        {
            RedisLog.AuthenticationFailed(_logger, Description, _url.EndPoints[0].ToString() ?? "?", FirstLine(exception.Message));
        }
        return new RedisAuthenticationException(
            $"authentication failed; check the user and password in the URL ({FirstLine(exception.Message)})", exception);

        static string FirstLine(string text)
        {
            var semicolon = text.IndexOf("; SimpleError: ", StringComparison.Ordinal);
            if (semicolon >= 0)
            {
                text = text[(semicolon + 15)..];
            }
            var end = text.IndexOfAny(['.', '\n']);
            return end > 0 ? text[..end] : text;
        }
    }

    /// <summary>Closes the multiplexers (after a connection attempt in flight finished).</summary>
    public async ValueTask DisposeAsync()
    {
        Task<ConnectionMultiplexer>? connecting;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            connecting = _connecting;
        }
        if (connecting is not null)
        {
            try
            {
                await connecting.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // A failed connection leaves nothing to close.
            }
        }
        var multiplexer = Interlocked.Exchange(ref _multiplexer, null);
        var sentinel = Interlocked.Exchange(ref _sentinel, null);
        if (multiplexer is not null)
        {
            await multiplexer.CloseAsync(allowCommandsToComplete: false).ConfigureAwait(false);
            await multiplexer.DisposeAsync().ConfigureAwait(false);
        }
        if (sentinel is not null)
        {
            await sentinel.CloseAsync(allowCommandsToComplete: false).ConfigureAwait(false);
            await sentinel.DisposeAsync().ConfigureAwait(false);
        }
    }

    private Task<ConnectionMultiplexer> GetConnectingTaskAsync()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_connecting is { IsFaulted: true } or { IsCanceled: true } && Environment.TickCount64 >= Volatile.Read(ref _nextAttemptTicks))
            {
                _connecting = null;
            }
            return _connecting ??= Task.Run(ConnectAsync);
        }
    }

    private async Task<ConnectionMultiplexer> ConnectAsync()
    {
        ConnectionMultiplexer? sentinel = null;
        ConnectionMultiplexer? multiplexer = null;
        try
        {
            var config = CreateConfiguration(_url.EndPoints, _url.User, _url.Password, _url.UseTls);
            if (_responseBufferPool is not null)
            {
                config.ResponseBufferPool = _responseBufferPool;   // payload GETs land in chunk memory (see ChunkLeasePool)
            }
            if (_url.Topology == RedisTopology.Sentinel)
            {
                var sentinelConfig = CreateConfiguration(_url.EndPoints, null, _url.SentinelPassword, useTls: false);
                sentinelConfig.ServiceName = _url.ServiceName;
                sentinelConfig.DefaultDatabase = null;
                sentinel = await ConnectionMultiplexer.SentinelConnectAsync(sentinelConfig).ConfigureAwait(false);
                config.EndPoints.Clear();
                config.ServiceName = _url.ServiceName;
                // Finding the master is synchronous in SE.Redis (it polls the sentinels); keep it off the caller's thread.
                multiplexer = sentinel.GetSentinelMasterConnection(config);
                var service = _url.ServiceName!;
                multiplexer.ConfigurationChanged += (_, e) => RedisLog.MasterChanged(_logger, Description, service, e.EndPoint?.ToString() ?? "?");
            }
            else
            {
                multiplexer = await ConnectionMultiplexer.ConnectAsync(config).ConfigureAwait(false);
            }
            multiplexer.ConnectionFailed += OnConnectionFailed;
            multiplexer.ConnectionRestored += OnConnectionRestored;
            lock (_gate)
            {
                if (_disposed)
                {
                    throw new ObjectDisposedException(nameof(RedisConnection));
                }
                _sentinel = sentinel;
                Volatile.Write(ref _multiplexer, multiplexer);
            }
            RedisLog.Connected(_logger, Description, string.Join(", ", multiplexer.GetServers().Select(s => $"{s.EndPoint} {(s.IsReplica ? "replica" : "master")}{(s.IsConnected ? "" : " (down)")}")));
            return multiplexer;
        }
        catch (Exception ex)
        {
            Volatile.Write(ref _nextAttemptTicks, Environment.TickCount64 + (long)_options.ReconnectInterval.TotalMilliseconds);
            RedisLog.ConnectFailed(_logger, Description, ex.Message, (long)_options.ReconnectInterval.TotalMilliseconds);
            if (multiplexer is not null)
            {
                await multiplexer.DisposeAsync().ConfigureAwait(false);
            }
            if (sentinel is not null)
            {
                await sentinel.DisposeAsync().ConfigureAwait(false);
            }
            throw;
        }
    }

    private ConfigurationOptions CreateConfiguration(IEnumerable<EndPoint> endPoints, string? user, string? password, bool useTls)
    {
        var timeoutMs = (int)Math.Clamp(_options.OperationTimeout.TotalMilliseconds, 1, int.MaxValue);
        var config = new ConfigurationOptions
        {
            AbortOnConnectFail = false,
            ConnectTimeout = (int)Math.Clamp(_options.ConnectTimeout.TotalMilliseconds, 1, int.MaxValue),
            SyncTimeout = timeoutMs,
            AsyncTimeout = timeoutMs,
            ConnectRetry = 1,
            KeepAlive = _options.KeepAliveSeconds,
            BacklogPolicy = BacklogPolicy.FailFast,
            ReconnectRetryPolicy = new LinearRetry((int)Math.Clamp(_options.ReconnectInterval.TotalMilliseconds, 50, int.MaxValue)),
            ClientName = "lmcache",
            User = user,
            Password = password,
            Ssl = useTls,
            DefaultDatabase = _url.Database,
        };
        foreach (var endPoint in endPoints)
        {
            config.EndPoints.Add(endPoint);
        }
        if (useTls)
        {
            if (_url.FirstHost is { } host)
            {
                config.SslHost = host.Host;
            }
            if (!_url.TlsVerifyServer)
            {
                config.CertificateValidation += static (_, _, _, _) => true;
            }
            else if (_url.TlsCaCertificates is { } ca)
            {
                config.TrustIssuer(ca);
            }
            if (_url.TlsClientCertificate is { } client)
            {
                config.SetUserPemCertificate(client.Certificate, client.Key);
            }
        }
        return config;
    }

    private void OnConnectionFailed(object? sender, ConnectionFailedEventArgs e)
    {
        _metrics.ConnectionFailures.Add(1, new KeyValuePair<string, object?>("type", e.FailureType.ToString()));
        if (Interlocked.Exchange(ref _connectionDown, 1) == 1)
        {
            return; // One message per outage; SE.Redis reports every reconnect attempt.
        }
        var endPoint = e.EndPoint?.ToString() ?? "?";
        if (e.FailureType == ConnectionFailureType.AuthenticationFailure)
        {
            RedisLog.AuthenticationFailed(_logger, Description, endPoint, e.Exception?.Message ?? "rejected");
        }
        else
        {
            RedisLog.ConnectionLost(_logger, Description, endPoint, e.FailureType.ToString());
        }
    }

    private void OnConnectionRestored(object? sender, ConnectionFailedEventArgs e)
    {
        Volatile.Write(ref _authenticationReported, 0);
        if (Interlocked.Exchange(ref _connectionDown, 0) == 1)
        {
            RedisLog.ConnectionRestored(_logger, Description, e.EndPoint?.ToString() ?? "?");
        }
    }
}
