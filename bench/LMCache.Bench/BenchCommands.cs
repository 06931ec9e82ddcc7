using System.CommandLine;

namespace LMCache.Bench;

/// <summary>
/// <c>lmcache bench TARGET</c> (the <c>./lmcache</c> wrapper runs this executable for <c>bench …</c>). Each target lives
/// in this project as a static class with <c>Create()</c>; list it here. Every benchmark prints what it measured beside
/// the baseline it measured in the same run.
/// </summary>
internal static class BenchCommands
{
    private const string Description = "Benchmarks that print what they measured beside a baseline measured in the same run.";

    /// <summary>The root command of the executable: <c>lmcache-bench TARGET</c>, as <c>./lmcache bench TARGET</c>.</summary>
    public static RootCommand CreateRoot()
    {
        var root = new RootCommand($"lmcache bench: {Description}");
        foreach (var target in Targets())
        {
            root.Subcommands.Add(target);
        }
        root.Subcommands.Add(LmMemoryServer.Create());   // hidden: the server process bench lm measures
        return root;
    }

    /// <summary>The same targets under a <c>bench</c> command, to run <c>bench …</c> in-process beside the CLI's commands (tests).</summary>
    public static Command Create()
    {
        var group = new Command("bench", Description);
        foreach (var target in Targets())
        {
            group.Subcommands.Add(target);
        }
        return group;
    }

    private static IEnumerable<Command> Targets()
    {
        yield return LmBench.Create();
        yield return StorageBench.Create();
        yield return RemoteBench.Create();
        yield return TtftBench.Create();
        yield return ServeBench.Create();
        yield return SerdeBench.Create();
        yield return EngineBench.Create();
        yield return MakeModelCommand.Create();
    }
}
