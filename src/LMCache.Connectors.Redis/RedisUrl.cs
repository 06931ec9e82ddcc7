using System.Globalization;
using System.Net;
using System.Net.Sockets;
using LMCache.Core.Diagnostics;

namespace LMCache.Connectors.Redis;

/// <summary>How a Redis URL reaches its data.</summary>
public enum RedisTopology
{
    /// <summary>One server (<c>redis://</c>, <c>rediss://</c>, <c>unix://</c>, <c>valkey://</c>).</summary>
    Standalone,
    /// <summary>A master found through Sentinels (<c>redis-sentinel://</c>); failover is followed.</summary>
    Sentinel,
    /// <summary>A Redis Cluster (<c>redis-cluster://</c>); the nodes listed are seeds, the rest is discovered.</summary>
    Cluster,
}

/// <summary>
/// A parsed remote URL of one of the Redis schemes, following redis-py's URL rules where the original used them:
/// <c>redis://[[user]:[pass]@]host[:port][/db][?opts]</c>, <c>rediss://</c> (TLS), <c>unix:///path.sock[?db=N&amp;password=P]</c>,
/// <c>redis-sentinel://[user[:pass]@]h1:p1,h2:p2[?service_name=NAME]</c>, <c>redis-cluster://[user[:pass]@]h1:p1,h2:p2</c>,
/// and <c>valkey://</c>/<c>valkeys://</c> as aliases of <c>redis://</c>/<c>rediss://</c>.
/// </summary>
public sealed class RedisUrl
{
    /// <summary>The default Redis port (6379).</summary>
    public const int DefaultPort = 6379;

    /// <summary>The default Sentinel port (26379).</summary>
    public const int DefaultSentinelPort = 26379;

    /// <summary>The Sentinel service name when neither the URL nor <c>REDIS_SERVICE_NAME</c> names one: <c>mymaster</c>, as in the seed's set-up.</summary>
    public const string DefaultServiceName = "mymaster";

    /// <summary>The environment variable the original reads the Sentinel service name from.</summary>
    public const string ServiceNameVariable = "REDIS_SERVICE_NAME";

    private RedisUrl(string original, string scheme, RedisTopology topology, IReadOnlyList<EndPoint> endPoints)
    {
        Original = original;
        Scheme = scheme;
        Topology = topology;
        EndPoints = endPoints;
    }

    /// <summary>The URL as given (may contain a password; use <see cref="Redacted"/> in logs).</summary>
    public string Original { get; }

    /// <summary>The lower-case scheme (<c>redis</c>, <c>rediss</c>, <c>unix</c>, <c>redis-sentinel</c>, <c>redis-cluster</c>, <c>valkey</c>, <c>valkeys</c>).</summary>
    public string Scheme { get; }

    /// <summary>Standalone, Sentinel or Cluster.</summary>
    public RedisTopology Topology { get; }

    /// <summary>The servers (standalone: one; Sentinel: the sentinels; Cluster: the seed nodes). Unix sockets are <see cref="UnixDomainSocketEndPoint"/>.</summary>
    public IReadOnlyList<EndPoint> EndPoints { get; }

    /// <summary>ACL user name, or null for the default user.</summary>
    public string? User { get; private set; }

    /// <summary>Password, or null for none.</summary>
    public string? Password { get; private set; }

    /// <summary>Database number (<c>/db</c> path or <c>?db=</c>). Defaults to 0; always 0 on a cluster.</summary>
    public int Database { get; private set; }

    /// <summary>True for <c>rediss://</c> and <c>valkeys://</c>, or <c>?ssl=true</c>.</summary>
    public bool UseTls { get; private set; }

    /// <summary>TLS: a PEM file with the CA that signed the server certificate (<c>?ssl_ca_certs=</c>), or null for the system store.</summary>
    public string? TlsCaCertificates { get; private set; }

    /// <summary>TLS: false when <c>?ssl_cert_reqs=none</c> (accept any server certificate; for tests only).</summary>
    public bool TlsVerifyServer { get; private set; } = true;

    /// <summary>TLS: client certificate and key PEM files (<c>?ssl_certfile=</c>, <c>?ssl_keyfile=</c>), or null.</summary>
    public (string Certificate, string Key)? TlsClientCertificate { get; private set; }

    /// <summary>Sentinel: the monitored master's name (<c>?service_name=</c>, else <c>REDIS_SERVICE_NAME</c>, else <c>mymaster</c>).</summary>
    public string? ServiceName { get; private set; }

    /// <summary>Sentinel: password of the sentinels themselves (<c>?sentinel_password=</c>); the URL's user/password apply to the master.</summary>
    public string? SentinelPassword { get; private set; }

