using System.CommandLine;
using System.Text.Json;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;

namespace LMCache.Cli.Commands;

/// <summary><c>lmcache config show</c> and <c>lmcache config keys</c>.</summary>
internal static class ConfigCommands
{
    public static Command Create()
    {
        var group = new Command("config", "Inspect the LMCache configuration.");

        var configOption = CommonOptions.Config();
        var jsonOption = CommonOptions.Json();
        var allOption = new Option<bool>("--all") { Description = "Also list the original's keys that have no effect here." };
        var show = new Command("show", "Print the effective configuration and where each value came from (default, file, environment, override).")
        {
            configOption, jsonOption, allOption,
        };
        show.SetAction(parse =>
        {
            LoadedConfiguration loaded;
            try
            {
                loaded = CommonOptions.LoadConfiguration(parse.GetValue(configOption));
            }
            catch (LMCacheConfigurationException ex)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
            var all = parse.GetValue(allOption);
            var entries = loaded.Entries.Where(e => all || IsSupported(e.Key)).ToList();
            if (parse.GetValue(jsonOption))
            {
                var json = entries.ToDictionary(e => e.Key, e => new { value = ConfigKeyDefinition.Format(e.Value), source = e.Source.ToString().ToLowerInvariant(), origin = e.Origin });
                Console.WriteLine(JsonSerializer.Serialize(new { config_file = loaded.FilePath, keys = json, warnings = loaded.Warnings }, s_jsonOptions));
                return 0;
            }
            Console.WriteLine(loaded.FilePath is null ? "# no configuration file (LMCACHE_CONFIG_FILE unset)" : $"# configuration file: {loaded.FilePath}");
            var width = entries.Max(e => e.Key.Length);
            foreach (var entry in entries)
            {
                var origin = entry.Source == ConfigSource.Default ? "default" : $"{entry.Source.ToString().ToLowerInvariant()}: {entry.Origin}";
                Console.WriteLine($"{entry.Key.PadRight(width)}  {ConfigKeyDefinition.Format(entry.Value),-28}  ({origin})");
            }
            return 0;
        });
        group.Subcommands.Add(show);

        var markdownOption = new Option<bool>("--markdown") { Description = "Print a Markdown table (the README's configuration reference is generated with this)." };
        var keys = new Command("keys", "List every configuration key with its type, default, environment variable and meaning.") { markdownOption };
        keys.SetAction(parse =>
        {
            if (parse.GetValue(markdownOption))
            {
                Console.WriteLine("| key | type | default | environment variable | meaning |");
                Console.WriteLine("| --- | --- | --- | --- | --- |");
                foreach (var definition in ConfigKeys.All.Where(d => d.IsSupported))
                {
                    Console.WriteLine($"| `{definition.Name}` | {definition.KindDescription} | `{ConfigKeyDefinition.Format(definition.DefaultValue)}` | `{definition.EnvironmentVariable}` | {definition.Description} |");
                }
                Console.WriteLine();
                Console.WriteLine("Accepted for compatibility with the original, without effect here (a warning names them when set): " +
                    string.Join(", ", ConfigKeys.All.Where(d => !d.IsSupported).Select(d => $"`{d.Name}`")) + ".");
                return 0;
            }
            foreach (var definition in ConfigKeys.All)
            {
                Console.WriteLine($"{definition.Name} ({definition.KindDescription}, default {ConfigKeyDefinition.Format(definition.DefaultValue)}, env {definition.EnvironmentVariable}){(definition.IsSupported ? "" : " [no effect]")}");
                Console.WriteLine($"    {definition.Description}");
            }
            return 0;
        });
        group.Subcommands.Add(keys);
        return group;
    }

    private static bool IsSupported(string key) => ConfigKeys.TryGet(key, out var definition, out _) && definition.IsSupported;

    private static readonly JsonSerializerOptions s_jsonOptions = new() { WriteIndented = true };
}
