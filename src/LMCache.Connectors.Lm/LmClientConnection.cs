using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using LMCache.Protocol;

namespace LMCache.Connectors.Lm;

/// <summary>
/// One pooled TCP (or TLS) connection to the server. Used by one exchange at a time (the pool hands it out
/// exclusively); after any failure in the middle of an exchange it is <see cref="Invalidate"/>d, because the byte
/// stream may be out of step, and the next user reconnects.
/// </summary>
internal sealed class LmClientConnection : IAsyncDisposable
{
    private readonly LmConnectorOptions _options;
    private Stream? _stream;

    public LmClientConnection(LmConnectorOptions options)
    {
        _options = options;
    }

    /// <summary>Scratch for request headers (one or a batch).</summary>
    public byte[] RequestBuffer { get; private set; } = new byte[LmRequestHeader.Size * 4];

    /// <summary>Scratch for reply headers.</summary>
    public byte[] ReplyBuffer { get; private set; } = new byte[LmReplyHeader.Size * 4];

    public bool IsConnected => _stream is not null;

    public Stream Stream => _stream ?? throw new InvalidOperationException("Not connected.");

    /// <summary>Makes sure the buffers hold <paramref name="requests"/> headers each way.</summary>
    public void EnsureCapacity(int requests)
    {
        if (RequestBuffer.Length < requests * LmRequestHeader.Size)
        {
            RequestBuffer = new byte[requests * LmRequestHeader.Size];
            ReplyBuffer = new byte[requests * LmReplyHeader.Size];
        }
    }

    public async ValueTask ConnectAsync(CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        Stream? stream = null;
        try
        {
            await socket.ConnectAsync(_options.Host, _options.Port, cancellationToken).ConfigureAwait(false);
            stream = new NetworkStream(socket, ownsSocket: true);
            if (_options.UseTls)
            {
                var tls = new SslStream(stream, leaveInnerStreamOpen: false);
                stream = tls;
                await tls.AuthenticateAsClientAsync(CreateTlsOptions(), cancellationToken).ConfigureAwait(false);
            }
            if (_options.AuthToken is { } token)
            {
                var tokenBytes = Encoding.UTF8.GetBytes(token);
                LmRequestHeader.Auth(tokenBytes.Length).WriteTo(RequestBuffer);
                await stream.WriteAsync(RequestBuffer.AsMemory(0, LmRequestHeader.Size), cancellationToken).ConfigureAwait(false);
                await stream.WriteAsync(tokenBytes, cancellationToken).ConfigureAwait(false);
                await stream.ReadExactlyAsync(ReplyBuffer.AsMemory(0, LmReplyHeader.Size), cancellationToken).ConfigureAwait(false);
                if (!LmReplyHeader.Read(ReplyBuffer).IsSuccess)
                {
                    throw new LmConnectionException("the server refused the AUTH token");
                }
            }
            _stream = stream;
            stream = null;
        }
        finally
        {
            if (stream is not null)
            {
                await stream.DisposeAsync().ConfigureAwait(false);
            }
            else if (_stream is null)
            {
                socket.Dispose();
            }
        }
    }

    /// <summary>Drops the connection; the next user reconnects.</summary>
    public void Invalidate()
    {
        var stream = _stream;
        _stream = null;
        stream?.Dispose();
    }

    public ValueTask DisposeAsync()
    {
        Invalidate();
        return ValueTask.CompletedTask;
    }

    private SslClientAuthenticationOptions CreateTlsOptions()
    {
        var options = new SslClientAuthenticationOptions { TargetHost = _options.Host };
        if (_options.TlsCaFile is { } caFile)
        {
            var trusted = X509Certificate2.CreateFromPem(File.ReadAllText(caFile));
            options.CertificateChainPolicy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
                CustomTrustStore = { trusted },
            };
        }
        return options;
    }
}
