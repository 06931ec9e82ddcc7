using System.CommandLine;
using LMCache.Cli.Commands;

// The lmcache executable only parses arguments and wires libraries together; every command lives in Commands/.
var root = new RootCommand("LMCache.NET: a KV-cache layer for LLM serving (CPU, disk and remote tiers).");
foreach (var command in CommandCatalog.All())
{
    root.Subcommands.Add(command);
}
return await root.Parse(args).InvokeAsync();
