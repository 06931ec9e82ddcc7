using System.Buffers;
using System.Collections.Concurrent;
using System.Threading.Channels;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Core.Serde;
using LMCache.Storage.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Storage.Remote;

/// <summary>
/// The remote tier: a connector behind timeouts, an asynchronous bounded put queue, serde and a circuit breaker.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>Puts never block inference: they are queued (the queue holds a reference to each object) and dropped and
/// counted when the queue is full or the circuit is open.</item>
/// <item>Lookups and reads are bounded by <see cref="RemoteBackendOptions.Timeout"/>; any error or timeout is a miss,
/// and an object that arrives after its caller gave up is released, not leaked.</item>
/// <item>After <see cref="RemoteBackendOptions.FailureThreshold"/> consecutive failures the circuit opens: every call
/// is an immediate miss while a background probe pings the remote with back-off; the first successful probe closes
/// it. A dead remote therefore costs a request at most one timeout, and nothing once the circuit is open.</item>
/// </list>
/// </remarks>
public sealed class RemoteBackend : IStorageBackend
{
    /// <summary>The backend name used by <c>store_location</c>/<c>retrieve_locations</c>.</summary>
    public const string BackendName = "RemoteBackend";

    private readonly IRemoteConnector _connector;
    private readonly IKvSerde _serde;
    private readonly IMemoryAllocator _allocator;
    private readonly RemoteBackendOptions _options;
    private readonly CircuitBreaker _breaker;
    private readonly ILogger _logger;
    private readonly Channel<PendingPut> _puts;
    private readonly ConcurrentDictionary<CacheEngineKey, byte> _inFlight = new();
    private readonly Task[] _putWorkers;
    private readonly Task _healthLoop;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly TimeProvider _time;
    private int _pendingPuts;

    /// <summary>Creates the tier.</summary>
    /// <param name="connector">The connector; owned and disposed by this backend.</param>
    /// <param name="serde">The serializer (<c>remote_serde</c>).</param>
    /// <param name="allocator">Where read chunks are allocated (the CPU tier, which evicts to make room).</param>
    /// <param name="options">Timeouts, queue and breaker settings.</param>
    /// <param name="logger">Logger; null for none.</param>
    /// <param name="timeProvider">Clock for the breaker; null for the system clock.</param>
    public RemoteBackend(
        IRemoteConnector connector,
        IKvSerde serde,
        IMemoryAllocator allocator,
        RemoteBackendOptions options,
        ILogger? logger = null,
        TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(connector);
        ArgumentNullException.ThrowIfNull(serde);
        ArgumentNullException.ThrowIfNull(allocator);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _connector = connector;
        _serde = serde;
        _allocator = allocator;
        _options = options;
        _time = timeProvider ?? TimeProvider.System;
        _breaker = new CircuitBreaker(options.FailureThreshold, options.InitialCooldown, options.MaxCooldown, _time);
        _logger = logger ?? NullLogger.Instance;
        Statistics = new TierStatistics(BackendName, 0);
        _puts = Channel.CreateBounded<PendingPut>(new BoundedChannelOptions(options.PutQueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = options.PutConcurrency == 1,
        });
        _putWorkers = new Task[options.PutConcurrency];
        for (var i = 0; i < _putWorkers.Length; i++)
        {
            _putWorkers[i] = Task.Run(RunPutWorkerAsync);
        }
        _healthLoop = Task.Run(RunHealthLoopAsync);
    }

    /// <inheritdoc />
    public string Name => BackendName;

    /// <inheritdoc />
    public TierStatistics Statistics { get; }

    /// <summary>The connector (for inspection tools).</summary>
    public IRemoteConnector Connector => _connector;

    /// <summary>True while the circuit is open (the remote is being bypassed).</summary>
    public bool IsBypassed => _breaker.IsOpen;

    /// <summary>Puts queued or in flight.</summary>
    public int PendingPuts => Volatile.Read(ref _pendingPuts);

