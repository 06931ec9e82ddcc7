using System.CommandLine;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using LMCache.Core.Diagnostics;
using LMCache.Server;

namespace LMCache.Cli.Commands;

/// <summary>
/// <c>lmcache server HOST PORT [DEVICE]</c> (also <c>./lmcache_server HOST PORT [DEVICE]</c>): the <c>lm://</c> cache
/// server, wire-compatible with the original's <c>lmcache_server</c>.
/// </summary>
internal static class ServerCommand
{
    public static Command Create()
    {
        var host = new Argument<string>("host") { Description = "Address or name to bind (only that address is bound), e.g. localhost or 0.0.0.0." };
        var port = new Argument<int>("port") { Description = "TCP port, e.g. 65432 (0 picks a free one and prints it)." };
        var device = new Argument<string>("device")
        {
            Description = "Where values are kept; 'cpu' is the only device (as in the original).",
            Arity = ArgumentArity.ZeroOrOne,
            DefaultValueFactory = _ => "cpu",
        };
        var maxSize = new Option<double>("--max-size")
        {
            Description = "Capacity in GiB; least recently used entries are evicted beyond it. Default 4.",
            DefaultValueFactory = _ => 4.0,
        };
        var maxPayload = new Option<double>("--max-payload")
        {
            Description = "Largest PUT payload in GiB; a larger one closes that connection. Default 1 (never above --max-size).",
            DefaultValueFactory = _ => 1.0,
        };
        var maxConnections = new Option<int>("--max-connections")
        {
            Description = "Connections served at once. Default 1024.",
            DefaultValueFactory = _ => 1024,
        };
        var maxConnectionsPerClient = new Option<int>("--max-connections-per-client")
        {
            Description = "Connections one client address may hold at once. Default 256.",
            DefaultValueFactory = _ => 256,
        };
        var idleTimeout = new Option<double>("--idle-timeout")
        {
            Description = "Seconds a started request header may take to complete, and a connection without a complete request may stay open while the server is busy; 0 turns it off. Default 10.",
            DefaultValueFactory = _ => 10.0,
        };
        var diskPath = new Option<string?>("--disk-path") { Description = "Spill evicted entries to this folder (atomic checksummed files, kept across restarts). Needs --disk-size. Off by default." };
        var diskSize = new Option<double>("--disk-size") { Description = "Size limit of --disk-path in GiB." };
        var metricsPort = new Option<int?>("--metrics-port") { Description = "Serve Prometheus text on http://HOST:PORT/metrics. Off by default." };
        var token = new Option<string?>("--auth-token")
        {
            Description = "Require this shared token (AUTH, our extension; original engines cannot send it). Also LMCACHE_SERVER_TOKEN. Off by default.",
        };
        var tlsCert = new Option<FileInfo?>("--tls-cert") { Description = "PEM certificate: serve TLS (our extension). Needs --tls-key. Off by default." };
        var tlsKey = new Option<FileInfo?>("--tls-key") { Description = "PEM private key of --tls-cert." };

        var command = new Command("server", "Run the lm:// cache server (drop-in for the original's lmcache_server).")
        {
            host, port, device, maxSize, maxPayload, maxConnections, maxConnectionsPerClient, idleTimeout, diskPath, diskSize, metricsPort, token, tlsCert, tlsKey,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var deviceName = parse.GetValue(device) ?? "cpu";
            if (!string.Equals(deviceName, "cpu", StringComparison.Ordinal))
            {
                await Console.Error.WriteLineAsync($"error: unsupported device '{deviceName}': the lm:// server keeps values in CPU memory; the only device is 'cpu'.").ConfigureAwait(false);
                return 2;
            }
            var certFile = parse.GetValue(tlsCert);
            var keyFile = parse.GetValue(tlsKey);
            if ((certFile is null) != (keyFile is null))
            {
                await Console.Error.WriteLineAsync("error: --tls-cert and --tls-key go together.").ConfigureAwait(false);
                return 2;
            }
            using var certificate = certFile is null ? null : X509Certificate2.CreateFromPemFile(certFile.FullName, keyFile!.FullName);
            var options = new LmServerOptions
            {
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                CapacityBytes = (long)(parse.GetValue(maxSize) * LmServerOptions.GiB),
                MaxPayloadBytes = (long)(parse.GetValue(maxPayload) * LmServerOptions.GiB),
                MaxConnections = parse.GetValue(maxConnections),
                MaxConnectionsPerClient = parse.GetValue(maxConnectionsPerClient),
                IdleTimeout = parse.GetValue(idleTimeout) == 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(parse.GetValue(idleTimeout)),
                SpillFolder = parse.GetValue(diskPath),
                SpillCapacityBytes = (long)(parse.GetValue(diskSize) * LmServerOptions.GiB),
                MetricsPort = parse.GetValue(metricsPort),
                AuthToken = parse.GetValue(token) ?? NullIfEmpty(Environment.GetEnvironmentVariable("LMCACHE_SERVER_TOKEN")),
                TlsCertificate = certificate,
            };
            using var loggerFactory = CommonOptions.CreateLoggerFactory();
            LmServer server;
            try
            {
                server = new LmServer(options, loggerFactory);
            }
            catch (LMCacheConfigurationException ex)
            {
                await Console.Error.WriteLineAsync($"error: {ex.Message}").ConfigureAwait(false);
                return 2;
            }
            await using (server.ConfigureAwait(false))
            {
                try
                {
                    var endpoint = await server.StartAsync(cancellationToken).ConfigureAwait(false);
                    // One machine-readable line on stdout (benchmarks and scripts read the port from it).
                    Console.WriteLine($"lmcache server: listening on lm://{endpoint}" +
                        (server.MetricsEndpoint is { } metrics ? $", metrics on http://{metrics}/metrics" : string.Empty));
                }
                catch (SocketException ex)
                {
                    await Console.Error.WriteLineAsync($"error: cannot listen on {options.Host}:{options.Port}: {ex.Message}").ConfigureAwait(false);
                    return 1;
                }
                try
                {
                    await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // Ctrl+C or SIGTERM: stop below.
                }
                await server.StopAsync(CancellationToken.None).ConfigureAwait(false);
            }
            return 0;
        });
        return command;
    }

    private static string? NullIfEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;
}
