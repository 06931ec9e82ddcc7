using System.Buffers;
using System.Diagnostics;
using System.Threading.Channels;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Protocol;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Connectors.Lm;

/// <summary>
/// The <c>lm://host:port</c> connector: speaks the original's protocol (186-byte requests, 36-byte replies) to
/// LMCache's <c>lmcache_server</c> or ours.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>A pool of <see cref="LmConnectorOptions.Connections"/> connections, each carrying one exchange at a time (the
/// protocol has no request ids); gets of a prefix run in parallel across them, lookups pipeline every EXIST of a
/// prefix on one connection (one round trip for 64 chunks, not 64).</item>
/// <item>Every call is bounded by <see cref="LmConnectorOptions.OperationTimeout"/> and the caller's token; a connection
/// that fails or times out in the middle of an exchange is closed (its stream may be out of step) and reopened by
/// its next user. Failed connects back off exponentially (100 ms doubling to 10 s); meanwhile calls fail fast.</item>
/// <item>GET replies are validated: the length must equal what <c>fmt</c>/dtype/shape describe, else the payload is
/// drained and the call is a miss. The payload is read straight into an object from the caller's allocator; when
/// that allocator is full the payload is drained (keeping the stream in step) and the call is a miss.</item>
/// <item>PUT has no reply in the protocol. By default (<see cref="LmConnectorOptions.ConfirmPuts"/>) each PUT is followed by
/// an EXIST of the same key on the same connection, whose answer means the server consumed the PUT: the entry is then
/// visible on every connection, a server that closed the connection over it is an error, not a silent loss, and a
/// server that read the PUT but did not keep it (no room) says so. EXIST exists in every version of the protocol and
/// carries the key the server has just accepted in the PUT, so every server that takes our PUTs answers it.</item>
/// <item>HEALTH (<see cref="PingAsync"/>) carries the last key the server accepted from this connector (before any, the
/// valid dummy <see cref="LmWire.KeylessRequestKey"/>): the original server parses the key of every request and closes
/// the connection on one it cannot parse, an empty one included. A server that still refuses HEALTH while it answers
/// an EXIST of the same key is healthy: the connector logs that once and probes with EXIST from then on.</item>
/// </list>
/// </remarks>
public sealed class LmConnector : IRemoteConnector
{
    private const int ExistBatch = 256;
    private const int DrainBufferBytes = 64 * 1024;

    private readonly LmConnectorOptions _options;
    private readonly ILogger _logger;
    private readonly Channel<LmClientConnection> _idle;
    private readonly LmClientConnection[] _all;
    private readonly Lock _backoffLock = new();
    private long _nextConnectTimestamp;
    private TimeSpan _backoff;
    private int _disposed;

    // The key HEALTH and EXIST probes carry: the last key the server answered a request for (so a server that parses
    // every key accepts the probe as it accepted that key), or a valid dummy before the first. A plain reference write
    // per call; any recent key will do.
    private volatile string _probeKey = LmWire.KeylessRequestKey;

    // Set once a server refused HEALTH (closed the connection or never answered) but answered EXIST of the same key.
    private volatile bool _healthRefused;

