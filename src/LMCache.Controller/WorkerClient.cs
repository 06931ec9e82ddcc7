using LMCache.Controller.Protocol;
using NetMQ;
using NetMQ.Sockets;

namespace LMCache.Controller;

/// <summary>
/// The controller's REQ socket to one worker (the original keeps one per registered worker): one outstanding request
/// at a time; a request that times out closes the socket (a REQ socket cannot send again before it receives) and the
/// next one reconnects.
/// </summary>
internal sealed class WorkerClient(string address) : IDisposable
{
    private static readonly TimeSpan s_pollSlice = TimeSpan.FromMilliseconds(100);

    private readonly SemaphoreSlim _gate = new(1, 1);
    private RequestSocket? _socket;
    private bool _disposed;

    public string Address { get; } = address;

    /// <summary>Sends <paramref name="request"/> and waits for the reply; null when the worker did not answer in time.</summary>
    public async Task<ControlMessage?> RequestAsync(ControlMessage request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed), this);
            return await Task.Run(() => Exchange(request, timeout, cancellationToken), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (Volatile.Read(ref _disposed))
            {
                CloseSocket();   // disposed while this request was in flight: Dispose left the socket to us
            }
            _gate.Release();
        }
    }

    private ControlMessage? Exchange(ControlMessage request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (_socket is null)
        {
            _socket = new RequestSocket();
            _socket.Options.Linger = TimeSpan.Zero;
            _socket.Connect(Address);
        }
        var deadline = DateTime.UtcNow + timeout;
        if (_socket.TrySendFrame(timeout, ControlMessageCodec.Encode(request)))
        {
            // Wait in slices so that a long operation's wait ends when the caller (or the controller) gives up.
            while (!cancellationToken.IsCancellationRequested)
            {
                var left = deadline - DateTime.UtcNow;
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
