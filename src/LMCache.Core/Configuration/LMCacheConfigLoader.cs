using System.Collections;
using System.Globalization;
using LMCache.Core.Diagnostics;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace LMCache.Core.Configuration;

/// <summary>The result of loading a configuration: the typed options, every effective value with its origin, and warnings.</summary>
public sealed class LoadedConfiguration
{
    internal LoadedConfiguration(LMCacheEngineOptions options, IReadOnlyList<ConfigEntry> entries, IReadOnlyList<string> warnings, string? filePath)
    {
        Options = options;
        Entries = entries;
        Warnings = warnings;
        FilePath = filePath;
    }

    /// <summary>The typed options.</summary>
    public LMCacheEngineOptions Options { get; }

    /// <summary>Every known key with its effective value and origin, in documentation order.</summary>
    public IReadOnlyList<ConfigEntry> Entries { get; }

    /// <summary>Warnings: unknown keys, deprecated aliases, keys without effect here, ignored variables.</summary>
    public IReadOnlyList<string> Warnings { get; }

    /// <summary>The configuration file that was read, if any.</summary>
    public string? FilePath { get; }
}

/// <summary>
/// Loads the engine configuration the way the original does, with stricter errors.
/// </summary>
/// <remarks>
/// <para>Precedence, lowest to highest: built-in defaults → the YAML (or JSON) file named by
/// <c>LMCACHE_CONFIG_FILE</c> or passed explicitly → <c>LMCACHE_*</c> environment variables → programmatic overrides
/// (command-line flags, embedding code). Environment variables override the file, as in current LMCache.</para>
/// <para>Unlike the original, a value that does not convert or validate fails the load with a
/// <see cref="LMCacheConfigurationException"/> naming the key, the value and what is allowed (all problems at once).
/// Unknown keys and unknown <c>LMCACHE_*</c> variables are warnings. <c>LMCACHE_USE_EXPERIMENTAL</c> is accepted and
/// not needed; <c>LMCACHE_LOG_LEVEL</c> must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; <c>LMCACHE_SIMD</c> one of
/// avx512, avx2, vector128, scalar.</para>
/// </remarks>
public static class LMCacheConfigLoader
{
    /// <summary>The variable naming the configuration file.</summary>
    public const string ConfigFileVariable = "LMCACHE_CONFIG_FILE";

    private static readonly HashSet<string> s_processVariables = new(StringComparer.Ordinal)
    {
        ConfigFileVariable, "LMCACHE_USE_EXPERIMENTAL", "LMCACHE_LOG_LEVEL", "LMCACHE_HOME", "LMCACHE_TRACK_USAGE",
        Simd.SimdPaths.Variable,
    };

    private static readonly string[] s_logLevels = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

