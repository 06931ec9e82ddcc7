using System.Globalization;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;

namespace LMCache.Connectors.Lm;

/// <summary>
/// Settings of an <see cref="LmConnector"/>, read from the URL
/// <c>lm://host:port[?connections=N&amp;confirm_puts=true&amp;token=T&amp;tls=true&amp;tls_ca=PEM&amp;connect_timeout_ms=MS]</c> and the engine options.
/// </summary>
public sealed class LmConnectorOptions
{
    /// <summary>Server host name or address.</summary>
    public required string Host { get; init; }

    /// <summary>Server TCP port.</summary>
    public required int Port { get; init; }

    /// <summary>
    /// Pooled connections: how many requests can be in flight at once (each connection carries one exchange at a time,
    /// as the protocol has no request ids). URL <c>connections</c>. Defaults to 4.
    /// </summary>
    public int Connections { get; init; } = 4;

    /// <summary>
    /// Limit of every call (lookup, get, put, ping, list), including waiting for a pooled connection. Defaults to
    /// <c>blocking_timeout_secs</c> (10 s).
    /// </summary>
    public TimeSpan OperationTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Limit of one TCP connect (plus TLS handshake and AUTH). URL <c>connect_timeout_ms</c>. Defaults to 5 s.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>First wait after a failed connect before trying again; doubles per failure. Defaults to 100 ms.</summary>
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Longest wait between connect attempts. Defaults to 10 s (the original retries after ≥ 10 s).</summary>
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Shared token sent in an AUTH request on every new connection (our server's extension; the original's server
    /// does not understand it). URL <c>token</c> or <c>extra_config.lm_auth_token</c>. Defaults to null (none).
    /// </summary>
    public string? AuthToken { get; init; }

    /// <summary>Whether to speak TLS (our server's extension). URL <c>tls=true</c>. Defaults to false.</summary>
    public bool UseTls { get; init; }

    /// <summary>
    /// A PEM file of the certificate authority (or self-signed certificate) to trust for TLS instead of the system
    /// store. URL <c>tls_ca</c>. Defaults to null (system trust).
    /// </summary>
    public string? TlsCaFile { get; init; }

    /// <summary>
    /// Whether each PUT is followed by an EXIST of the same key on the same connection and completes only when it is
    /// answered (one extra round trip, tens of microseconds on a LAN, against milliseconds for a chunk). PUT has no
    /// reply in the protocol: without this, a put completes when its bytes reach the socket, another connection may not
    /// see the entry yet, and a rejected put goes unnoticed. Works with every version of the original's server (EXIST is
    /// in every version, and it carries the key the server has just accepted in the PUT).
    /// URL <c>confirm_puts</c>. Defaults to true.
    /// </summary>
    public bool ConfirmPuts { get; init; } = true;

    /// <summary>Largest GET payload accepted, in bytes; a larger reply closes the connection. Defaults to 2 GiB − 1 (the int32 limit of the wire).</summary>
    public int MaxPayloadBytes { get; init; } = int.MaxValue;

    /// <summary>Parses an <c>lm://</c> URL; a malformed one is an <see cref="LMCacheConfigurationException"/>.</summary>
    /// <param name="url">The remote URL.</param>
    /// <param name="engine">Engine options for the timeout and <c>extra_config</c>; null for defaults.</param>
    public static LmConnectorOptions Parse(string url, LMCacheEngineOptions? engine = null)
    {
        ArgumentNullException.ThrowIfNull(url);
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || !string.Equals(uri.Scheme, "lm", StringComparison.OrdinalIgnoreCase))
        {
            throw new LMCacheConfigurationException($"remote_url = '{Redact(url)}': expected lm://host:port.");
        }
        if (string.IsNullOrEmpty(uri.Host) || uri.IsDefaultPort || uri.Port is <= 0 or > 65535)
        {
            throw new LMCacheConfigurationException($"remote_url = '{Redact(url)}': the host and the port are mandatory (lm://host:port).");
        }
        var query = ParseQuery(uri.Query, url);
        var connections = 4;
        if (query.TryGetValue("connections", out var text) && (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out connections) || connections is < 1 or > 256))
        {
            throw new LMCacheConfigurationException($"remote_url = '{Redact(url)}': connections = '{text}' must be an integer in 1..256.");
        }
        var connectTimeout = TimeSpan.FromSeconds(5);
        if (query.TryGetValue("connect_timeout_ms", out text))
        {
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var ms) || ms < 1)
            {
                throw new LMCacheConfigurationException($"remote_url = '{Redact(url)}': connect_timeout_ms = '{text}' must be a positive integer.");
            }
            connectTimeout = TimeSpan.FromMilliseconds(ms);
        }
        var tls = false;
        if (query.TryGetValue("tls", out text) && !TryParseBool(text, out tls))
        {
            throw new LMCacheConfigurationException($"remote_url = '{Redact(url)}': tls = '{text}' must be true or false.");
        }
        var confirmPuts = true;
        if (query.TryGetValue("confirm_puts", out text) && !TryParseBool(text, out confirmPuts))
        {
            throw new LMCacheConfigurationException($"remote_url = '{Redact(url)}': confirm_puts = '{text}' must be true or false.");
        }
        query.TryGetValue("tls_ca", out var caFile);
        if (caFile is not null && !File.Exists(caFile))
        {
            throw new LMCacheConfigurationException($"remote_url = '{Redact(url)}': tls_ca file '{caFile}' does not exist.");
        }
        query.TryGetValue("token", out var token);
        token ??= engine?.GetExtraString("lm_auth_token");
        foreach (var name in query.Keys)
        {
            if (name is not ("connections" or "connect_timeout_ms" or "confirm_puts" or "tls" or "tls_ca" or "token"))
            {
                throw new LMCacheConfigurationException(
                    $"remote_url = '{Redact(url)}': unknown parameter '{name}'; allowed: connections, connect_timeout_ms, confirm_puts, tls, tls_ca, token.");
            }
        }
        return new LmConnectorOptions
        {
            Host = uri.Host,
            Port = uri.Port,
            Connections = connections,
            ConnectTimeout = connectTimeout,
            OperationTimeout = TimeSpan.FromSeconds(Math.Max(1, engine?.BlockingTimeoutSecs ?? 10)),
            AuthToken = string.IsNullOrEmpty(token) ? null : token,
            UseTls = tls,
            TlsCaFile = caFile,
            ConfirmPuts = confirmPuts,
        };
    }

    /// <summary>The URL with any token replaced by <c>***</c>, for logs.</summary>
    public static string Redact(string url)
    {
        ArgumentNullException.ThrowIfNull(url);
        var index = url.IndexOf("token=", StringComparison.OrdinalIgnoreCase);
        if (index < 0)
        {
            return url;
        }
        var end = url.IndexOf('&', index);
        return url[..(index + 6)] + "***" + (end < 0 ? string.Empty : url[end..]);
    }

    private static Dictionary<string, string> ParseQuery(string query, string url)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var part in query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var split = part.IndexOf('=', StringComparison.Ordinal);
            if (split <= 0)
            {
                throw new LMCacheConfigurationException($"remote_url = '{Redact(url)}': query part '{(part.StartsWith("token", StringComparison.OrdinalIgnoreCase) ? "token" : part)}' is not name=value.");
            }
            result[Uri.UnescapeDataString(part[..split])] = Uri.UnescapeDataString(part[(split + 1)..]);
        }
        return result;
    }

    private static bool TryParseBool(string text, out bool value)
    {
        switch (text.ToLowerInvariant())
        {
            case "true" or "1" or "yes" or "on":
                value = true;
                return true;
            case "false" or "0" or "no" or "off":
                value = false;
                return true;
            default:
                value = false;
                return false;
        }
    }
}
