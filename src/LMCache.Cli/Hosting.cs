using LMCache.Core.Serde;
using LMCache.Engine;
using LMCache.Serde.CacheGen;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;

namespace LMCache.Cli;

/// <summary>
/// The one place where the CLI wires every connector scheme and serializer the repository ships into the engine's
/// registries; commands that build engines take their services from here.
/// </summary>
internal static class Hosting
{
    public static RemoteConnectorRegistry CreateConnectorRegistry() => new RemoteConnectorRegistry()
        .Add(new Connectors.Lm.LmConnectorFactory());

    public static SerdeRegistry CreateSerdeRegistry(ILoggerFactory? loggerFactory = null) =>
        CacheGenSerde.Register(new SerdeRegistry(), loggerFactory);

    public static LMCacheEngineServices CreateServices(ILoggerFactory loggerFactory) =>
        new(CreateConnectorRegistry(), CreateSerdeRegistry(loggerFactory), loggerFactory);
}
