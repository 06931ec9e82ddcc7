using System.Buffers;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Protocol;
using Microsoft.Extensions.Logging;

namespace LMCache.Server;

/// <summary>
/// One client connection: reads a 186-byte header, serves it, and only then reads the next one, so requests are
/// answered strictly in order and a slow reader holds back its own sender (TCP back-pressure) and nobody else.
/// </summary>
/// <remarks>
/// Payloads never pass through an intermediate buffer: a PUT body is received straight into a block of the store's
/// native pool, and a GET body is sent straight from the stored block (the store's reference plus ours keep it alive
/// and un-evictable until the send completed). Anything malformed closes this connection only, with one log line.
/// </remarks>
internal sealed class LmServerConnection
{
    private const int DrainBufferBytes = 64 * 1024;

    private readonly LmServer _server;
    private readonly Socket _socket;
    private readonly long _id;
    private readonly EndPoint? _remote;
    private readonly byte[] _header = new byte[LmRequestHeader.Size];
    private readonly byte[] _reply = new byte[LmReplyHeader.Size];
    private volatile bool _awaitingFirstRequest = true;
    private volatile string? _shedReason;
    private string _waitingFor = "the TLS handshake";

    public LmServerConnection(LmServer server, Socket socket, long id)
    {
        _server = server;
        _socket = socket;
        _id = id;
        _remote = socket.RemoteEndPoint;
        var address = (_remote as IPEndPoint)?.Address ?? IPAddress.None;
        ClientAddress = address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
    }

    /// <summary>Accept order: a smaller id connected earlier.</summary>
    public long Id => _id;

    public EndPoint? Remote => _remote;

    /// <summary>The client's address, the unit of per-client fairness (IPv4-mapped IPv6 addresses as IPv4).</summary>
    public IPAddress ClientAddress { get; }

    /// <summary>True until the first complete request header arrived: such a connection may be shed to make room.</summary>
    public bool IsAwaitingFirstRequest => _awaitingFirstRequest;

    /// <summary>When the connection was accepted (<see cref="Environment.TickCount64"/>, ms).</summary>
    public long OpenedAtMs { get; } = Environment.TickCount64;

    /// <summary>Closes this connection from outside (the accept loop or the idle sweep); <paramref name="reason"/> is logged.</summary>
    public void Shed(string reason)
    {
        _shedReason = reason;
        _socket.Dispose();   // the pending read ends with an exception and RunAsync logs the reason
    }

    private LmServerOptions Options => _server.Options;

    private ILogger Logger => _server.Logger;

