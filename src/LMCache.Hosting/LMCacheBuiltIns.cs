using System.Diagnostics.Metrics;
using LMCache.Connectors.Lm;
using LMCache.Connectors.Redis;
using LMCache.Core.Serde;
using LMCache.Engine;
using LMCache.Serde.CacheGen;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;

namespace LMCache.Hosting;

/// <summary>
/// Every remote connector and serializer the repository ships, registered once: <c>lm://</c>, the Redis family
/// (<c>redis://</c>, <c>rediss://</c>, <c>unix://</c>, <c>redis-sentinel://</c>, <c>redis-cluster://</c>,
/// <c>valkey://</c>, <c>valkeys://</c>) beside the engine's own <c>blackhole://</c>; and <c>naive</c>, <c>kivi</c> and
/// <c>cachegen</c>. <see cref="LMCacheEngineBuilder"/> and <see cref="LMCacheHost"/> use these by default, so a
/// configuration that says <c>remote_url: redis://…</c> gets Redis without its user knowing about factories.
/// </summary>
public static class LMCacheBuiltIns
{
    /// <summary>A registry with every built-in connector scheme; add custom factories to it (later registrations win).</summary>
    public static RemoteConnectorRegistry CreateConnectorRegistry() => new RemoteConnectorRegistry()
        .Add(new LmConnectorFactory())
        .Add(new RedisConnectorFactory());

    /// <summary>A registry with every built-in serde (<c>naive</c>, <c>kivi</c>, <c>cachegen</c>).</summary>
    public static SerdeRegistry CreateSerdeRegistry(ILoggerFactory? loggerFactory = null) =>
        CacheGenSerde.Register(new SerdeRegistry(), loggerFactory);

    /// <summary>Engine services with every built-in connector and serde, and the given logging, metrics and clock.</summary>
    public static LMCacheEngineServices CreateServices(ILoggerFactory? loggerFactory = null, IMeterFactory? meterFactory = null, TimeProvider? timeProvider = null) =>
        new(CreateConnectorRegistry(), CreateSerdeRegistry(loggerFactory), loggerFactory, meterFactory, timeProvider);
}
