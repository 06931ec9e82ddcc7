using System.Diagnostics.Metrics;
using LMCache.Core.Configuration;
using LMCache.Core.Keys;
using LMCache.Engine;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;

namespace LMCache.Hosting;

/// <summary>
/// Builds an <see cref="LMCacheEngine"/> with every built-in connector and serde registered (see
/// <see cref="LMCacheBuiltIns"/>): the way to create a cache engine outside <see cref="LMCacheHost"/>.
/// <see cref="AddRemoteConnector"/> adds a custom scheme (or replaces a built-in one).
/// </summary>
/// <example>
/// <code>
/// await using var cache = new LMCacheEngineBuilder(options, scope, layout).WithLoggerFactory(loggerFactory).Build();
/// </code>
/// </example>
public sealed class LMCacheEngineBuilder
{
    private readonly LMCacheEngineOptions _options;
    private readonly KeyScope _scope;
    private readonly KvLayout _layout;
    private readonly List<IRemoteConnectorFactory> _connectors = [];
    private ILoggerFactory? _loggerFactory;
    private IMeterFactory? _meterFactory;
    private TimeProvider? _timeProvider;

    /// <summary>Starts a builder for an engine with this configuration, key scope and KV layout.</summary>
    public LMCacheEngineBuilder(LMCacheEngineOptions options, KeyScope scope, KvLayout layout)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(scope);
        ArgumentNullException.ThrowIfNull(layout);
        _options = options;
        _scope = scope;
        _layout = layout;
    }

    /// <summary>Logging of the engine, its tiers, connectors and serdes. Defaults to none.</summary>
    public LMCacheEngineBuilder WithLoggerFactory(ILoggerFactory? loggerFactory)
    {
        _loggerFactory = loggerFactory;
        return this;
    }

    /// <summary>Meters of the engine and its tiers. Defaults to private meters.</summary>
    public LMCacheEngineBuilder WithMeterFactory(IMeterFactory? meterFactory)
    {
        _meterFactory = meterFactory;
        return this;
    }

    /// <summary>Clock of the remote circuit breaker. Defaults to the system clock.</summary>
    public LMCacheEngineBuilder WithTimeProvider(TimeProvider? timeProvider)
    {
        _timeProvider = timeProvider;
        return this;
    }

    /// <summary>Registers a connector factory for its schemes, after (and so over) the built-in ones.</summary>
    public LMCacheEngineBuilder AddRemoteConnector(IRemoteConnectorFactory factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        _connectors.Add(factory);
        return this;
    }

    /// <summary>Registers each of <paramref name="factories"/> (see <see cref="AddRemoteConnector"/>).</summary>
    public LMCacheEngineBuilder AddRemoteConnectors(IEnumerable<IRemoteConnectorFactory> factories)
    {
        ArgumentNullException.ThrowIfNull(factories);
        foreach (var factory in factories)
        {
            AddRemoteConnector(factory);
        }
        return this;
    }

    /// <summary>The services the engine is built with: the built-ins, the added connectors, logging, metrics and clock.</summary>
    public LMCacheEngineServices BuildServices()
    {
        var services = LMCacheBuiltIns.CreateServices(_loggerFactory, _meterFactory, _timeProvider);
        foreach (var factory in _connectors)
        {
            services.Connectors!.Add(factory);
        }
        return services;
    }

    /// <summary>Builds the engine and its tiers (see <see cref="LMCacheEngine.Create"/>).</summary>
    /// <exception cref="Core.Diagnostics.LMCacheConfigurationException">The configuration cannot work (unknown serde or scheme, unusable disk folder…).</exception>
    public LMCacheEngine Build() => LMCacheEngine.Create(_options, _scope, _layout, BuildServices());
}
