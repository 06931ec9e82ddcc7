using LMCache.Controller.Worker;
using LMCache.Core.Diagnostics;
using LMCache.Engine;
using LMCache.Inference.Demo;
using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using LMCache.Inference.Models.Graph;
using LMCache.Inference.Models.Safetensors;
using LMCache.Inference.Templates.Jinja;
using LMCache.Serving;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;

namespace LMCache.Hosting;

/// <summary>
/// The one composition root of an LMCache serving process. Builds, in order, the model → the cache engine (every
/// built-in connector and serde registered, see <see cref="LMCacheBuiltIns"/>) → the controller worker (when
/// <c>enable_controller</c>) → the inference engine → the OpenAI HTTP server; <see cref="DisposeAsync"/> takes them
/// down in the reverse order. A failure while building disposes what was already built and rethrows.
/// </summary>
/// <remarks>
/// Two entry points, as Garnet's host has two constructors: <see cref="StartAsync(LMCacheServeArguments, ILoggerFactory, CancellationToken)"/>
/// from the configuration (file, <c>LMCACHE_*</c> environment) plus command-line options, as <c>lmcache serve</c>
/// uses it; and <see cref="StartAsync(LMCacheHostOptions, ILoggerFactory, CancellationToken)"/> from objects (an
/// already loaded model, a configuration object), for embedding and tests. They are static factories rather than
/// constructors because a failed start must await the disposal of what it built (the cache engine's tiers flush
/// asynchronously), which a constructor cannot.
/// </remarks>
public sealed partial class LMCacheHost : IAsyncDisposable
{
    /// <summary>The served model name of the built-in demo model.</summary>
    public const string DemoModelName = "lmcache-demo-llama";

    private readonly ILogger _logger;
    private LanguageModel? _model;
    private bool _ownsModel;
    private LMCacheEngine? _cache;
    private ControllerWorker? _controllerWorker;
    private InferenceEngine? _inference;
    private OpenAiServer? _server;
    private int _disposed;

    private LMCacheHost(ILogger logger) => _logger = logger;

    /// <summary>The model (owned by the host unless it was given in <see cref="LMCacheHostOptions.Model"/>).</summary>
    public LanguageModel Model => Built(_model);

    /// <summary>The cache engine.</summary>
    public LMCacheEngine Cache => Built(_cache);

    /// <summary>The controller worker; null unless the configuration says <c>enable_controller: true</c>. Like every component, not to be used after <see cref="DisposeAsync"/>.</summary>
    public ControllerWorker? ControllerWorker => _controllerWorker;

    /// <summary>The inference engine.</summary>
    public InferenceEngine Inference => Built(_inference);

    /// <summary>The HTTP server; null when <see cref="LMCacheHostOptions.Server"/> was null.</summary>
    public OpenAiServer? Server => _server;

    /// <summary>
    /// Builds and starts a host from the configuration (the file named by <see cref="LMCacheServeArguments.ConfigFile"/>
    /// or <c>LMCACHE_CONFIG_FILE</c>, then <c>LMCACHE_*</c> variables) and the command-line options of <c>lmcache serve</c>.
    /// Configuration warnings (unknown keys, keys without effect) are logged.
    /// </summary>
    /// <exception cref="LMCacheConfigurationException">The configuration is invalid.</exception>
    /// <exception cref="LMCacheException">The model folder is missing or cannot be loaded.</exception>
    public static Task<LMCacheHost> StartAsync(LMCacheServeArguments arguments, ILoggerFactory loggerFactory, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        var options = LMCacheHostOptions.FromArguments(arguments, out var configuration);
        var logger = loggerFactory.CreateLogger<LMCacheHost>();
        foreach (var warning in configuration.Warnings)
        {
            HostingLog.ConfigurationWarning(logger, warning);
        }
        return StartAsync(options, loggerFactory, cancellationToken);
    }