    /// <summary>Loads from the process environment (and the file it names), plus optional overrides.</summary>
    public static LoadedConfiguration LoadFromProcess(string? explicitFile = null, IReadOnlyDictionary<string, object?>? overrides = null)
    {
        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            if (entry.Key is string name && entry.Value is string value)
            {
                environment[name] = value;
            }
        }
        return Load(explicitFile, environment, overrides);
    }

    /// <summary>Loads a configuration.</summary>
    /// <param name="explicitFile">A file to read instead of the one named by <c>LMCACHE_CONFIG_FILE</c>.</param>
    /// <param name="environment">The environment variables to read (only <c>LMCACHE_*</c> ones matter).</param>
    /// <param name="overrides">Programmatic overrides by key name; values may be typed or text.</param>
    /// <exception cref="LMCacheConfigurationException">A file or value is invalid.</exception>
    public static LoadedConfiguration Load(
        string? explicitFile,
        IReadOnlyDictionary<string, string> environment,
        IReadOnlyDictionary<string, object?>? overrides = null)
    {
        var values = new Dictionary<string, ConfigEntry>(StringComparer.Ordinal);
        foreach (var definition in ConfigKeys.All)
        {
            values[definition.Name] = new ConfigEntry(definition.Name, definition.DefaultValue, ConfigSource.Default, "default");
        }
        var problems = new List<string>();
        var warnings = new List<string>();

        var file = explicitFile;
        if (file is null && environment.TryGetValue(ConfigFileVariable, out var fromEnvironment) && fromEnvironment.Trim().Length > 0)
        {
            file = ConfigConverters.UnquoteEnvironmentValue(fromEnvironment);
        }
        if (file is not null)
        {
            foreach (var (key, raw) in ReadFile(file))
            {
                Apply(values, key, raw, ConfigSource.File, file, problems, warnings);
            }
        }

        foreach (var (name, rawValue) in environment.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            if (!name.StartsWith("LMCACHE_", StringComparison.Ordinal))
            {
                continue;
            }
            var value = ConfigConverters.UnquoteEnvironmentValue(rawValue);
            if (s_processVariables.Contains(name))
            {
                if (name == "LMCACHE_LOG_LEVEL" && !s_logLevels.Contains(value.ToUpperInvariant()))
                {
                    problems.Add($"LMCACHE_LOG_LEVEL = '{value}': must be one of {string.Join(", ", s_logLevels)}.");
                }
                if (name == Simd.SimdPaths.Variable && value.Length > 0 && !Simd.SimdPaths.TryParse(value, out _))
                {
                    problems.Add($"{name} = '{value}': must be one of avx512, avx2, vector128, scalar.");
                }
                continue;
            }
            var key = name["LMCACHE_".Length..].ToLowerInvariant();
            if (!ConfigKeys.TryGet(key, out _, out _))
            {
                warnings.Add($"Unknown environment variable {name}: no configuration key '{key}'; ignored.{DidYouMean(key, environment: true)}");
                continue;
            }
            Apply(values, key, value, ConfigSource.Environment, name, problems, warnings);
        }

        if (overrides is not null)
        {
            foreach (var (key, raw) in overrides)
            {
                var name = key.StartsWith("lmcache.", StringComparison.Ordinal) ? key["lmcache.".Length..] : key;
                Apply(values, name, raw, ConfigSource.Override, "override", problems, warnings);
            }
        }

        var options = new LMCacheEngineOptions();
        foreach (var definition in ConfigKeys.All)
        {
            var entry = values[definition.Name];
            if (definition.IsSupported)
            {
                definition.Apply!(options, entry.Value);
            }
            else if (entry.Source != ConfigSource.Default && !Equals(entry.Value, definition.DefaultValue))
            {
                warnings.Add($"Configuration key '{definition.Name}' ({entry.Origin}) is accepted for compatibility but has no effect in LMCache.NET.");
            }
        }
        ValidateCombination(options, problems, warnings);
        if (problems.Count > 0)
        {
            throw new LMCacheConfigurationException(problems);
        }
        return new LoadedConfiguration(options, [.. ConfigKeys.All.Select(d => values[d.Name])], warnings, file);
    }

    private static string DidYouMean(string key, bool environment = false) => ConfigKeys.Suggest(key) is { } suggestion
        ? environment ? $" Did you mean LMCACHE_{suggestion.ToUpperInvariant()}?" : $" Did you mean '{suggestion}'?"
        : "";

    private static void Apply(
        Dictionary<string, ConfigEntry> values, string key, object? raw, ConfigSource source, string origin, List<string> problems, List<string> warnings)
    {
        if (!ConfigKeys.TryGet(key, out var definition, out var viaAlias))
        {
            warnings.Add($"Unknown configuration key '{key}' ({origin}); ignored.{DidYouMean(key)}");
            return;
        }
        if (viaAlias)
        {
            warnings.Add($"Configuration key '{key}' ({origin}) is deprecated; use '{definition.Name}'.");
        }
        if (!definition.TryConvert(raw, out var value, out var error))
        {
            problems.Add($"{definition.Name} = '{ConfigKeyDefinition.Format(raw)}' ({origin}): {error}.");
            return;
        }
        values[definition.Name] = new ConfigEntry(definition.Name, value, source, origin);
    }

    private static void ValidateCombination(LMCacheEngineOptions options, List<string> problems, List<string> warnings)
    {
        if (options.EnableController)
        {
            if (options.ControllerPullUrl is null)
            {
                problems.Add("enable_controller = true requires controller_pull_url (host:port).");
            }
            if (options.ControllerReplyUrl is null)
            {
                problems.Add("enable_controller = true requires controller_reply_url (host:port).");
            }
            if (options.LMCacheWorkerPorts is not { Count: > 0 })
            {
                problems.Add("enable_controller = true requires a non-empty lmcache_worker_ports list.");
            }
        }
        if (options.LocalDisk is not null && options.MaxLocalDiskSizeGib <= 0)
        {
            warnings.Add($"local_disk is set to '{options.LocalDisk}' but max_local_disk_size is 0: the disk tier is off.");
        }
        if (options.MaxLocalDiskSizeGib > 0 && options.LocalDisk is null)
        {
            warnings.Add("max_local_disk_size is set but local_disk is not: the disk tier is off.");
        }
    }

    private static IEnumerable<KeyValuePair<string, object?>> ReadFile(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new LMCacheConfigurationException($"cannot read configuration file '{path}': {ex.Message}");
        }
        var stream = new YamlStream();
        var scanner = new Scanner(new StringReader(text));
        try
        {
            stream.Load(new Parser(scanner));
        }
        catch (YamlException ex)
        {
            throw new LMCacheConfigurationException(
                $"configuration file '{path}' is not valid YAML (line {ex.Start.Line}, column {ex.Start.Column}): {ex.InnerException?.Message ?? ex.Message}");
        }
        catch (InvalidOperationException ex)
        {
            // YamlDotNet's scanner throws this (not a YamlException) for some truncated input, e.g. an unclosed flow
            // sequence at the end of the file; the scanner's position is where it gave up.
            var position = scanner.CurrentPosition;
            throw new LMCacheConfigurationException(
                $"configuration file '{path}' is not valid YAML (line {position.Line}, column {position.Column}): unexpected end of input ({ex.Message})");
        }
        if (stream.Documents.Count == 0 || stream.Documents[0].RootNode is YamlScalarNode { Value: null or "" })
        {
            return [];
        }
        if (stream.Documents[0].RootNode is not YamlMappingNode root)
        {
            throw new LMCacheConfigurationException($"configuration file '{path}' must hold a mapping of keys to values at its top level.");
        }
        var result = new List<KeyValuePair<string, object?>>();
        foreach (var (keyNode, valueNode) in root.Children)
        {
            var key = (keyNode as YamlScalarNode)?.Value;
            if (key is null)
            {
                throw new LMCacheConfigurationException($"configuration file '{path}': every top-level key must be a plain string (line {keyNode.Start.Line}).");
            }
            result.Add(new KeyValuePair<string, object?>(key, ToObject(valueNode)));
        }
        return result;
    }

    /// <summary>
    /// Converts a YAML node to plain values with PyYAML's <c>safe_load</c> resolution of plain scalars (YAML 1.1:
    /// null, booleans including yes/no/on/off, integers, floats); quoted scalars stay strings.
    /// </summary>
    internal static object? ToObject(YamlNode node)
    {
        switch (node)
        {
            case YamlMappingNode mapping:
                var map = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var (k, v) in mapping.Children)
                {
                    map[(k as YamlScalarNode)?.Value ?? k.ToString()] = ToObject(v);
                }
                return (IReadOnlyDictionary<string, object?>)map;
            case YamlSequenceNode sequence:
                return sequence.Children.Select(ToObject).ToList();
            case YamlScalarNode scalar:
                var value = scalar.Value;
                if (scalar.Style is ScalarStyle.SingleQuoted or ScalarStyle.DoubleQuoted or ScalarStyle.Literal or ScalarStyle.Folded)
                {
                    return value;
                }
                if (value is null or "" or "~" or "null" or "Null" or "NULL")
                {
                    return null;
                }
                switch (value)
                {
                    case "true" or "True" or "TRUE" or "yes" or "Yes" or "YES" or "on" or "On" or "ON": return true;
                    case "false" or "False" or "FALSE" or "no" or "No" or "NO" or "off" or "Off" or "OFF": return false;
                }
                var digits = value.Replace("_", "", StringComparison.Ordinal);
                if (long.TryParse(digits, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var integer))
                {
                    return integer;
                }
                if (digits.Any(char.IsAsciiDigit) && double.TryParse(digits, NumberStyles.Float, CultureInfo.InvariantCulture, out var real))
                {
                    return real;
                }
                return value;
            default:
                return null;
        }
    }
}
