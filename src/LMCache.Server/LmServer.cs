using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using LMCache.Core.Diagnostics;
using LMCache.Storage.LocalDisk;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Server;

/// <summary>
/// The <c>lm://</c> cache server: a drop-in, wire-compatible replacement for LMCache's <c>lmcache_server</c>
/// (186-byte requests, 36-byte replies; PUT, GET, EXIST, HEALTH, and LIST which the original never answers), with a
/// byte capacity and LRU eviction, many concurrent connections over async sockets, optional shared-token
/// authentication and TLS, and counters exposed through the <c>LMCache.Server</c> meter and an optional Prometheus
/// endpoint.
/// </summary>
/// <remarks>
/// Usage: construct, <see cref="StartAsync"/> (returns the bound endpoint, so tests can bind port 0), then
/// <see cref="StopAsync"/> or <see cref="DisposeAsync"/>. Stopping closes every connection and frees the pool.
/// </remarks>
public sealed class LmServer : IAsyncDisposable
{
    private readonly ConcurrentDictionary<long, Task> _connections = new();
    private readonly Lock _admission = new();
    private readonly Dictionary<long, LmServerConnection> _open = [];        // connections holding a slot, under _admission
    private readonly Dictionary<IPAddress, int> _perClient = [];             // slots per client address, under _admission
    private readonly CancellationTokenSource _shutdown = new();
    private readonly Meter _meter;
    private readonly LMCacheMeterFactory? _ownedMeterFactory;
    private readonly PrometheusExporter _exporter;
    private Socket? _listener;
    private Task? _acceptLoop;
    private Task? _idleSweep;
    private WebApplication? _metricsApp;
    private long _nextConnectionId;
    private long _activeConnections;
    private long _totalConnections;
    private long _connectionErrors;
    private long _putsRejected;
    private long _bytesReceived;
    private long _bytesSent;
    private long _spillHits;
    private int _state;   // 0 = new, 1 = started, 2 = stopped

    /// <summary>Creates a server; nothing is bound until <see cref="StartAsync"/>.</summary>
    /// <param name="options">Settings; validated on start. The server keeps the instance: do not change it afterwards.</param>
    /// <param name="loggerFactory">Logging; null for none.</param>
    /// <param name="meterFactory">Where the <c>LMCache.Server</c> meter comes from; null for one this server owns.</param>
    public LmServer(LmServerOptions options, ILoggerFactory? loggerFactory = null, IMeterFactory? meterFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Options = options;
        LoggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        Logger = LoggerFactory.CreateLogger<LmServer>();
        MaxPayloadBytes = Math.Min(Math.Min(options.MaxPayloadBytes, options.CapacityBytes), int.MaxValue);
        AuthTokenBytes = options.AuthToken is null ? null : Encoding.UTF8.GetBytes(options.AuthToken);
        Store = new LmEntryStore(options.CapacityBytes);
        if (options.SpillFolder is not null)
        {
            try
            {
                Store.Spill = new LocalDiskBackend(options.SpillFolder, options.SpillCapacityBytes, Store,
                    logger: LoggerFactory.CreateLogger<LocalDiskBackend>());
            }
            catch
            {
                Store.Dispose();
                throw;
            }
        }
        _ownedMeterFactory = meterFactory is null ? new LMCacheMeterFactory() : null;
        meterFactory ??= _ownedMeterFactory!;
        _meter = meterFactory.Create(LMCacheMetrics.ServerMeter);
        CreateInstruments();
        _exporter = new PrometheusExporter(meterFactory);
    }

    /// <summary>The settings in use.</summary>
    public LmServerOptions Options { get; }

    /// <summary>The bound <c>lm://</c> endpoint; null before <see cref="StartAsync"/>.</summary>
    public IPEndPoint? Endpoint { get; private set; }

    /// <summary>The bound metrics endpoint; null when <see cref="LmServerOptions.MetricsPort"/> is unset or before start.</summary>
    public IPEndPoint? MetricsEndpoint { get; private set; }

    internal ILoggerFactory LoggerFactory { get; }

    internal ILogger Logger { get; }

    internal LmEntryStore Store { get; }

    internal long MaxPayloadBytes { get; }

    internal byte[]? AuthTokenBytes { get; }

