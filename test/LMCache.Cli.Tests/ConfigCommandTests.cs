using System.Text.Json;
using LMCache.Testing;

namespace LMCache.Cli.Tests;

[IntegrationTest]
public sealed class ConfigCommandTests
{
    [Fact]
    public async Task The_README_configuration_table_is_what_config_keys_prints()
    {
        var root = CliRunner.RepositoryRoot();
        if (root is null)
        {
            Assert.Skip("not run from a checkout: LMCache.slnx not found above the test assembly");
        }
        var (exitCode, output, _) = await CliRunner.RunAsync("config", "keys", "--markdown");
        Assert.Equal(0, exitCode);
        var rows = output.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.StartsWith('|')).ToList();
        Assert.True(rows.Count > 20, $"expected the full key table, got {rows.Count} rows");
        var readme = await File.ReadAllTextAsync(Path.Combine(root, "README.md"), TestContext.Current.CancellationToken);
        var missing = rows.Where(r => !readme.Contains(r, StringComparison.Ordinal)).ToList();
        Assert.True(missing.Count == 0,
            "README.md's configuration table is out of date; regenerate it with `./lmcache config keys --markdown`. Rows missing:\n"
            + string.Join('\n', missing));
    }

    [Fact]
    public async Task Config_show_names_the_source_of_each_value()
    {
        using var folder = new TempFolder("lmcache-cli-config");
        var file = Path.Combine(folder.Path, "lmcache.yaml");
        await File.WriteAllTextAsync(file, "chunk_size: 128\nmax_local_cpu_size: 2\n", TestContext.Current.CancellationToken);
        Environment.SetEnvironmentVariable("LMCACHE_REMOTE_SERDE", "cachegen");
        try
        {
            var (exitCode, output, _) = await CliRunner.RunAsync("config", "show", "--json", "--config", file);
            Assert.Equal(0, exitCode);
            using var json = JsonDocument.Parse(output);
            var keys = json.RootElement.GetProperty("keys");
            Assert.Equal(("128", "file"), Entry(keys, "chunk_size"));
            Assert.Equal(("2.0", "file"), Entry(keys, "max_local_cpu_size"));
            Assert.Equal(("cachegen", "environment"), Entry(keys, "remote_serde"));
            Assert.Equal(("true", "default"), Entry(keys, "local_cpu"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("LMCACHE_REMOTE_SERDE", null);
        }
    }

    [Fact]
    public async Task A_misspelt_key_is_reported_with_the_key_that_was_meant()
    {
        using var folder = new TempFolder("lmcache-cli-config");
        var file = Path.Combine(folder.Path, "lmcache.yaml");
        await File.WriteAllTextAsync(file, "chunk_sise: 128\n", TestContext.Current.CancellationToken);
        var (exitCode, output, error) = await CliRunner.RunAsync("config", "show", "--config", file);
        Assert.Equal(0, exitCode);   // unknown keys are warnings, as in the original
        Assert.Contains("Unknown configuration key 'chunk_sise'", error, StringComparison.Ordinal);
        Assert.Contains("Did you mean 'chunk_size'?", error, StringComparison.Ordinal);
        Assert.Contains("(default)", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_invalid_value_is_an_error_naming_the_key_and_the_value()
    {
        using var folder = new TempFolder("lmcache-cli-config");
        var file = Path.Combine(folder.Path, "lmcache.yaml");
        await File.WriteAllTextAsync(file, "chunk_size: -3\n", TestContext.Current.CancellationToken);
        var (exitCode, _, error) = await CliRunner.RunAsync("config", "show", "--config", file);
        Assert.NotEqual(0, exitCode);
        Assert.Contains("chunk_size", error, StringComparison.Ordinal);
        Assert.Contains("-3", error, StringComparison.Ordinal);
    }

    private static (string Value, string Source) Entry(JsonElement keys, string name)
    {
        var entry = keys.GetProperty(name);
        return (entry.GetProperty("value").GetString()!, entry.GetProperty("source").GetString()!);
    }
}