    /// <summary>Builds and starts a host from objects (embedding, tests).</summary>
    /// <exception cref="LMCacheConfigurationException">The configuration cannot work (unknown serde or scheme, a chunk larger than the CPU tier…).</exception>
    /// <exception cref="LMCacheException">The model folder is missing or cannot be loaded.</exception>
    public static async Task<LMCacheHost> StartAsync(LMCacheHostOptions options, ILoggerFactory loggerFactory, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        var host = new LMCacheHost(loggerFactory.CreateLogger<LMCacheHost>());
        try
        {
            host._ownsModel = options.Model is null;
            host._model = options.Model ?? LoadModel(options, host._logger);
            host._cache = new LMCacheEngineBuilder(options.Cache, InferenceEngine.CreateKeyScope(host._model), host._model.Decoder.Layout)
                .WithLoggerFactory(loggerFactory)
                .WithMeterFactory(options.MeterFactory)
                .AddRemoteConnectors(options.RemoteConnectors)
                .Build();
            host._controllerWorker = Controller.Worker.ControllerWorker.StartIfEnabled(host._cache, loggerFactory);
            host._inference = new InferenceEngine(host._model, host._cache, options.Inference, loggerFactory.CreateLogger<InferenceEngine>());
            if (options.Server is not null)
            {
                host._server = await OpenAiServer.StartAsync(host._inference, options.Server, loggerFactory, cancellationToken).ConfigureAwait(false);
            }
            return host;
        }
        catch (Exception ex)
        {
            HostingLog.StartFailed(host._logger, ex);
            try
            {
                await host.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception disposeError)
            {
                // Already logged per component by DisposeAsync; the caller needs the reason the start failed.
                HostingLog.DisposeAfterFailedStartFailed(host._logger, disposeError);
            }
            throw;
        }
    }

    /// <summary>
    /// Stops the HTTP server, waits for the inference engine's requests, stops the controller worker (it deregisters),
    /// flushes and closes the cache engine's tiers and, when the host loaded it, releases the model. Every component
    /// is disposed even when an earlier one fails; then a single failure is rethrown, several as an
    /// <see cref="AggregateException"/>.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        List<Exception>? failures = null;
        async ValueTask StopAsync(IAsyncDisposable? component, string name)
        {
            if (component is null)
            {
                return;
            }
            try
            {
                await component.DisposeAsync().ConfigureAwait(false);
                HostingLog.Disposed(_logger, name);
            }
            catch (Exception ex)
            {
                HostingLog.DisposeFailed(_logger, name, ex);
                (failures ??= []).Add(ex);
            }
        }

        await StopAsync(_server, "OpenAI server").ConfigureAwait(false);
        await StopAsync(_inference, "inference engine").ConfigureAwait(false);
        await StopAsync(_controllerWorker, "controller worker").ConfigureAwait(false);
        await StopAsync(_cache, "cache engine").ConfigureAwait(false);
        if (_ownsModel && _model is not null)
        {
            _model.Dispose();
            HostingLog.Disposed(_logger, "model");
        }
        if (failures is { Count: 1 })
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failures[0]);
        }
        if (failures is { Count: > 1 })
        {
            throw new AggregateException("Several components of the LMCache host failed to stop.", failures);
        }
    }

    private static LanguageModel LoadModel(LMCacheHostOptions options, ILogger logger)
    {
        var folder = options.ModelFolder;
        var name = options.ServedModelName;
        if (folder is null)
        {
            HostingLog.UsingDemoModel(logger);
            folder = DemoModel.EnsureCreated(progress: step => HostingLog.DemoModelProgress(logger, step));
            name ??= DemoModelName;
        }
        else if (!Directory.Exists(folder))
        {
            throw new LMCacheException($"The model folder '{folder}' does not exist.");
        }
        try
        {
            return LanguageModel.Load(folder, new ModelLoadOptions
            {
                ServedName = name,
                IntraOpThreads = options.IntraOpThreads,
                Quantization = options.Quantization,
                Progress = line => HostingLog.ModelLoadProgress(logger, line),
            });
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or NotSupportedException or JinjaException or OnnxRuntimeException
            or SafetensorsException or ModelArchitectureException)
        {
            throw new LMCacheException($"Cannot load the model in '{folder}': {ex.Message}", ex);
        }
    }

    private T Built<T>(T? component) where T : class
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return component ?? throw new InvalidOperationException("The LMCache host has not built this component.");
    }
}
