namespace LMCache.Core.Configuration;

/// <summary>Where an effective configuration value came from, in increasing precedence.</summary>
public enum ConfigSource
{
    /// <summary>The built-in default.</summary>
    Default,
    /// <summary>The YAML/JSON file named by <c>LMCACHE_CONFIG_FILE</c> or given explicitly.</summary>
    File,
    /// <summary>An <c>LMCACHE_*</c> environment variable.</summary>
    Environment,
    /// <summary>A programmatic override (command-line flag, embedding code, <c>lmcache.*</c> extra config).</summary>
    Override,
}

/// <summary>One effective value and its origin.</summary>
/// <param name="Key">Configuration key (snake_case, as in the original).</param>
/// <param name="Value">The converted value (null when unset).</param>
/// <param name="Source">Where it came from.</param>
/// <param name="Origin">A human-readable origin: the file path, the variable name, or "default".</param>
public sealed record ConfigEntry(string Key, object? Value, ConfigSource Source, string Origin);
