using Microsoft.Extensions.Logging;

namespace LMCache.Hosting;

/// <summary>The console logging of LMCache processes (the CLI, the benchmarks): one line per message, to stderr.</summary>
public static class ConsoleLogging
{
    /// <summary>
    /// A logger factory writing to stderr at <paramref name="minimum"/>, or else at the level named by
    /// <c>LMCACHE_LOG_LEVEL</c> (<c>DEBUG</c>, <c>INFO</c> (default), <c>WARNING</c>, <c>ERROR</c>, <c>CRITICAL</c>, as the
    /// original). ASP.NET Core's own messages are kept to warnings.
    /// </summary>
    public static ILoggerFactory CreateLoggerFactory(LogLevel? minimum = null)
    {
        var level = minimum ?? LevelFromEnvironment();
        return LoggerFactory.Create(builder => builder
            .SetMinimumLevel(level)
            .AddFilter("Microsoft", LogLevel.Warning)
            .AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss.fff ";
            })
            .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));
    }

    /// <summary>The level named by <c>LMCACHE_LOG_LEVEL</c>; <see cref="LogLevel.Information"/> when unset or unknown.</summary>
    public static LogLevel LevelFromEnvironment() =>
        Environment.GetEnvironmentVariable("LMCACHE_LOG_LEVEL")?.Trim().ToUpperInvariant() switch
        {
            "DEBUG" => LogLevel.Debug,
            "WARNING" => LogLevel.Warning,
            "ERROR" => LogLevel.Error,
            "CRITICAL" => LogLevel.Critical,
            _ => LogLevel.Information,
        };
}