    /// <summary>The URL with the password replaced by <c>***</c>.</summary>
    public string Redacted
    {
        get
        {
            var text = Original;
            if (Password is null)
            {
                return RedactQuery(text);
            }
            var schemeEnd = text.IndexOf("://", StringComparison.Ordinal) + 3;
            var at = text.IndexOf('@', schemeEnd);
            if (at > 0)
            {
                var colon = text.IndexOf(':', schemeEnd);
                text = colon > 0 && colon < at
                    ? string.Concat(text.AsSpan(0, colon + 1), "***", text.AsSpan(at))
                    : string.Concat(text.AsSpan(0, schemeEnd), "***", text.AsSpan(at));
            }
            return RedactQuery(text);
        }
    }

    /// <summary>The first host and port, for tools such as <c>redis-benchmark</c> (null for unix sockets).</summary>
    public (string Host, int Port)? FirstHost => EndPoints.FirstOrDefault() switch
    {
        DnsEndPoint dns => (dns.Host, dns.Port),
        IPEndPoint ip => (ip.Address.ToString(), ip.Port),
        _ => null,
    };

    /// <summary>Parses <paramref name="url"/>; a malformed URL is an <see cref="LMCacheConfigurationException"/> naming the problem.</summary>
    /// <param name="url">The remote URL.</param>
    /// <param name="environmentServiceName">The value of <c>REDIS_SERVICE_NAME</c> (null: read the process environment).</param>
    public static RedisUrl Parse(string url, string? environmentServiceName = null)
    {
        ArgumentNullException.ThrowIfNull(url);
        var schemeEnd = url.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd <= 0)
        {
            throw Error(url, "must be a URL with a scheme, such as redis://host:6379");
        }
        var scheme = url[..schemeEnd].ToLowerInvariant();
        var rest = url[(schemeEnd + 3)..];

        string? query = null;
        var q = rest.IndexOf('?', StringComparison.Ordinal);
        if (q >= 0)
        {
            query = rest[(q + 1)..];
            rest = rest[..q];
        }
        var parameters = ParseQuery(url, query);

        string? user = null;
        string? password = null;
        var at = rest.LastIndexOf('@');
        if (at >= 0)
        {
            var userInfo = rest[..at];
            rest = rest[(at + 1)..];
            var colon = userInfo.IndexOf(':', StringComparison.Ordinal);
            if (colon >= 0)
            {
                user = Unescape(userInfo[..colon]);
                password = Unescape(userInfo[(colon + 1)..]);
            }
            else
            {
                // redis-py: "redis://secret@host" is a password-only URL only with a colon; a bare name is a user name.
                user = Unescape(userInfo);
            }
            user = string.IsNullOrEmpty(user) ? null : user;
            password = string.IsNullOrEmpty(password) ? null : password;
        }
        if (parameters.TryGetValue("password", out var queryPassword))
        {
            password = queryPassword;
        }
        if (parameters.TryGetValue("username", out var queryUser))
        {
            user = queryUser;
        }

        RedisUrl result;
        switch (scheme)
        {
            case "redis" or "rediss" or "valkey" or "valkeys":
                {
                    var slash = rest.IndexOf('/', StringComparison.Ordinal);
                    var path = slash >= 0 ? rest[(slash + 1)..] : "";
                    var hostPort = slash >= 0 ? rest[..slash] : rest;
                    if (hostPort.Contains(',', StringComparison.Ordinal))
                    {
                        throw Error(url, $"{scheme}:// takes one host; use redis-cluster://h1:p1,h2:p2 for a cluster or redis-sentinel:// for sentinels");
                    }
                    result = new RedisUrl(url, scheme, RedisTopology.Standalone, [ParseHostPort(url, hostPort, DefaultPort)]);
                    if (path.Length > 0)
                    {
                        result.Database = ParseDatabase(url, path);
                    }
                    result.UseTls = scheme is "rediss" or "valkeys";
                    break;
                }
            case "unix":
                {
                    if (rest.Length == 0 || rest[0] != '/')
                    {
                        throw Error(url, "unix:// needs an absolute socket path, such as unix:///run/redis/redis.sock");
                    }
                    result = new RedisUrl(url, scheme, RedisTopology.Standalone, [new UnixDomainSocketEndPoint(Uri.UnescapeDataString(rest))]);
                    break;
                }
            case "redis-sentinel":
                {
                    result = new RedisUrl(url, scheme, RedisTopology.Sentinel, ParseHostList(url, rest, DefaultSentinelPort));
                    var service = parameters.GetValueOrDefault("service_name") ?? parameters.GetValueOrDefault("service")
                        ?? environmentServiceName ?? Environment.GetEnvironmentVariable(ServiceNameVariable);
                    result.ServiceName = string.IsNullOrWhiteSpace(service) ? DefaultServiceName : service.Trim();
                    result.SentinelPassword = parameters.GetValueOrDefault("sentinel_password");
                    break;
                }
            case "redis-cluster":
                {
                    result = new RedisUrl(url, scheme, RedisTopology.Cluster, ParseHostList(url, rest, DefaultPort));
                    break;
                }
            default:
                throw Error(url, $"scheme '{scheme}://' is not a Redis scheme (redis, rediss, unix, redis-sentinel, redis-cluster, valkey, valkeys)");
        }

