using System.CommandLine;
using LMCache.Core.Configuration;
using LMCache.Hosting;
using Microsoft.Extensions.Logging;

namespace LMCache.Cli.Commands;

/// <summary>Options and helpers shared by several commands.</summary>
internal static class CommonOptions
{
    /// <summary><c>--config FILE</c>: a YAML file, instead of the one named by LMCACHE_CONFIG_FILE.</summary>
    public static Option<FileInfo?> Config() => new("--config")
    {
        Description = "Configuration file (YAML or JSON); overrides LMCACHE_CONFIG_FILE. LMCACHE_* variables still apply on top.",
    };

    /// <summary><c>--json</c>: print one JSON object instead of text.</summary>
    public static Option<bool> Json() => new("--json") { Description = "Print one JSON object instead of text." };

    /// <summary>Loads the configuration, printing warnings to stderr.</summary>
    public static LoadedConfiguration LoadConfiguration(FileInfo? file, IReadOnlyDictionary<string, object?>? overrides = null, bool quiet = false)
    {
        var loaded = LMCacheConfigLoader.LoadFromProcess(file?.FullName, overrides);
        if (!quiet)
        {
            foreach (var warning in loaded.Warnings)
            {
                Console.Error.WriteLine($"warning: {warning}");
            }
        }
        return loaded;
    }

    /// <summary>A console logger factory at the level named by LMCACHE_LOG_LEVEL (default INFO), to stderr.</summary>
    public static ILoggerFactory CreateLoggerFactory(LogLevel? minimum = null) => ConsoleLogging.CreateLoggerFactory(minimum);
}
