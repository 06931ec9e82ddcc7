using System.CommandLine;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Hosting;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Bench;

/// <summary>Options shared by several benchmarks, spelled as the CLI's.</summary>
internal static class BenchOptions
{
    /// <summary><c>--json</c>: print one JSON object instead of text.</summary>
    public static Option<bool> Json() => new("--json") { Description = "Print one JSON object instead of text." };

    /// <summary><c>--demo-model trained|random</c>: the built-in model a bench runs without <c>--model</c> (see <see cref="BuiltInModels.Parse"/>).</summary>
    public static Option<string> DemoModel()
    {
        var option = new Option<string>("--demo-model")
        {
            Description = "Built-in model without --model: 'trained' (lmcache-demo-coder) or 'random' (lmcache-demo-llama, random weights, bigger).",
            DefaultValueFactory = _ => "trained",
        };
        option.AcceptOnlyFromAmong("trained", "random");
        return option;
    }

    /// <summary><c>--config FILE</c>: a YAML file, instead of the one named by LMCACHE_CONFIG_FILE.</summary>
    public static Option<FileInfo?> Config() => new("--config")
    {
        Description = "Configuration file (YAML or JSON); overrides LMCACHE_CONFIG_FILE. LMCACHE_* variables still apply on top.",
    };

    /// <summary><c>--remote-url URL</c>.</summary>
    public static Option<string?> RemoteUrl() => new("--remote-url")
    {
        Description = "Remote store URL (redis://, rediss://, unix://, redis-sentinel://, redis-cluster://, valkey://); defaults to remote_url of the configuration.",
    };

    /// <summary>
    /// Opens the remote store at <paramref name="url"/> (or the configuration's <c>remote_url</c>) and waits until it
    /// answers, at most <paramref name="timeoutSeconds"/>. Returns null after printing the reason to stderr.
    /// </summary>
    public static async Task<IRemoteConnector?> OpenRemoteAsync(string? url, FileInfo? configFile, CancellationToken cancellationToken, int timeoutSeconds)
    {
        try
        {
            var options = LMCacheConfigLoader.LoadFromProcess(configFile?.FullName).Options;
            options.BlockingTimeoutSecs = timeoutSeconds;
            url ??= options.RemoteUrl;
            if (string.IsNullOrWhiteSpace(url))
            {
                await Console.Error.WriteLineAsync("error: no remote store: pass --remote-url URL or set remote_url in the configuration (LMCACHE_REMOTE_URL).");
                return null;
            }
            return await RemoteStoreConnection.OpenAsync(url, options, NullLoggerFactory.Instance, TimeSpan.FromSeconds(timeoutSeconds), cancellationToken);
        }
        catch (LMCacheException ex)
        {
            await Console.Error.WriteLineAsync($"error: {ex.Message}");
            return null;
        }
    }
}
