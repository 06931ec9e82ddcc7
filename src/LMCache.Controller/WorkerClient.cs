using LMCache.Controller.Worker;
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
            ObjectDisposedException.ThrowIf(_disposed, this);
            return await Task.Run(() => Exchange(request, timeout), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    private ControlMessage? Exchange(ControlMessage request, TimeSpan timeout)
    {
        if (_socket is null)
        {
            _socket = new RequestSocket();
            _socket.Options.Linger = TimeSpan.Zero;
            _socket.Connect(Address);
        }
        if (!_socket.TrySendFrame(timeout, ControlMessageCodec.Encode(request)) ||
            !_socket.TryReceiveFrameBytes(timeout, out var reply))
        {
            _socket.Dispose();
            _socket = null;
            return null;
        }
        return ControlMessageCodec.Decode(reply);
    }

    public void Dispose()
    {
        _gate.Wait();
        try
        {
            _disposed = true;
            _socket?.Dispose();
            _socket = null;
        }
        finally
        {
            _gate.Release();
        }
    }
}