    /// <summary>Binds the listener (and the metrics endpoint) and starts accepting; returns the bound endpoint.</summary>
    /// <exception cref="SocketException">The address cannot be bound (in use, not local, ...).</exception>
    public async Task<IPEndPoint> StartAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            throw new InvalidOperationException("The server was already started.");
        }
        var address = await ResolveAsync(Options.Host, cancellationToken).ConfigureAwait(false);
        var listener = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(new IPEndPoint(address, Options.Port));
            listener.Listen(512);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        _listener = listener;
        Endpoint = (IPEndPoint)listener.LocalEndPoint!;
        if (Options.MetricsPort is { } metricsPort)
        {
            await StartMetricsAsync(address, metricsPort, cancellationToken).ConfigureAwait(false);
        }
        ServerLog.Listening(Logger, Endpoint, Store.Capacity, MaxPayloadBytes, Options.TlsCertificate is not null, AuthTokenBytes is not null);
        _acceptLoop = Task.Run(AcceptLoopAsync, CancellationToken.None);
        if (Options.IdleTimeout != Timeout.InfiniteTimeSpan)
        {
            _idleSweep = Task.Run(IdleSweepAsync, CancellationToken.None);
        }
        return Endpoint;
    }

    /// <summary>A snapshot of the counters.</summary>
    public LmServerStatistics GetStatistics() => new(
        Store.Count,
        Store.Bytes,
        Store.Capacity,
        Store.PoolUsed,
        Store.Hits,
        Store.Misses,
        Store.Puts,
        Interlocked.Read(ref _putsRejected),
        Store.Evictions,
        Store.EvictedBytes,
        Interlocked.Read(ref _activeConnections),
        Interlocked.Read(ref _totalConnections),
        Interlocked.Read(ref _connectionErrors),
        Interlocked.Read(ref _bytesReceived),
        Interlocked.Read(ref _bytesSent),
        Store.Spilled,
        Interlocked.Read(ref _spillHits),
        Store.Spill?.Count ?? 0);

    /// <summary>The counters in the Prometheus text exposition format (what <c>GET /metrics</c> returns).</summary>
    public string FormatPrometheus() => _exporter.Write();

    /// <summary>Stops accepting, closes every connection, waits for them to end and frees the pool.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _state, 2) != 1)
        {
            return;
        }
        await _shutdown.CancelAsync().ConfigureAwait(false);
        _listener?.Dispose();
        if (_acceptLoop is not null)
        {
            await _acceptLoop.ConfigureAwait(false);
        }
        if (_idleSweep is not null)
        {
            await _idleSweep.ConfigureAwait(false);
        }
        await Task.WhenAll(_connections.Values).WaitAsync(cancellationToken).ConfigureAwait(false);
        if (_metricsApp is not null)
        {
            await _metricsApp.StopAsync(cancellationToken).ConfigureAwait(false);
            await _metricsApp.DisposeAsync().ConfigureAwait(false);
        }
        await DisposeStoreAsync().ConfigureAwait(false);
        ServerLog.Stopped(Logger);
    }

    /// <summary>Same as <see cref="StopAsync"/>, then releases the meter.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.CompareExchange(ref _state, 2, 0) == 0)
        {
            await DisposeStoreAsync().ConfigureAwait(false);
        }
        else
        {
            await StopAsync().ConfigureAwait(false);
        }
        _exporter.Dispose();
        _meter.Dispose();
        _ownedMeterFactory?.Dispose();
        _shutdown.Dispose();
    }

    internal void CountConnectionError() => Interlocked.Increment(ref _connectionErrors);

    internal void CountPutRejected() => Interlocked.Increment(ref _putsRejected);

    internal void CountReceived(long bytes) => Interlocked.Add(ref _bytesReceived, bytes);

    internal void CountSent(long bytes) => Interlocked.Add(ref _bytesSent, bytes);

    internal void CountSpillHit() => Interlocked.Increment(ref _spillHits);

    private async Task DisposeStoreAsync()
    {
        if (Store.Spill is { } spill)
        {
            // Queued spill writes hold references into the pool: let them finish before the pool goes.
            await spill.DisposeAsync().ConfigureAwait(false);
        }
        Store.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        var token = _shutdown.Token;
        while (!token.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener!.AcceptAsync(token).ConfigureAwait(false);
            }
            catch (Exception) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionAborted or SocketError.ConnectionReset)
            {
                continue;
            }
            catch (Exception ex)
            {
                ServerLog.AcceptFailed(Logger, ex);
                await Task.Delay(100, CancellationToken.None).ConfigureAwait(false);
                continue;
            }
            var id = Interlocked.Increment(ref _nextConnectionId);
            var connection = new LmServerConnection(this, socket, id);
            if (!TryAdmit(connection))
            {
                socket.Dispose();
                continue;
            }
            Interlocked.Increment(ref _totalConnections);
            socket.NoDelay = true;
            if (Options.SocketBufferBytes > 0)
            {
                socket.SendBufferSize = Options.SocketBufferBytes;
                socket.ReceiveBufferSize = Options.SocketBufferBytes;
            }
            _connections[id] = RunConnectionAsync(connection, id, token);
        }
    }

    private async Task RunConnectionAsync(LmServerConnection connection, long id, CancellationToken token)
    {
        await Task.Yield();
        try
        {
            await connection.RunAsync(token).ConfigureAwait(false);
        }
        finally
        {
            ReleaseSlot(connection);
            _connections.TryRemove(id, out _);
        }
    }

    /// <summary>
    /// Gives <paramref name="connection"/> a slot, within <see cref="LmServerOptions.MaxConnections"/> and
    /// <see cref="LmServerOptions.MaxConnectionsPerClient"/>. At a limit a connection that has not completed a request
    /// yet is closed to make room (of the same client address when the per-client limit is the one reached, else of
    /// the client holding the most slots), so idle sockets cannot lock working clients out; when there is none the
    /// newcomer is refused.
    /// </summary>
    private bool TryAdmit(LmServerConnection connection)
    {
        LmServerConnection? victim = null;
        lock (_admission)
        {
            var address = connection.ClientAddress;
            _perClient.TryGetValue(address, out var fromClient);
            var active = _open.Count;
            if (fromClient >= Options.MaxConnectionsPerClient)
            {
                victim = OldestPending(address);
                if (victim is null)
                {
                    ServerLog.ClientConnectionLimit(Logger, connection.Remote, fromClient, Options.MaxConnectionsPerClient);
                    return false;
                }
            }
            else if (active >= Options.MaxConnections)
            {
                victim = OldestPending(null);
                if (victim is null)
                {
                    ServerLog.ConnectionLimit(Logger, connection.Remote, active, Options.MaxConnections);
                    return false;
                }
            }
            if (victim is not null)
            {
                ReleaseSlotLocked(victim);
            }
            _open[connection.Id] = connection;
            _perClient[address] = _perClient.GetValueOrDefault(address) + 1;
            Interlocked.Increment(ref _activeConnections);
        }
        // Outside the lock: closing a socket can take a moment and the victim's own task does the rest.
        victim?.Shed("closed to make room for a new connection: no complete request yet while the server or its client was at the connection limit");
        return true;
    }

    /// <summary>
    /// Closes connections that have not completed a request within <see cref="LmServerOptions.IdleTimeout"/> of
    /// opening, while the server is busy: at least half of <see cref="LmServerOptions.MaxConnections"/> open, or, for
    /// one client address, at least half of <see cref="LmServerOptions.MaxConnectionsPerClient"/>. Below that an idle
    /// connection is left alone, because the original's engines connect at start-up, may send their first request
    /// hours later, and never reconnect; at a limit a newcomer takes an idle connection's slot at once anyway.
    /// </summary>
    private async Task IdleSweepAsync()
    {
        var token = _shutdown.Token;
        var idleMs = (long)Options.IdleTimeout.TotalMilliseconds;
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(Math.Clamp(idleMs / 4, 50, 5000)));
        List<LmServerConnection> idle = [];
        try
        {
            while (await timer.WaitForNextTickAsync(token).ConfigureAwait(false))
            {
                var now = Environment.TickCount64;
                lock (_admission)
                {
                    var busy = _open.Count * 2 >= Options.MaxConnections;
                    foreach (var connection in _open.Values)
                    {
                        if (connection.IsAwaitingFirstRequest && now - connection.OpenedAtMs >= idleMs
                            && (busy || _perClient[connection.ClientAddress] * 2 >= Options.MaxConnectionsPerClient))
                        {
                            idle.Add(connection);
                        }
                    }
                    foreach (var connection in idle)
                    {
                        ReleaseSlotLocked(connection);
                    }
                }
                foreach (var connection in idle)
                {
                    connection.Shed($"timed out waiting for the first request: none complete within the idle timeout ({idleMs} ms) while the server is busy");
                }
                idle.Clear();
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // Server stopping.
        }
    }

    /// <summary>
    /// The connection to shed: one without a complete request yet, of <paramref name="address"/> when given, else of
    /// the client holding the most slots (the flooder pays, not a client that happens to be connecting); the oldest
    /// among those. Null when every candidate has completed a request.
    /// </summary>
    private LmServerConnection? OldestPending(IPAddress? address)
    {
        // Linear in open connections, and only run at a limit: cheaper than keeping an ordered index on every accept.
        LmServerConnection? chosen = null;
        var chosenWeight = -1;
        foreach (var candidate in _open.Values)
        {
            if (!candidate.IsAwaitingFirstRequest || (address is not null && !candidate.ClientAddress.Equals(address)))
            {
                continue;
            }
            var weight = address is null ? _perClient[candidate.ClientAddress] : 0;
            if (weight > chosenWeight || (weight == chosenWeight && candidate.Id < chosen!.Id))
            {
                chosen = candidate;
                chosenWeight = weight;
            }
        }
        return chosen;
    }

    private void ReleaseSlot(LmServerConnection connection)
    {
        lock (_admission)
        {
            ReleaseSlotLocked(connection);
        }
    }

    private void ReleaseSlotLocked(LmServerConnection connection)
    {
        if (!_open.Remove(connection.Id))
        {
            return;   // already released (shed to make room, then ended)
        }
        var left = _perClient[connection.ClientAddress] - 1;
        if (left == 0)
        {
            _perClient.Remove(connection.ClientAddress);
        }
        else
        {
            _perClient[connection.ClientAddress] = left;
        }
        Interlocked.Decrement(ref _activeConnections);
    }

    private async Task StartMetricsAsync(IPAddress address, int port, CancellationToken cancellationToken)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(LoggerFactory);
        builder.WebHost.UseKestrel(kestrel => kestrel.Listen(address, port));
        var app = builder.Build();
        app.MapGet("/metrics", () => Results.Text(FormatPrometheus(), PrometheusExporter.ContentType));
        app.MapGet("/health", () => Results.Text("ok\n"));
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        _metricsApp = app;
        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var uri = new Uri(bound);
        MetricsEndpoint = new IPEndPoint(address, uri.Port);
        ServerLog.MetricsListening(Logger, MetricsEndpoint.ToString());
    }

    private void CreateInstruments()
    {
        // One instrument per counter of GetStatistics(); the exporter writes them under LMCacheMetrics.Table's names.
        _meter.CreateObservableGauge("lmcache.server.keys", () => (long)Store.Count, "{entry}", "Entries stored.");
        _meter.CreateObservableGauge("lmcache.server.bytes", () => Store.Bytes, "By", "Payload bytes stored.");
        _meter.CreateObservableGauge("lmcache.server.capacity", () => Store.Capacity, "By", "Pool size (--max-size).");
        _meter.CreateObservableGauge("lmcache.server.pool_used", () => Store.PoolUsed, "By", "Pool bytes reserved, including payloads being received.");
        _meter.CreateObservableCounter("lmcache.server.hits", () => Store.Hits, "{request}", "GETs that found their key.");
        _meter.CreateObservableCounter("lmcache.server.misses", () => Store.Misses, "{request}", "GETs that did not find their key.");
        _meter.CreateObservableCounter("lmcache.server.puts", () => Store.Puts, "{request}", "PUTs stored.");
        _meter.CreateObservableCounter("lmcache.server.puts_rejected", () => Interlocked.Read(ref _putsRejected), "{request}", "PUTs dropped for lack of room.");
        _meter.CreateObservableCounter("lmcache.server.evictions", () => Store.Evictions, "{entry}", "Entries evicted to make room.");
        _meter.CreateObservableCounter("lmcache.server.evicted_bytes", () => Store.EvictedBytes, "By", "Payload bytes evicted.");
        _meter.CreateObservableGauge("lmcache.server.active_connections", () => Interlocked.Read(ref _activeConnections), "{connection}", "Connections open.");
        _meter.CreateObservableCounter("lmcache.server.connections", () => Interlocked.Read(ref _totalConnections), "{connection}", "Connections accepted.");
        _meter.CreateObservableCounter("lmcache.server.connection_errors", () => Interlocked.Read(ref _connectionErrors), "{connection}", "Connections closed on an error.");
        _meter.CreateObservableCounter("lmcache.server.received_bytes", () => Interlocked.Read(ref _bytesReceived), "By", "PUT payload bytes received.");
        _meter.CreateObservableCounter("lmcache.server.sent_bytes", () => Interlocked.Read(ref _bytesSent), "By", "GET and LIST payload bytes sent.");
        _meter.CreateObservableCounter("lmcache.server.spilled", () => Store.Spilled, "{entry}", "Evicted entries written to the disk spill.");
        _meter.CreateObservableCounter("lmcache.server.spill_hits", () => Interlocked.Read(ref _spillHits), "{request}", "GETs served from the disk spill.");
        _meter.CreateObservableGauge("lmcache.server.spill_keys", () => (long)(Store.Spill?.Count ?? 0), "{entry}", "Entries in the disk spill.");
    }

    private static async Task<IPAddress> ResolveAsync(string host, CancellationToken cancellationToken)
    {
        if (IPAddress.TryParse(host, out var parsed))
        {
            return parsed;
        }
        var addresses = await Dns.GetHostAddressesAsync(host, cancellationToken).ConfigureAwait(false);
        return addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork)
            ?? addresses.FirstOrDefault()
            ?? throw new SocketException((int)SocketError.HostNotFound);
    }
}
