using System.CommandLine;
using LMCache.Core.Diagnostics;
using LMCache.Hosting;
using Microsoft.Extensions.Logging;

namespace LMCache.Cli.Commands;

/// <summary>
/// <c>lmcache demo</c>: store → lookup → retrieve through the tiers with a synthetic model's KV cache, printing what
/// happened and checking every byte that comes back (<see cref="CacheDemo"/>).
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var configOption = CommonOptions.Config();
        var tokensOption = new Option<int>("--prompt-tokens") { Description = "Prompt length in tokens.", DefaultValueFactory = _ => 1000 };
        var keepOption = new Option<bool>("--keep") { Description = "Keep the demo's disk folder instead of deleting it." };
        var command = new Command("demo", "Run a short end-to-end demo: store a prompt's KV chunks, look them up, retrieve them from CPU, then from disk after a restart.")
        {
            configOption, tokensOption, keepOption,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (parse.GetValue(tokensOption) < 1)
            {
                Console.Error.WriteLine("error: --prompt-tokens must be at least 1.");
                return 2;
            }
            using var loggerFactory = CommonOptions.CreateLoggerFactory(LogLevel.Warning);
            try
            {
                var failures = await CacheDemo.RunAsync(parse.GetValue(configOption)?.FullName, parse.GetValue(tokensOption), parse.GetValue(keepOption), Console.Out, loggerFactory, cancellationToken);
                return failures == 0 ? 0 : 1;
            }
            catch (LMCacheConfigurationException ex)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
        });
        return command;
    }
}