    /// <summary>Creates a connector; nothing connects until the first call.</summary>
    /// <param name="options">Server address, pool size, timeouts, token and TLS.</param>
    /// <param name="logger">Logger; null for none.</param>
    public LmConnector(LmConnectorOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _logger = logger ?? NullLogger.Instance;
        _backoff = options.InitialBackoff;
        _all = new LmClientConnection[options.Connections];
        _idle = Channel.CreateUnbounded<LmClientConnection>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });
        for (var i = 0; i < _all.Length; i++)
        {
            _all[i] = new LmClientConnection(options);
            _idle.Writer.TryWrite(_all[i]);
        }
        Description = $"lm://{options.Host}:{options.Port}{(options.UseTls ? " (tls)" : "")}{(options.AuthToken is null ? "" : " (token ***)")}";
    }

    /// <inheritdoc />
    public string Description { get; }

    /// <inheritdoc />
    public RemoteCapabilities Capabilities =>
        RemoteCapabilities.BatchedExists | RemoteCapabilities.BatchedGet | RemoteCapabilities.Ping;

    /// <inheritdoc />
    public async ValueTask<int> ExistsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken)
    {
        if (keys.IsEmpty)
        {
            return 0;
        }
        var strings = new string[keys.Length];
        var usable = keys.Length;
        for (var i = 0; i < keys.Length; i++)
        {
            strings[i] = keys.Span[i].ToString();
            if (!LmRequestHeader.KeyFits(strings[i]))
            {
                ConnectorLog.KeyTooLong(_logger, Description, strings[i]);
                usable = i;
                break;
            }
        }
        if (usable == 0)
        {
            return 0;
        }
        var prefix = await ExecuteAsync("exist", (strings, usable), static async (connection, state, token) =>
        {
            var (keys, count) = state;
            var found = 0;
            for (var start = 0; start < count; start += ExistBatch)
            {
                var batch = Math.Min(ExistBatch, count - start);
                connection.EnsureCapacity(batch);
                for (var i = 0; i < batch; i++)
                {
                    LmRequestHeader.Exist(keys[start + i]).WriteTo(connection.RequestBuffer.AsSpan(i * LmRequestHeader.Size));
                }
                // Every EXIST of the batch goes out in one write; the replies come back in order.
                await connection.Stream.WriteAsync(connection.RequestBuffer.AsMemory(0, batch * LmRequestHeader.Size), token).ConfigureAwait(false);
                await connection.Stream.ReadExactlyAsync(connection.ReplyBuffer.AsMemory(0, batch * LmReplyHeader.Size), token).ConfigureAwait(false);
                var prefixEnded = false;
                for (var i = 0; i < batch; i++)
                {
                    var reply = LmReplyHeader.Read(connection.ReplyBuffer.AsSpan(i * LmReplyHeader.Size));
                    if (reply.Validate(0) is { } error)
                    {
                        throw new LmConnectionException($"invalid EXIST reply: {error}");
                    }
                    if (!prefixEnded && reply.IsSuccess)
                    {
                        found++;
                    }
                    else
                    {
                        prefixEnded = true;
                    }
                }
                if (prefixEnded)
                {
                    break;
                }
            }
            return found;
        }, cancellationToken).ConfigureAwait(false);
        _probeKey = strings[0];
        return prefix;
    }

    /// <inheritdoc />
    public ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, IMemoryAllocator allocator, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        var text = key.ToString();
        if (!LmRequestHeader.KeyFits(text))
        {
            ConnectorLog.KeyTooLong(_logger, Description, text);
            return ValueTask.FromResult<MemoryObject?>(null);
        }
        return ExecuteAsync("get", (this, text, allocator), static (connection, state, token) =>
            state.Item1.GetOnConnectionAsync(connection, state.text, state.allocator, token), cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask<int> GetPrefixAsync(
        ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, IMemoryAllocator allocator, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        if (keys.IsEmpty)
        {
            return 0;
        }
        // Workers take the next index in order and stop past the first miss, so a prefix is fetched over several
        // connections at once without fetching much beyond a miss.
        var results = new MemoryObject?[keys.Length];
        var firstMiss = keys.Length;
        var next = -1;
        var workers = new Task[Math.Min(_options.Connections, keys.Length)];
        for (var w = 0; w < workers.Length; w++)
        {
            workers[w] = Task.Run(async () =>
            {
                while (true)
                {
                    var index = Interlocked.Increment(ref next);
                    if (index >= keys.Length || index > Volatile.Read(ref firstMiss))
                    {
                        return;
                    }
                    var found = await GetAsync(keys.Span[index], allocator, cancellationToken).ConfigureAwait(false);
                    if (found is null)
                    {
                        int seen;
                        while (index < (seen = Volatile.Read(ref firstMiss)) && Interlocked.CompareExchange(ref firstMiss, index, seen) != seen)
                        {
                        }
                        return;
                    }
                    results[index] = found;
                }
            }, CancellationToken.None);
        }
        try
        {
            await Task.WhenAll(workers).ConfigureAwait(false);
        }
        catch
        {
            foreach (var result in results)
            {
                result?.Release();
            }
            throw;
        }
        var output = destination.Span;
        var count = 0;
        for (var i = 0; i < results.Length; i++)
        {
            if (results[i] is { } item)
            {
                if (i == count)
                {
                    output[count++] = item;
                }
                else
                {
                    item.Release();
                }
            }
        }
        return count;
    }

    /// <inheritdoc />
    public async ValueTask PutAsync(CacheEngineKey key, MemoryObject payload, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(payload);
        var text = key.ToString();
        if (!LmRequestHeader.KeyFits(text))
        {
            ConnectorLog.KeyTooLong(_logger, Description, text);
            return;
        }
        var kept = await ExecuteAsync("put", (text, payload, _options.ConfirmPuts), static async (connection, state, token) =>
        {
            var (key, payload, confirm) = state;
            LmRequestHeader.Put(key, payload.Length, payload.Metadata).WriteTo(connection.RequestBuffer);
            await connection.Stream.WriteAsync(connection.RequestBuffer.AsMemory(0, LmRequestHeader.Size), token).ConfigureAwait(false);
            await connection.Stream.WriteAsync(payload.Memory, token).ConfigureAwait(false);
            if (!confirm)
            {
                return (bool?)null;
            }
            // PUT has no reply; an EXIST of the same key right behind it is answered only after the server consumed the
            // PUT, so the entry is visible to every connection when this returns, and a server that closed the
            // connection over this PUT shows here as an error instead of a silent loss. The key is the one the server
            // has just parsed in the PUT, so every server version that accepts our PUTs accepts this request.
            LmRequestHeader.Exist(key).WriteTo(connection.RequestBuffer);
            await connection.Stream.WriteAsync(connection.RequestBuffer.AsMemory(0, LmRequestHeader.Size), token).ConfigureAwait(false);
            await connection.Stream.ReadExactlyAsync(connection.ReplyBuffer.AsMemory(0, LmReplyHeader.Size), token).ConfigureAwait(false);
            var reply = LmReplyHeader.Read(connection.ReplyBuffer);
            if (reply.Validate(0) is { } error)
            {
                throw new LmConnectionException($"invalid EXIST reply after PUT: {error}");
            }
            return reply.IsSuccess;
        }, cancellationToken).ConfigureAwait(false);
        if (kept is null)
        {
            return;
        }
        _probeKey = text;
        if (kept == false)
        {
            // The server read the PUT and dropped it (ours does when no room can be made): not a failure of the
            // connection, so not one for the circuit breaker either; the chunk is simply not stored remotely.
            ConnectorLog.PutNotKept(_logger, Description, text);
        }
    }

    /// <summary>
    /// True when the server answers: HEALTH carrying the last key it accepted from us; when HEALTH is refused (the
    /// connection closed or no answer) but an EXIST of the same key is answered, the server is healthy and only
    /// refuses HEALTH — some original versions parse or dispatch it differently — and later probes use EXIST.
    /// </summary>
    public async ValueTask<bool> PingAsync(CancellationToken cancellationToken)
    {
        var key = _probeKey;
        if (_healthRefused)
        {
            return await ExistAnswersAsync(key, cancellationToken).ConfigureAwait(false);
        }
        try
        {
            return await ExecuteAsync("health", key, static async (connection, key, token) =>
            {
                LmRequestHeader.Health(key).WriteTo(connection.RequestBuffer);
                await connection.Stream.WriteAsync(connection.RequestBuffer.AsMemory(0, LmRequestHeader.Size), token).ConfigureAwait(false);
                await connection.Stream.ReadExactlyAsync(connection.ReplyBuffer.AsMemory(0, LmReplyHeader.Size), token).ConfigureAwait(false);
                var reply = LmReplyHeader.Read(connection.ReplyBuffer);
                return reply.Validate(0) is null && reply.IsSuccess;
            }, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not ObjectDisposedException && !cancellationToken.IsCancellationRequested)
        {
            bool answered;
            try
            {
                answered = await ExistAnswersAsync(key, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception) when (!cancellationToken.IsCancellationRequested)
            {
                answered = false;
            }
            if (!answered)
            {
                throw;
            }
            _healthRefused = true;
            ConnectorLog.HealthRefused(_logger, Description, ex.Message);
            return true;
        }
    }

    private ValueTask<bool> ExistAnswersAsync(string key, CancellationToken cancellationToken) =>
        ExecuteAsync("exist", key, static async (connection, key, token) =>
        {
            LmRequestHeader.Exist(key).WriteTo(connection.RequestBuffer);
            await connection.Stream.WriteAsync(connection.RequestBuffer.AsMemory(0, LmRequestHeader.Size), token).ConfigureAwait(false);
            await connection.Stream.ReadExactlyAsync(connection.ReplyBuffer.AsMemory(0, LmReplyHeader.Size), token).ConfigureAwait(false);
            return LmReplyHeader.Read(connection.ReplyBuffer).Validate(0) is null;
        }, cancellationToken);

    /// <summary>The protocol has no delete command; always false.</summary>
    public ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken) => ValueTask.FromResult(false);

    /// <summary>
    /// The stored key strings, as one LIST exchange (our server answers it; the original's never does, so against it
    /// this call ends with a timeout).
    /// </summary>
    public ValueTask<IReadOnlyList<string>> ListKeysAsync(CancellationToken cancellationToken) =>
        ExecuteAsync("list", _options.MaxPayloadBytes, static async (connection, maxPayload, token) =>
        {
            LmRequestHeader.List().WriteTo(connection.RequestBuffer);
            await connection.Stream.WriteAsync(connection.RequestBuffer.AsMemory(0, LmRequestHeader.Size), token).ConfigureAwait(false);
            await connection.Stream.ReadExactlyAsync(connection.ReplyBuffer.AsMemory(0, LmReplyHeader.Size), token).ConfigureAwait(false);
            var reply = LmReplyHeader.Read(connection.ReplyBuffer);
            if (reply.Validate(maxPayload) is { } error)
            {
                throw new LmConnectionException($"invalid LIST reply: {error}");
            }
            if (!reply.IsSuccess)
            {
                return (IReadOnlyList<string>)[];
            }
            var payload = ArrayPool<byte>.Shared.Rent(reply.Length);
            try
            {
                await connection.Stream.ReadExactlyAsync(payload.AsMemory(0, reply.Length), token).ConfigureAwait(false);
                return LmWire.DecodeKeyList(payload.AsSpan(0, reply.Length));
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(payload);
            }
        }, cancellationToken);

    /// <summary>Closes every connection. Calls in flight fail.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _idle.Writer.TryComplete();
        foreach (var connection in _all)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async ValueTask<MemoryObject?> GetOnConnectionAsync(LmClientConnection connection, string key, IMemoryAllocator allocator, CancellationToken token)
    {
        var stream = connection.Stream;
        LmRequestHeader.Get(key).WriteTo(connection.RequestBuffer);
        await stream.WriteAsync(connection.RequestBuffer.AsMemory(0, LmRequestHeader.Size), token).ConfigureAwait(false);
        await stream.ReadExactlyAsync(connection.ReplyBuffer.AsMemory(0, LmReplyHeader.Size), token).ConfigureAwait(false);
        var reply = LmReplyHeader.Read(connection.ReplyBuffer);
        if (reply.Validate(_options.MaxPayloadBytes) is { } error)
        {
            throw new LmConnectionException($"invalid GET reply for {key}: {error}");
        }
        _probeKey = key;
        if (!reply.IsSuccess)
        {
            return null;
        }
        if (!reply.TryGetMetadata(out var metadata) || metadata.ByteLength != reply.Length)
        {
            ConnectorLog.InvalidEntry(_logger, Description, key,
                $"length {reply.Length} does not match fmt {reply.Format}, dtype {reply.DTypeCode}, shape {reply.Shape}");
            await DrainAsync(stream, reply.Length, token).ConfigureAwait(false);
            return null;
        }
        if (!allocator.TryAllocate(metadata, out var memoryObject))
        {
            ConnectorLog.NoMemory(_logger, Description, key, reply.Length);
            await DrainAsync(stream, reply.Length, token).ConfigureAwait(false);
            return null;
        }
        try
        {
            await stream.ReadExactlyAsync(memoryObject.Memory, token).ConfigureAwait(false);
            return memoryObject;
        }
        catch
        {
            memoryObject.Release();
            throw;
        }
    }

    private async ValueTask<TResult> ExecuteAsync<TState, TResult>(
        string operation, TState state, Func<LmClientConnection, TState, CancellationToken, ValueTask<TResult>> exchange, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.OperationTimeout);
        LmClientConnection connection;
        try
        {
            connection = await _idle.Reader.ReadAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"{Description}: no free connection within {_options.OperationTimeout.TotalMilliseconds:F0} ms for {operation}.");
        }
        catch (ChannelClosedException)
        {
            throw new ObjectDisposedException(nameof(LmConnector));
        }
        try
        {
            if (!connection.IsConnected)
            {
                await ConnectAsync(connection, timeout.Token).ConfigureAwait(false);
            }
            return await exchange(connection, state, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // Whatever happened in the middle of an exchange, the stream may be out of step: start afresh next time.
            if (connection.IsConnected)
            {
                connection.Invalidate();
                ConnectorLog.ConnectionDropped(_logger, Description, operation, ex.Message);
            }
            if (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"{Description}: {operation} did not complete within {_options.OperationTimeout.TotalMilliseconds:F0} ms.", ex);
            }
            throw;
        }
        finally
        {
            if (Volatile.Read(ref _disposed) != 0)
            {
                connection.Invalidate();
            }
            else
            {
                _idle.Writer.TryWrite(connection);
            }
        }
    }

    private async ValueTask ConnectAsync(LmClientConnection connection, CancellationToken cancellationToken)
    {
        long waitTicks;
        lock (_backoffLock)
        {
            waitTicks = _nextConnectTimestamp - Stopwatch.GetTimestamp();
        }
        if (waitTicks > 0)
        {
            throw new LmConnectionException(
                $"{Description} is unreachable; next connect attempt in {waitTicks * 1000 / Stopwatch.Frequency} ms.");
        }
        using var connectTimeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        connectTimeout.CancelAfter(_options.ConnectTimeout);
        try
        {
            await connection.ConnectAsync(connectTimeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            TimeSpan delay;
            lock (_backoffLock)
            {
                delay = _backoff;
                _nextConnectTimestamp = Stopwatch.GetTimestamp() + (long)(delay.TotalSeconds * Stopwatch.Frequency);
                _backoff = TimeSpan.FromTicks(Math.Min(_backoff.Ticks * 2, _options.MaxBackoff.Ticks));
            }
            var reason = ex is OperationCanceledException ? $"no answer within {_options.ConnectTimeout.TotalMilliseconds:F0} ms" : ex.Message;
            ConnectorLog.ConnectFailed(_logger, Description, reason, (long)delay.TotalMilliseconds);
            throw new LmConnectionException($"{Description}: connect failed ({reason}).", ex);
        }
        bool recovered;
        lock (_backoffLock)
        {
            recovered = _backoff != _options.InitialBackoff;
            _backoff = _options.InitialBackoff;
            _nextConnectTimestamp = 0;
        }
        if (recovered)
        {
            ConnectorLog.Connected(_logger, Description);
        }
    }

    private static async ValueTask DrainAsync(Stream stream, int length, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Min(Math.Max(length, 1), DrainBufferBytes));
        try
        {
            while (length > 0)
            {
                var chunk = Math.Min(length, buffer.Length);
                await stream.ReadExactlyAsync(buffer.AsMemory(0, chunk), cancellationToken).ConfigureAwait(false);
                length -= chunk;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}

/// <summary>Creates <see cref="LmConnector"/>s for <c>lm://</c> URLs.</summary>
public sealed class LmConnectorFactory : IRemoteConnectorFactory
{
    /// <inheritdoc />
    public IReadOnlyList<string> Schemes { get; } = ["lm"];

    /// <inheritdoc />
    public IRemoteConnector Create(string url, RemoteConnectorContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var options = LmConnectorOptions.Parse(url, context.Options);
        return new LmConnector(options, context.LoggerFactory.CreateLogger<LmConnector>());
    }
}