    /// <inheritdoc />
    public async ValueTask<int> ContainsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken = default)
    {
        if (keys.IsEmpty || _breaker.IsOpen)
        {
            return 0;
        }
        using var timeout = CreateTimeout(cancellationToken);
        try
        {
            var task = _connector.ExistsPrefixAsync(keys, timeout.Token).AsTask();
            var count = await task.WaitAsync(_options.Timeout, cancellationToken).ConfigureAwait(false);
            RecordSuccess();
            return Math.Clamp(count, 0, keys.Length);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            await AbandonAsync(timeout).ConfigureAwait(false);
            RecordFailure("exists", ex);
            return 0;
        }
    }

    /// <inheritdoc />
    public void SubmitPut(CacheEngineKey key, MemoryObject memoryObject)
    {
        ArgumentNullException.ThrowIfNull(memoryObject);
        if (_breaker.IsOpen || _shutdown.IsCancellationRequested)
        {
            Statistics.RecordPutDropped();
            return;
        }
        if (!_inFlight.TryAdd(key, 0))
        {
            return;
        }
        memoryObject.AddRef();
        Interlocked.Increment(ref _pendingPuts);
        if (!_puts.Writer.TryWrite(new PendingPut(key, memoryObject)))
        {
            Interlocked.Decrement(ref _pendingPuts);
            _inFlight.TryRemove(key, out _);
            memoryObject.Release();
            Statistics.RecordPutDropped();
            StorageLog.RemotePutQueueFull(_logger, _connector.Description, _options.PutQueueCapacity, key.ToString());
        }
    }

    /// <inheritdoc />
    public async ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, CancellationToken cancellationToken = default)
    {
        var single = ArrayPool<MemoryObject?>.Shared.Rent(1);
        try
        {
            var keys = ArrayPool<CacheEngineKey>.Shared.Rent(1);
            try
            {
                keys[0] = key;
                var count = await GetPrefixAsync(keys.AsMemory(0, 1), single.AsMemory(0, 1), cancellationToken).ConfigureAwait(false);
                return count == 1 ? single[0] : null;
            }
            finally
            {
                ArrayPool<CacheEngineKey>.Shared.Return(keys, clearArray: true);
            }
        }
        finally
        {
            single[0] = null;
            ArrayPool<MemoryObject?>.Shared.Return(single);
        }
    }

    /// <inheritdoc />
    public async ValueTask<int> GetPrefixAsync(
        ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, CancellationToken cancellationToken = default)
    {
        if (keys.IsEmpty)
        {
            return 0;
        }
        if (_breaker.IsOpen)
        {
            Statistics.RecordMisses(keys.Length);
            return 0;
        }
        var stored = ArrayPool<MemoryObject?>.Shared.Rent(keys.Length);
        var count = 0;
        Task<int>? task = null;
        using var timeout = CreateTimeout(cancellationToken);
        try
        {
            task = _connector.GetPrefixAsync(keys, stored.AsMemory(0, keys.Length), _allocator, timeout.Token).AsTask();
            count = Math.Clamp(await task.WaitAsync(_options.Timeout, cancellationToken).ConfigureAwait(false), 0, keys.Length);
            RecordSuccess();
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            await AbandonAsync(timeout).ConfigureAwait(false);
            RecordFailure("get", ex);
            if (task is not null && !task.IsCompleted)
            {
                // The connector may still fill the buffer after we gave up: release what it returns, then the buffer.
                _ = ReleaseLateAsync(task, stored, keys.Length);
                stored = null;
            }
            count = 0;
        }
        if (stored is null)
        {
            Statistics.RecordMisses(keys.Length);
            return 0;
        }
        var output = destination.Span;
        var valid = 0;
        for (var i = 0; i < keys.Length; i++)
        {
            var item = stored[i];
            stored[i] = null;
            if (item is null)
            {
                continue;
            }
            if (i != valid || i >= count)
            {
                item.Release();
                continue;
            }
            var chunk = Deserialize(keys.Span[i], item);
            if (chunk is null)
            {
                count = i;
                continue;
            }
            output[valid++] = chunk;
            Statistics.RecordHit(chunk.Length);
        }
        ArrayPool<MemoryObject?>.Shared.Return(stored);
        Statistics.RecordMisses(keys.Length - valid);
        return valid;
    }

    /// <inheritdoc />
    public async ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken = default)
    {
        if (_breaker.IsOpen)
        {
            return false;
        }
        using var timeout = CreateTimeout(cancellationToken);
        try
        {
            return await _connector.RemoveAsync(key, timeout.Token).AsTask().WaitAsync(_options.Timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            await AbandonAsync(timeout).ConfigureAwait(false);
            RecordFailure("remove", ex);
            return false;
        }
    }

    /// <summary>Clearing a shared remote store is not done from an engine; use <c>lmcache keys rm</c>. Returns 0.</summary>
    public ValueTask<int> ClearAsync(CancellationToken cancellationToken = default) => ValueTask.FromResult(0);

    /// <inheritdoc />
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        while (Volatile.Read(ref _pendingPuts) > 0)
        {
            await Task.Delay(2, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (_shutdown.IsCancellationRequested)
        {
            return;
        }
        _puts.Writer.TryComplete();
        try
        {
            await Task.WhenAll(_putWorkers).WaitAsync(_options.Timeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Workers stuck on a dead remote: cancelled below.
        }
        await _shutdown.CancelAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll([.. _putWorkers, _healthLoop]).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Expected on shutdown.
        }
        while (_puts.Reader.TryRead(out var leftover))
        {
            leftover.Payload.Release();
        }
        await _connector.DisposeAsync().ConfigureAwait(false);
        _shutdown.Dispose();
    }

    private MemoryObject? Deserialize(CacheEngineKey key, MemoryObject stored)
    {
        MemoryObject? chunk = null;
        try
        {
            chunk = _serde.Deserialize(stored, _allocator);
        }
        catch (Exception ex)
        {
            StorageLog.RemoteEntryInvalid(_logger, _connector.Description, key.ToString(), ex.Message);
        }
        finally
        {
            stored.Release();
        }
        if (chunk is null)
        {
            Statistics.RecordError();
            StorageLog.RemoteEntryInvalid(_logger, _connector.Description, key.ToString(), $"{_serde.Name} could not decode it");
        }
        return chunk;
    }

    private async Task RunPutWorkerAsync()
    {
        var token = _shutdown.Token;
        try
        {
            while (await _puts.Reader.WaitToReadAsync(token).ConfigureAwait(false))
            {
                while (!token.IsCancellationRequested && _puts.Reader.TryRead(out var put))
                {
                    await SendAsync(put, token).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // Shutting down.
        }
    }

    private async Task SendAsync(PendingPut put, CancellationToken shutdown)
    {
        MemoryObject? payload = null;
        Task? sending = null;
        using var timeout = CreateTimeout(shutdown);
        try
        {
            if (_breaker.IsOpen)
            {
                Statistics.RecordPutDropped();
                return;
            }
            payload = _serde.Serialize(put.Payload, _allocator);
            if (payload is null)
            {
                Statistics.RecordPutDropped();
                return;
            }
            sending = _connector.PutAsync(put.Key, payload, timeout.Token).AsTask();
            await sending.WaitAsync(_options.Timeout, shutdown).ConfigureAwait(false);
            Statistics.RecordPut(payload.Length);
            RecordSuccess();
        }
        catch (Exception ex) when (!shutdown.IsCancellationRequested)
        {
            Statistics.RecordPutDropped();
            RecordFailure("put", ex);
        }
        catch (Exception)
        {
            // Shutting down. Whatever ended the wait — the cancellation, or the put's own timeout racing it (the filter
            // above runs after the exception, when the cancellation may already be there) — the put ends here, and
            // nothing may escape: an exception would fault the worker and make DisposeAsync throw.
        }
        finally
        {
            if (sending is { IsCompleted: false })
            {
                // We stopped waiting (timeout or shutdown): tell the connector to stop too.
                await AbandonAsync(timeout).ConfigureAwait(false);
            }
            if (payload is not null && sending is { IsCompleted: false })
            {
                // The connector may still be reading the payload: release it only when the send really ends.
                var late = payload;
                _ = sending.ContinueWith(static (_, state) => ((MemoryObject)state!).Release(), late,
                    CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                payload = null;
            }
            payload?.Release();
            put.Payload.Release();
            _inFlight.TryRemove(put.Key, out _);
            Interlocked.Decrement(ref _pendingPuts);
        }
    }

    private async Task RunHealthLoopAsync()
    {
        var token = _shutdown.Token;
        try
        {
            while (!token.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(100), _time, token).ConfigureAwait(false);
                if (!_breaker.IsProbeDue)
                {
                    continue;
                }
                bool healthy;
                using (var timeout = new CancellationTokenSource(_options.PingTimeout, _time))
                using (var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, token))
                {
                    try
                    {
                        healthy = await _connector.PingAsync(linked.Token).AsTask().WaitAsync(_options.PingTimeout, token).ConfigureAwait(false);
                    }
                    catch (Exception) when (!token.IsCancellationRequested)
                    {
                        healthy = false;
                    }
                }
                if (healthy)
                {
                    if (_breaker.RecordSuccess())
                    {
                        StorageLog.RemoteCircuitClosed(_logger, _connector.Description);
                    }
                }
                else
                {
                    _breaker.RecordProbeFailure();
                }
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // Shutting down.
        }
    }

    private CancellationTokenSource CreateTimeout(CancellationToken cancellationToken)
    {
        var source = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        source.CancelAfter(_options.Timeout);
        return source;
    }

    /// <summary>
    /// Cancels the token a connector call was given once we stop waiting for it. Without this a call abandoned by the
    /// <c>WaitAsync</c> timeout (which can win the race against the token's own timer) kept running after its token
    /// source was disposed, so a connector that honours cancellation was never told to stop and kept its buffers.
    /// </summary>
    private static async Task AbandonAsync(CancellationTokenSource timeout)
    {
        try
        {
            await timeout.CancelAsync().ConfigureAwait(false);
        }
        catch (AggregateException)
        {
            // A connector's cancellation callback threw; the call is abandoned either way.
        }
    }

    private void RecordSuccess()
    {
        if (_breaker.RecordSuccess())
        {
            StorageLog.RemoteCircuitClosed(_logger, _connector.Description);
        }
    }

    private void RecordFailure(string operation, Exception exception)
    {
        Statistics.RecordError();
        var reason = exception is TimeoutException or OperationCanceledException
            ? $"no answer within {_options.Timeout.TotalMilliseconds:0} ms"
            : exception.GetType().Name + ": " + exception.Message;
        StorageLog.RemoteOperationFailed(_logger, _connector.Description, operation, reason);
        if (_breaker.RecordFailure())
        {
            StorageLog.RemoteCircuitOpened(_logger, _connector.Description, _breaker.ConsecutiveFailures, (long)_breaker.Cooldown.TotalMilliseconds);
        }
    }

    private static async Task ReleaseLateAsync(Task<int> task, MemoryObject?[] stored, int length)
    {
        try
        {
            await task.ConfigureAwait(false);
        }
        catch (Exception)
        {
            // The failure was already counted; only the buffer matters now.
        }
        for (var i = 0; i < length; i++)
        {
            stored[i]?.Release();
            stored[i] = null;
        }
        ArrayPool<MemoryObject?>.Shared.Return(stored);
    }

    private readonly record struct PendingPut(CacheEngineKey Key, MemoryObject Payload);
}
