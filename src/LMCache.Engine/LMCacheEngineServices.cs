using System.Diagnostics.Metrics;
using LMCache.Core.Serde;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;

namespace LMCache.Engine;

/// <summary>
/// What an engine is wired with besides its configuration: the remote connector and serde registries (hosts add the
/// schemes and serializers they ship), logging and metrics. Every member may be null for the built-in defaults.
/// <c>LMCache.Hosting</c>'s <c>LMCacheEngineBuilder</c> (and <c>LMCacheBuiltIns.CreateServices</c>) fills the registries
/// with every connector (<c>lm://</c>, the Redis family) and serde (<c>cachegen</c>) the repository ships.
/// </summary>
/// <param name="Connectors">Remote connectors by URL scheme; defaults to the built-in registry (<c>blackhole://</c>).</param>
/// <param name="Serdes">Serializers by name; defaults to <c>naive</c> and <c>kivi</c>.</param>
/// <param name="LoggerFactory">Logging; defaults to none.</param>
/// <param name="MeterFactory">Metrics; defaults to private meters.</param>
/// <param name="TimeProvider">Clock for the remote circuit breaker; defaults to the system clock.</param>
public sealed record LMCacheEngineServices(
    RemoteConnectorRegistry? Connectors = null,
    SerdeRegistry? Serdes = null,
    ILoggerFactory? LoggerFactory = null,
    IMeterFactory? MeterFactory = null,
    TimeProvider? TimeProvider = null);
