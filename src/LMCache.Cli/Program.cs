using System.CommandLine;
using LMCache.Cli.Commands;

// The lmcache executable only parses arguments and calls libraries (LMCache.Hosting builds what serve and demo run);
// every command lives in Commands/. `./lmcache bench …` runs the separate benchmark executable (bench/LMCache.Bench).
var root = new RootCommand("LMCache.NET: a KV-cache layer for LLM serving (CPU, disk and remote tiers). Benchmarks: ./lmcache bench --help.");
foreach (var command in CommandCatalog.All())
{
    root.Subcommands.Add(command);
}
return await root.Parse(args).InvokeAsync();
