using System.CommandLine;
using System.Globalization;
using LMCache.Server;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Bench;

/// <summary>
/// <c>lmcache-bench lm-memory-server --max-size GiB</c> (hidden): an lm:// server on 127.0.0.1 and a free port in a
/// process of its own, so <c>bench lm</c> can read that process's resident size while it writes 4 × the capacity. It
/// prints the same one line as <c>lmcache server</c> (<c>lmcache server: listening on lm://HOST:PORT</c>) and runs until
/// it is killed. The bench starts this executable rather than the <c>lmcache</c> CLI, which it cannot assume is built.
/// </summary>
internal static class LmMemoryServer
{
    /// <summary>The command's name.</summary>
    public const string Name = "lm-memory-server";

    public static Command Create()
    {
        var maxSize = new Option<double>("--max-size") { Description = "Capacity in GiB.", DefaultValueFactory = _ => 1.0 };
        var command = new Command(Name, "An lm:// server process on 127.0.0.1 for the memory measurement of bench lm.") { maxSize };
        command.Hidden = true;
        command.SetAction(async (parse, cancellationToken) =>
        {
            var options = new LmServerOptions
            {
                Host = "127.0.0.1",
                Port = 0,
                CapacityBytes = (long)(parse.GetValue(maxSize) * LmServerOptions.GiB),
            };
            var server = new LmServer(options, NullLoggerFactory.Instance);
            await using (server.ConfigureAwait(false))
            {
                var endpoint = await server.StartAsync(cancellationToken).ConfigureAwait(false);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"lmcache server: listening on lm://{endpoint}"));
                try
                {
                    await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // Killed or Ctrl+C: stop.
                }
            }
            return 0;
        });
        return command;
    }
}
