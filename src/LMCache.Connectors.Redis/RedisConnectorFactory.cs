using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;

namespace LMCache.Connectors.Redis;

/// <summary>
/// Creates <see cref="RedisConnector"/>s for <c>redis://</c>, <c>rediss://</c>, <c>unix://</c>, <c>redis-sentinel://</c>,
/// <c>redis-cluster://</c>, <c>valkey://</c> and <c>valkeys://</c>. Register with
/// <c>new RemoteConnectorRegistry().Add(new RedisConnectorFactory())</c>.
/// </summary>
public sealed class RedisConnectorFactory : IRemoteConnectorFactory
{
    /// <inheritdoc />
    public IReadOnlyList<string> Schemes { get; } = ["redis", "rediss", "unix", "redis-sentinel", "redis-cluster", "valkey", "valkeys"];

    /// <summary>
    /// Parses <paramref name="url"/> (a malformed one is an <see cref="Core.Diagnostics.LMCacheConfigurationException"/>)
    /// and returns a connector that connects in the background; timeouts come from <c>blocking_timeout_secs</c>, the
    /// checksum policy from <c>extra_config.redis_checksum</c>.
    /// </summary>
    public IRemoteConnector Create(string url, RemoteConnectorContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var parsed = RedisUrl.Parse(url);
        var options = RedisConnectorOptions.FromEngineOptions(context.Options);
        return new RedisConnector(parsed, options, context.LoggerFactory.CreateLogger<RedisConnector>(), context.MeterFactory);
    }
}