    public async Task RunAsync(CancellationToken shutdown)
    {
        string? failure = null;
        Stream stream = new NetworkStream(_socket, ownsSocket: true);
        using var payloadTimeout = CancellationTokenSource.CreateLinkedTokenSource(shutdown);
        ServerLog.ConnectionOpened(Logger, _id, _remote);
        try
        {
            if (Options.TlsCertificate is { } certificate)
            {
                var tls = new SslStream(stream, leaveInnerStreamOpen: false);
                stream = tls;
                payloadTimeout.CancelAfter(Options.HandshakeTimeout);
                await tls.AuthenticateAsServerAsync(
                    new SslServerAuthenticationOptions { ServerCertificate = certificate, ClientCertificateRequired = false },
                    payloadTimeout.Token).ConfigureAwait(false);
                ResetTimeout(payloadTimeout, shutdown);
            }
            var authenticated = Options.AuthToken is null;
            while (true)
            {
                var read = await ReadHeaderAsync(stream, authenticated, payloadTimeout, shutdown).ConfigureAwait(false);
                if (read == 0)
                {
                    ServerLog.ConnectionClosed(Logger, _id, _remote);
                    return;
                }
                if (read < LmRequestHeader.Size)
                {
                    failure = $"disconnected in the middle of a request header ({read} of {LmRequestHeader.Size} bytes)";
                    return;
                }
                _awaitingFirstRequest = false;
                if (!LmRequestHeader.TryRead(_header, out var header, out var error))
                {
                    failure = $"malformed request header: {error}";
                    return;
                }
                if ((error = header.Validate(_server.MaxPayloadBytes)) is not null)
                {
                    failure = $"malformed request header: {error}";
                    return;
                }
                if (!authenticated && header.Command != LmCommand.Auth)
                {
                    failure = $"{header.Command} before AUTH, and this server requires a token";
                    return;
                }
                var key = default(CacheEngineKey);
                if (header.Command is LmCommand.Put or LmCommand.Get or LmCommand.Exist
                    && !CacheEngineKey.TryParse(header.Key, out key, out error))
                {
                    failure = $"bad key in {header.Command} '{Truncate(header.Key)}': {error}";
                    return;
                }
                var identity = header.Command is LmCommand.Put or LmCommand.Get or LmCommand.Exist
                    ? LmEntryStore.Identity(header.Key, ref key) : header.Key;
                payloadTimeout.CancelAfter(Options.PayloadTimeout);
                _waitingFor = $"the {header.Command} payload";
                switch (header.Command)
                {
                    case LmCommand.Put:
                        await PutAsync(stream, header, identity, key, payloadTimeout.Token).ConfigureAwait(false);
                        break;
                    case LmCommand.Get:
                        await GetAsync(stream, identity, key, payloadTimeout.Token).ConfigureAwait(false);
                        break;
                    case LmCommand.Exist:
                        await ReplyAsync(stream, _server.Store.Contains(identity) || _server.Store.Spill?.Contains(key) == true ? LmReplyHeader.Ok : LmReplyHeader.Fail, payloadTimeout.Token).ConfigureAwait(false);
                        break;
                    case LmCommand.Health:
                        await ReplyAsync(stream, LmReplyHeader.Ok, payloadTimeout.Token).ConfigureAwait(false);
                        break;
                    case LmCommand.List:
                        await ListAsync(stream, payloadTimeout.Token).ConfigureAwait(false);
                        break;
                    case LmCommand.Auth:
                        if (!await AuthenticateAsync(stream, header.Length, payloadTimeout.Token).ConfigureAwait(false))
                        {
                            failure = "wrong AUTH token";
                            return;
                        }
                        authenticated = true;
                        break;
                }
                ResetTimeout(payloadTimeout, shutdown);
            }
        }
        catch (OperationCanceledException) when (shutdown.IsCancellationRequested)
        {
            // Server stopping.
        }
        catch (Exception) when (_shedReason is not null)
        {
            failure = _shedReason;
        }
        catch (OperationCanceledException)
        {
            failure = $"timed out waiting for {_waitingFor}";
        }
        catch (EndOfStreamException)
        {
            failure = "disconnected in the middle of a payload";
        }
        catch (Exception ex) when (ex is IOException or SocketException or AuthenticationException or ObjectDisposedException)
        {
            failure = _shedReason ?? (ex is IOException { InnerException: SocketException inner } ? inner.Message : ex.Message);
        }
        catch (Exception ex)
        {
            // Whatever else goes wrong with one connection ends that connection only; the server keeps serving.
            failure = $"internal error {ex.GetType().Name}: {ex.Message}";
        }
        finally
        {
            if (failure is not null)
            {
                _server.CountConnectionError();
                ServerLog.ConnectionError(Logger, _id, _remote, failure);
            }
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Reads one request header; 0 when the client closed cleanly before it. Before AUTH the whole header must come
    /// within the handshake timeout. Otherwise the wait for its first bytes is unbounded (the original's engines
    /// connect at start-up and may stay silent for hours before their first request, and never reconnect; an idle
    /// connection is closed only when the server needs its slot or is busy, see <see cref="LmServer"/>), but once
    /// bytes arrived the rest of the header must come within <see cref="LmServerOptions.IdleTimeout"/>.
    /// </summary>
    private async ValueTask<int> ReadHeaderAsync(Stream stream, bool authenticated, CancellationTokenSource timeout, CancellationToken shutdown)
    {
        if (!authenticated)
        {
            _waitingFor = "AUTH";
            timeout.CancelAfter(Options.HandshakeTimeout);
            return await stream.ReadAtLeastAsync(_header, LmRequestHeader.Size, throwOnEndOfStream: false, timeout.Token).ConfigureAwait(false);
        }
        // Whatever has arrived, up to one header (usually all of it: one read per request).
        _waitingFor = _awaitingFirstRequest ? "the first request" : "the next request";
        var read = await stream.ReadAsync(_header, shutdown).ConfigureAwait(false);
        if (read is 0 or LmRequestHeader.Size)
        {
            return read;
        }
        _waitingFor = "the rest of a request header";
        timeout.CancelAfter(Options.IdleTimeout);
        read += await stream.ReadAtLeastAsync(_header.AsMemory(read), LmRequestHeader.Size - read, throwOnEndOfStream: false, timeout.Token).ConfigureAwait(false);
        return read;
    }

    private async Task PutAsync(Stream stream, LmRequestHeader header, string identity, CacheEngineKey key, CancellationToken cancellationToken)
    {
        var length = header.Length;
        // Keep the real metadata when the header describes exactly the payload (what every LMCache client sends), so
        // the disk spill can restore fmt/dtype/shape; anything else is kept as opaque bytes with its raw wire fields.
        var spillable = header.TryGetMetadata(out var metadata) && metadata.ByteLength == length;
        if (!spillable)
        {
            metadata = MemoryObjectMetadata.Opaque(length);
        }
        MemoryObject? block = null;
        if (length > 0 && !_server.Store.TryAllocate(metadata, out block)
            && (block = await AllocateAfterSpillAsync(metadata, cancellationToken).ConfigureAwait(false)) is null)
        {
            _server.CountPutRejected();
            ServerLog.PutRejected(Logger, _id, header.Key, length);
            await DrainAsync(stream, length, cancellationToken).ConfigureAwait(false);
            return;
        }
        try
        {
            if (block is not null)
            {
                await stream.ReadExactlyAsync(block.Memory, cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            block?.Release();
            throw;
        }
        _server.CountReceived(length);
        // The original decodes code 1 and 2 as float16 and re-encodes 2; store what it would send back.
        var dtype = header.DTypeCode == 1 ? 2 : header.DTypeCode;
        _server.Store.Commit(identity, new StoredEntry(key, block, length, header.Format, dtype, header.Shape, spillable));
    }

    private async Task<MemoryObject?> AllocateAfterSpillAsync(MemoryObjectMetadata metadata, CancellationToken cancellationToken)
    {
        // Evicted entries keep their memory until the spill has written them: wait for those writes (back-pressure on
        // this client only), then try again, instead of dropping the PUT.
        if (_server.Store.Spill is not { } spill)
        {
            return null;
        }
        await spill.FlushAsync(cancellationToken).ConfigureAwait(false);
        return _server.Store.TryAllocate(metadata, out var block) ? block : null;
    }

    private async Task GetAsync(Stream stream, string text, CacheEngineKey key, CancellationToken cancellationToken)
    {
        if (!_server.Store.TryAcquire(text, out var entry) && (entry = await ReadSpillAsync(text, key, cancellationToken).ConfigureAwait(false)) is null)
        {
            _server.Store.RecordMiss();
            await ReplyAsync(stream, LmReplyHeader.Fail, cancellationToken).ConfigureAwait(false);
            return;
        }
        try
        {
            await ReplyAsync(stream, LmReplyHeader.Hit(entry!.Length, entry.Format, entry.DTypeCode, entry.Shape), cancellationToken).ConfigureAwait(false);
            if (entry.Object is not null)
            {
                await stream.WriteAsync(entry.Object.Memory, cancellationToken).ConfigureAwait(false);
                _server.CountSent(entry.Length);
            }
        }
        finally
        {
            entry!.Object?.Release();
        }
    }

    private async Task<StoredEntry?> ReadSpillAsync(string text, CacheEngineKey key, CancellationToken cancellationToken)
    {
        if (_server.Store.Spill is not { } spill || !spill.Contains(key))
        {
            return null;
        }
        // The disk tier validates length and checksum and allocates from the store's pool (evicting if needed). The
        // pool may be held by spill writes of just-evicted entries: then wait for those and try once more.
        var chunk = await spill.GetAsync(key, cancellationToken).ConfigureAwait(false);
        if (chunk is null && spill.Contains(key))
        {
            await spill.FlushAsync(cancellationToken).ConfigureAwait(false);
            chunk = await spill.GetAsync(key, cancellationToken).ConfigureAwait(false);
        }
        if (chunk is null)
        {
            return null;
        }
        var metadata = chunk.Metadata;
        var entry = new StoredEntry(key, chunk, chunk.Length, (int)metadata.Format, metadata.DType.ToWireCode(), metadata.Shape, Spillable: true);
        // Promote: the store takes over our reference and hands back one for this GET.
        var served = _server.Store.Promote(text, entry);
        _server.CountSpillHit();
        return served;
    }

    private async Task ListAsync(Stream stream, CancellationToken cancellationToken)
    {
        var keys = _server.Store.Keys();
        if (_server.Store.Spill is { } spill)
        {
            var inMemory = new HashSet<string>(keys, StringComparer.Ordinal);
            keys.AddRange(spill.Snapshot().Select(e => e.Key.ToString()).Where(k => !inMemory.Contains(k)));
        }
        var payload = LmWire.EncodeKeyList(keys);
        await ReplyAsync(stream, LmReplyHeader.ListReply(payload.Length), cancellationToken).ConfigureAwait(false);
        await stream.WriteAsync(payload, cancellationToken).ConfigureAwait(false);
        _server.CountSent(payload.Length);
    }

    private async Task<bool> AuthenticateAsync(Stream stream, int length, CancellationToken cancellationToken)
    {
        var token = new byte[length];
        await stream.ReadExactlyAsync(token, cancellationToken).ConfigureAwait(false);
        var ok = _server.AuthTokenBytes is not { } expected || CryptographicOperations.FixedTimeEquals(token, expected);
        await ReplyAsync(stream, ok ? LmReplyHeader.Ok : LmReplyHeader.Fail, cancellationToken).ConfigureAwait(false);
        return ok;
    }

    private ValueTask ReplyAsync(Stream stream, LmReplyHeader reply, CancellationToken cancellationToken)
    {
        // One write per reply header: the original's client reads it with a single recv(36).
        reply.WriteTo(_reply);
        return stream.WriteAsync(_reply, cancellationToken);
    }

    private static async Task DrainAsync(Stream stream, int length, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Min(length, DrainBufferBytes));
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

    private static void ResetTimeout(CancellationTokenSource source, CancellationToken shutdown)
    {
        if (!source.TryReset() && !shutdown.IsCancellationRequested)
        {
            // TryReset fails only once the source fired, and then this connection is already closing.
            throw new OperationCanceledException();
        }
    }

    private static string Truncate(string key) => key.Length <= 160 ? key : key[..160] + "...";
}
