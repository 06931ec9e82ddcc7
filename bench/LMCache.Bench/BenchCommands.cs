using System.CommandLine;
using LMCache.Cli.Commands.Bench;

namespace LMCache.Cli.Commands;

/// <summary>
/// <c>lmcache bench TARGET</c>. Each target lives in <c>Commands/Bench/</c> as a static class with <c>Create()</c>;
/// list it here. Every benchmark prints what it measured beside the baseline it measured in the same run.
/// </summary>
internal static class BenchCommands
{
    public static Command Create()
    {
        var group = new Command("bench", "Benchmarks that print what they measured beside a baseline measured in the same run.");
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
        yield return SerdeBench.Create();
    }
}
