using LMCache.Core.Keys;
using LMCache.Core.Memory;

namespace LMCache.Storage.Remote;

/// <summary>What a connector can do beyond single-key operations.</summary>
[Flags]
public enum RemoteCapabilities
{
    /// <summary>Single-key operations only.</summary>
    None = 0,
    /// <summary><see cref="IRemoteConnector.ExistsPrefixAsync"/> costs one round trip for any number of keys.</summary>
    BatchedExists = 1,
    /// <summary><see cref="IRemoteConnector.GetPrefixAsync"/> pipelines its reads.</summary>
    BatchedGet = 2,
    /// <summary><see cref="IRemoteConnector.PingAsync"/> is a real health probe.</summary>
    Ping = 4,
    // 8 was List: listing is the IRemoteKeyspace capability now (a connector implements that interface).
    /// <summary><see cref="IRemoteConnector.RemoveAsync"/> deletes entries.</summary>
    Remove = 16,
}

/// <summary>
/// A remote store client (Redis, Sentinel, Cluster, <c>lm://</c>, ...). The <see cref="RemoteBackend"/> wraps it with
/// timeouts, a put queue, serde and a circuit breaker, so connectors may throw on failure: every exception becomes a
/// miss there. A connector must never return wrong bytes: it validates lengths and metadata (and checksums where it
/// stores them) and returns null for anything doubtful.
/// </summary>
/// <remarks>
/// Optional capabilities are further interfaces a connector implements: <see cref="IRemoteKeyspace"/> (list, inspect and
/// delete what the store holds, for the <c>lmcache keys</c> tools).
/// </remarks>
public interface IRemoteConnector : IAsyncDisposable
{
    /// <summary>A description for logs, with any password redacted (e.g. <c>redis://user:***@host:6379</c>).</summary>
    string Description { get; }

    /// <summary>What this connector supports.</summary>
    RemoteCapabilities Capabilities { get; }

    /// <summary>How many of <paramref name="keys"/>, from the first, exist (one round trip when batched).</summary>
    ValueTask<int> ExistsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken);

    /// <summary>
    /// Reads one entry into an object from <paramref name="allocator"/> (caller owns the returned reference); null on a
    /// miss, on invalid data, or when memory could not be allocated.
    /// </summary>
    ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, IMemoryAllocator allocator, CancellationToken cancellationToken);

    /// <summary>
    /// Reads <paramref name="keys"/> in order until the first miss, into <paramref name="destination"/>; returns the number
    /// of leading hits. Objects after a miss must not be returned (release them).
    /// </summary>
    ValueTask<int> GetPrefixAsync(
        ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, IMemoryAllocator allocator, CancellationToken cancellationToken);

    /// <summary>
    /// Stores <paramref name="payload"/> (already serialized) under <paramref name="key"/>. The caller keeps its reference
    /// until the returned task completes.
    /// </summary>
    ValueTask PutAsync(CacheEngineKey key, MemoryObject payload, CancellationToken cancellationToken);

    /// <summary>Health probe; true when the store answers.</summary>
    ValueTask<bool> PingAsync(CancellationToken cancellationToken);

    /// <summary>Deletes an entry; true if something was removed.</summary>
    ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken);
}

/// <summary>Creates connectors for the URL schemes it knows.</summary>
public interface IRemoteConnectorFactory
{
    /// <summary>The URL schemes handled, lower-case without <c>://</c> (e.g. <c>redis</c>, <c>rediss</c>).</summary>
    IReadOnlyList<string> Schemes { get; }

    /// <summary>
    /// Creates a connector for <paramref name="url"/>. A malformed URL is an <see cref="Core.Diagnostics.LMCacheConfigurationException"/>;
    /// an unreachable server is not an error here (the connector reconnects by itself and misses meanwhile).
    /// </summary>
    IRemoteConnector Create(string url, RemoteConnectorContext context);
}

/// <summary>What a connector factory may need besides the URL.</summary>
/// <param name="Options">The engine options (timeouts, <c>extra_config</c>).</param>
/// <param name="LoggerFactory">Logging.</param>
/// <param name="MeterFactory">Where connectors create their meters (the engine's, so they are exported with it); null: each connector owns one.</param>
public sealed record RemoteConnectorContext(
    Core.Configuration.LMCacheEngineOptions Options,
    Microsoft.Extensions.Logging.ILoggerFactory LoggerFactory,
    System.Diagnostics.Metrics.IMeterFactory? MeterFactory = null);

/// <summary>Connector factories by URL scheme: the registry that lets more schemes plug in.</summary>
public sealed class RemoteConnectorRegistry
{
    private readonly Dictionary<string, IRemoteConnectorFactory> _byScheme = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Creates a registry with the built-in <c>blackhole://</c> connector.</summary>
    public RemoteConnectorRegistry() => Add(new BlackholeConnectorFactory());

    /// <summary>Registers <paramref name="factory"/> for its schemes (later registrations win).</summary>
    public RemoteConnectorRegistry Add(IRemoteConnectorFactory factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        foreach (var scheme in factory.Schemes)
        {
            _byScheme[scheme] = factory;
        }
        return this;
    }

    /// <summary>The registered schemes.</summary>
    public IReadOnlyCollection<string> Schemes => _byScheme.Keys;

    /// <summary>The scheme of <paramref name="url"/> (text before <c>://</c>), lower-case.</summary>
    public static string SchemeOf(string url)
    {
        var index = url.IndexOf("://", StringComparison.Ordinal);
        return index <= 0
            ? throw new Core.Diagnostics.LMCacheConfigurationException($"remote_url = '{url}': must be a URL with a scheme, such as redis://host:6379.")
            : url[..index].ToLowerInvariant();
    }

    /// <summary>Creates the connector for <paramref name="url"/>; an unknown scheme is a configuration error listing the known ones.</summary>
    public IRemoteConnector Create(string url, RemoteConnectorContext context)
    {
        var scheme = SchemeOf(url);
        return _byScheme.TryGetValue(scheme, out var factory)
            ? factory.Create(url, context)
            : throw new Core.Diagnostics.LMCacheConfigurationException(
                $"remote_url = '{url}': no connector for scheme '{scheme}://'; available: {string.Join(", ", _byScheme.Keys.Order(StringComparer.Ordinal).Select(s => s + "://"))}.");
    }
}
