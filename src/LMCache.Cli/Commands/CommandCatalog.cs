using System.CommandLine;

namespace LMCache.Cli.Commands;

/// <summary>
/// Every top-level command. To add one, write a static class with a <c>Create()</c> returning a
/// <see cref="Command"/> in this folder and list it here (one line). A command parses its options and calls a
/// library; the benchmarks are not here (bench/LMCache.Bench, which <c>./lmcache bench</c> runs).
/// </summary>
internal static class CommandCatalog
{
    public static IEnumerable<Command> All()
    {
        yield return DemoCommand.Create();
        yield return ConfigCommands.Create();
        yield return KeysCommands.Create();
        yield return ServerCommand.Create();
        yield return ServeCommand.Create();
        yield return ControllerCommand.Create();
    }
}
