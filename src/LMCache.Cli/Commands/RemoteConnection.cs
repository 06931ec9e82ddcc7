using System.CommandLine;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Hosting;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Cli.Commands;

/// <summary>Opens a remote connector from <c>--remote-url</c> (or the configuration's <c>remote_url</c>) for the tools.</summary>
internal static class RemoteConnection
{
    /// <summary><c>--remote-url URL</c>.</summary>
    public static Option<string?> UrlOption() => new("--remote-url")
    {
        Description = "Remote store URL (redis://, rediss://, unix://, redis-sentinel://, redis-cluster://, valkey://); defaults to remote_url of the configuration.",
    };

    /// <summary>
    /// Resolves the URL, creates the connector and waits until it answers (at most <c>blocking_timeout_secs</c>, at
    /// least 10 s). Returns null after printing the reason to stderr.
    /// </summary>
    public static async Task<IRemoteConnector?> OpenAsync(string? url, FileInfo? configFile, CancellationToken cancellationToken, ILoggerFactory? loggerFactory = null, int? timeoutSeconds = null)
    {
        LMCacheEngineOptions options;
        try
        {
            options = CommonOptions.LoadConfiguration(configFile, quiet: true).Options;
        }
        catch (LMCacheConfigurationException ex)
        {
            await Console.Error.WriteLineAsync($"error: {ex.Message}");
            return null;
        }
        if (timeoutSeconds is { } seconds)
        {
            options.BlockingTimeoutSecs = seconds;
        }
        url ??= options.RemoteUrl;
        if (string.IsNullOrWhiteSpace(url))
        {
            await Console.Error.WriteLineAsync("error: no remote store: pass --remote-url URL or set remote_url in the configuration (LMCACHE_REMOTE_URL).");
            return null;
        }
        var timeout = TimeSpan.FromSeconds(Math.Max(10, options.BlockingTimeoutSecs));
        try
        {
            return await RemoteStoreConnection.OpenAsync(url, options, loggerFactory ?? NullLoggerFactory.Instance, timeout, cancellationToken);
        }
        catch (LMCacheException ex)
        {
            await Console.Error.WriteLineAsync($"error: {ex.Message}");
            return null;
        }
    }

    /// <summary>
    /// The keyspace tools of <paramref name="connector"/> (list, inspect, remove), or null — after printing why to
    /// stderr — when there is no connector or its store cannot be listed.
    /// </summary>
    public static IRemoteKeyspace? Keyspace(IRemoteConnector? connector)
    {
        if (connector is null)
        {
            return null;
        }
        if (connector is IRemoteKeyspace keyspace)
        {
            return keyspace;
        }
        Console.Error.WriteLine($"error: {connector.Description} cannot list, inspect or remove entries (the keys tools need a Redis, Sentinel or Cluster store).");
        return null;
    }
}