        result.User = user;
        result.Password = password;
        if (parameters.TryGetValue("db", out var db))
        {
            if (result.Topology == RedisTopology.Cluster)
            {
                throw Error(url, "a Redis Cluster has only database 0");
            }
            result.Database = ParseDatabase(url, db);
        }
        if (parameters.TryGetValue("ssl", out var ssl))
        {
            result.UseTls = ssl is "1" || ssl.Equals("true", StringComparison.OrdinalIgnoreCase);
        }
        if (parameters.TryGetValue("ssl_cert_reqs", out var reqs))
        {
            result.TlsVerifyServer = !reqs.Equals("none", StringComparison.OrdinalIgnoreCase);
        }
        result.TlsCaCertificates = parameters.GetValueOrDefault("ssl_ca_certs");
        if (parameters.TryGetValue("ssl_certfile", out var certFile))
        {
            var keyFile = parameters.GetValueOrDefault("ssl_keyfile")
                ?? throw Error(url, "ssl_certfile needs ssl_keyfile (the client certificate's private key)");
            result.TlsClientCertificate = (certFile, keyFile);
        }
        return result;
    }

    /// <inheritdoc />
    public override string ToString() => Redacted;

    private static Dictionary<string, string> ParseQuery(string url, string? query)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        if (string.IsNullOrEmpty(query))
        {
            return result;
        }
        foreach (var pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = pair.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                throw Error(url, $"query parameter '{pair}' must be name=value");
            }
            result[Unescape(pair[..eq])] = Unescape(pair[(eq + 1)..]);
        }
        return result;
    }

    private static List<EndPoint> ParseHostList(string url, string text, int defaultPort)
    {
        if (text.Contains('/', StringComparison.Ordinal))
        {
            text = text.TrimEnd('/');
            if (text.Contains('/', StringComparison.Ordinal))
            {
                throw Error(url, "a list of host:port takes no path (and no database)");
            }
        }
        var list = new List<EndPoint>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            list.Add(ParseHostPort(url, part, defaultPort));
        }
        return list.Count == 0 ? throw Error(url, "needs at least one host:port") : list;
    }

    private static EndPoint ParseHostPort(string url, string text, int defaultPort)
    {
        if (text.Length == 0)
        {
            throw Error(url, "the host is missing");
        }
        string host;
        var port = defaultPort;
        if (text[0] == '[')
        {
            var close = text.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
            {
                throw Error(url, $"'{text}': unclosed IPv6 bracket");
            }
            host = text[1..close];
            if (close + 1 < text.Length)
            {
                port = text[close + 1] == ':' ? ParsePort(url, text[(close + 2)..]) : throw Error(url, $"'{text}': expected ':' after ']'");
            }
        }
        else
        {
            var colon = text.LastIndexOf(':');
            host = colon >= 0 ? text[..colon] : text;
            if (colon >= 0)
            {
                port = ParsePort(url, text[(colon + 1)..]);
            }
        }
        if (host.Length == 0)
        {
            throw Error(url, "the host is missing");
        }
        // IP literals stay IP endpoints so they match the addresses a cluster reports for its nodes (no duplicate connections).
        return IPAddress.TryParse(host, out var address) ? new IPEndPoint(address, port) : new DnsEndPoint(host, port);
    }

    private static int ParsePort(string url, string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and < 65536
            ? port
            : throw Error(url, $"port '{text}' is not a number between 1 and 65535");

    private static int ParseDatabase(string url, string text) =>
        int.TryParse(text.Trim('/'), NumberStyles.None, CultureInfo.InvariantCulture, out var db) && db >= 0
            ? db
            : throw Error(url, $"database '{text}' is not a non-negative number");

    private static string Unescape(string text) => Uri.UnescapeDataString(text);

    private static string RedactQuery(string text)
    {
        foreach (var name in new[] { "password=", "sentinel_password=" })
        {
            var index = text.IndexOf(name, StringComparison.OrdinalIgnoreCase);
            if (index > 0 && text[index - 1] is '?' or '&')
            {
                var end = text.IndexOf('&', index);
                text = string.Concat(text.AsSpan(0, index + name.Length), "***", end < 0 ? "" : text.AsSpan(end));
            }
        }
        return text;
    }

    private static LMCacheConfigurationException Error(string url, string problem)
    {
        var shown = url;
        try
        {
            var at = url.LastIndexOf('@');
            if (at > 0)
            {
                shown = string.Concat(url.AsSpan(0, url.IndexOf("://", StringComparison.Ordinal) + 3), "***", url.AsSpan(at));
            }
        }
        catch (ArgumentOutOfRangeException)
        {
            shown = "(unparseable)";
        }
        return new LMCacheConfigurationException(
            $"remote_url = '{shown}': {problem}. Forms: redis://[user:pass@]host:port[/db], rediss://..., unix:///path.sock, " +
            "redis-sentinel://[user:pass@]h1:p1,h2:p2[?service_name=mymaster], redis-cluster://h1:p1,h2:p2, valkey://host:port.");
    }
}
