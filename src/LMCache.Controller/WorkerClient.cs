using LMCache.Controller.Protocol;
using NetMQ;
using NetMQ.Sockets;

namespace LMCache.Controller;

/// <summary>
/// The controller's REQ socket to one worker (the original keeps one per registered worker): one outstanding request
/// at a time; a request that times out closes the socket (a REQ socket cannot send again before it receives) and the
/// next one reconnects. Every request carries <paramref name="authToken"/> when one is set, so that a worker configured
/// with the token can refuse requests that are not the controller's.
/// </summary>
internal sealed class WorkerClient(string address, string? authToken = null) : IDisposable
{
    private static readonly TimeSpan s_pollSlice = TimeSpan.FromMilliseconds(100);

    private readonly SemaphoreSlim _gate = new(1, 1);
    private RequestSocket? _socket;
    private bool _disposed;

    public string Address { get; } = address;

    /// <summary>
    /// Sends <paramref name="request"/> and waits for the reply; null when the worker did not answer in time. The wait
    /// for an earlier request to the same worker and the delivery both count against <paramref name="deliveryTimeout"/>;
    /// the whole exchange ends by <paramref name="replyTimeout"/> (at least <paramref name="deliveryTimeout"/>).
    /// </summary>
    public async Task<ControlMessage?> RequestAsync(ControlMessage request, TimeSpan deliveryTimeout, TimeSpan replyTimeout, CancellationToken cancellationToken)
    {
        var started = DateTime.UtcNow;
        if (!await _gate.WaitAsync(deliveryTimeout, cancellationToken).ConfigureAwait(false))
        {
            return null;   // an earlier request to this worker still holds the socket: this one is out of time
        }
        Task<ControlMessage?>? exchange = null;
        try
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed), this);
            var sendBy = started + deliveryTimeout;
            var replyBy = started + (replyTimeout > deliveryTimeout ? replyTimeout : deliveryTimeout);
            if (!string.IsNullOrEmpty(authToken))
            {
                request[LMCacheController.AuthTokenField] = authToken;
            }
            exchange = Task.Run(() => Exchange(request, sendBy, replyBy, cancellationToken), CancellationToken.None);
            var left = replyBy - DateTime.UtcNow;
            // The deadline is kept here, not only by the socket calls: a ZeroMQ call that does not come back (seen with a
            // peer that accepts TCP and never speaks) must not hold the HTTP caller.
            return await exchange.WaitAsync(left > TimeSpan.Zero ? left + s_pollSlice : s_pollSlice, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return null;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return null;
        }
        finally
        {
            // The socket belongs to the exchange until it ends: release the gate (and close a disposed client's socket) then.
            if (exchange is { IsCompleted: false })
            {
                _ = exchange.ContinueWith(_ => Finish(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }
            else
            {
                Finish();
            }
        }
    }

    private void Finish()
    {
        if (Volatile.Read(ref _disposed))
        {
            CloseSocket();   // disposed while this request was in flight: Dispose left the socket to us
        }
        _gate.Release();
    }

    private ControlMessage? Exchange(ControlMessage request, DateTime sendBy, DateTime replyBy, CancellationToken cancellationToken)
    {
        if (_socket is null)
        {
            _socket = new RequestSocket();
            _socket.Options.Linger = TimeSpan.Zero;
            // Queue a request only on a completed connection, so that "not delivered by the deadline" is observable:
            // without it ZeroMQ queues the frame for a worker that is not there and the send succeeds at once.
            _socket.Options.DelayAttachOnConnect = true;   // ZMQ_IMMEDIATE
            _socket.Connect(Address);
        }
        var sendWindow = sendBy - DateTime.UtcNow;
        if (sendWindow > TimeSpan.Zero && _socket.TrySendFrame(sendWindow, ControlMessageCodec.Encode(request)))
        {
            // Wait in slices so that a long operation's wait ends when the caller (or the controller) gives up.
            while (!cancellationToken.IsCancellationRequested)
            {
                var left = replyBy - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                {
                    break;
                }
                if (_socket.TryReceiveFrameBytes(left < s_pollSlice ? left : s_pollSlice, out var reply))
                {
                    return ControlMessageCodec.Decode(reply);
                }
            }
        }
        _socket.Dispose();   // a REQ socket cannot send again before it receives: the next request reconnects
        _socket = null;
        cancellationToken.ThrowIfCancellationRequested();
        return null;
    }
    /// <summary>
    /// Closes the socket now when no request is in flight; otherwise the request in flight closes it when it ends.
    /// Never waits (it runs on the controller's socket thread, which must not stall behind a slow worker).
    /// </summary>
    public void Dispose()
    {
        Volatile.Write(ref _disposed, true);
        if (_gate.Wait(0))
        {
            try
            {
                CloseSocket();
            }
            finally
            {
                _gate.Release();
            }
        }
    }

    private void CloseSocket()
    {
        _socket?.Dispose();
        _socket = null;
    }
}
