using System.CommandLine;
using System.Text.Json;
using LMCache.Cli.Commands;

// The commands write to the process console and read LMCACHE_* variables: run the tests of this assembly one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace LMCache.Cli.Tests;

/// <summary>
/// Runs the lmcache command tree in-process, as Program.cs does, capturing what it prints; <c>bench …</c> runs the
/// benchmark executable's commands (bench/LMCache.Bench), as the <c>./lmcache</c> wrapper does.
/// </summary>
internal static class CliRunner
{
    public static Task<(int ExitCode, string Output, string Error)> RunAsync(params string[] args) =>
        RunUntilStoppedAsync(args, TestContext.Current.CancellationToken);

    /// <summary>Runs a command that prints JSON, asserts that it succeeded and returns the parsed root.</summary>
    public static async Task<JsonElement> RunJsonAsync(params string[] args)
    {
        var (exitCode, output, error) = await RunAsync(args);
        Assert.True(exitCode == 0, $"lmcache {string.Join(' ', args)} exited {exitCode}:\n{output}\n{error}");
        using var json = JsonDocument.Parse(output);
        return json.RootElement.Clone();
    }

    /// <summary>Runs until the command ends or <paramref name="cancellationToken"/> stops it (as Ctrl+C would).</summary>
    public static async Task<(int ExitCode, string Output, string Error)> RunUntilStoppedAsync(string[] args, CancellationToken cancellationToken)
    {
        var root = new RootCommand("lmcache (test)");
        foreach (var command in CommandCatalog.All())
        {
            root.Subcommands.Add(command);
        }
        root.Subcommands.Add(Bench.BenchCommands.Create());
        var originalOut = Console.Out;
        var originalError = Console.Error;
        using var output = new StringWriter();
        using var error = new StringWriter();
        Console.SetOut(output);
        Console.SetError(error);
        try
        {
            var exitCode = await root.Parse(args).InvokeAsync(new InvocationConfiguration { Output = output, Error = error }, cancellationToken);
            return (exitCode, output.ToString(), error.ToString());
        }
        finally
        {
            Console.SetOut(originalOut);
            Console.SetError(originalError);
        }
    }

    /// <summary>The repository root (the folder holding LMCache.slnx), searched upward from the test assembly.</summary>
    public static string? RepositoryRoot()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "LMCache.slnx")))
            {
                return folder.FullName;
            }
        }
        return null;
    }
}
