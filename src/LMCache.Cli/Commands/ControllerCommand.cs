using System.CommandLine;
using System.Text.Json;
using LMCache.Controller;
using LMCache.Core.Diagnostics;
using LMCache.Hosting;
using Microsoft.Extensions.Logging;

namespace LMCache.Cli.Commands;

/// <summary>
/// <c>lmcache controller</c>: the LMCache controller process (the original's <c>lmcache_controller</c>): HTTP API and
/// dashboard on <c>--host</c>:<c>--port</c>, worker sockets on <c>--monitor-ports</c>; <c>--demo-instances N</c> adds
/// <see cref="ControllerDemoInstances"/>.
/// </summary>
internal static class ControllerCommand
{
    public static Command Create()
    {
        var host = new Option<string>("--host") { Description = "Listen address of the HTTP API and, unless --monitor-host says otherwise, of the worker sockets. Anything but loopback needs --auth-token.", DefaultValueFactory = _ => "127.0.0.1" };
        var monitorHost = new Option<string?>("--monitor-host") { Description = "Listen address of the worker pull and reply sockets (default: --host; * for every interface)." };
        var authToken = new Option<string?>("--auth-token") { Description = "Shared token for mutating HTTP calls (Authorization: Bearer) and every worker message (extra_config.controller_auth_token); default $LMCACHE_CONTROLLER_TOKEN. Required when binding beyond loopback." };
        var requestTimeout = new Option<double>("--request-timeout") { Description = "Seconds a call to a worker may take before the HTTP call answers 504.", DefaultValueFactory = _ => 30 };
        var port = new Option<int>("--port") { Description = "HTTP port (API, /metrics and the dashboard at /).", DefaultValueFactory = _ => 9000 };
        var monitorPort = new Option<int?>("--monitor-port") { Description = "Pull-socket port only (deprecated in the original; prefer --monitor-ports)." };
        var monitorPorts = new Option<string?>("--monitor-ports") { Description = "JSON {\"pull\": 8300, \"reply\": 8400}: ports of the worker pull and reply sockets." };
        var workerTimeout = new Option<int>("--lmcache-worker-timeout") { Description = "Seconds without a heartbeat before a worker is inactive.", DefaultValueFactory = _ => 300 };
        var demoInstances = new Option<int>("--demo-instances") { Description = "Also run N in-process demo engine instances that register and serve synthetic prompts (to try the dashboard).", DefaultValueFactory = _ => 0 };
        var command = new Command("controller", "Run the LMCache controller: see and steer the KV caches of engine instances (HTTP API, Prometheus /metrics, web dashboard).")
        {
            host, port, monitorHost, monitorPort, monitorPorts, workerTimeout, authToken, requestTimeout, demoInstances,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var options = new ControllerOptions
            {
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                WorkerTimeout = TimeSpan.FromSeconds(parse.GetValue(workerTimeout)),
                MonitorHost = parse.GetValue(monitorHost),
                AuthToken = parse.GetValue(authToken) is { Length: > 0 } given ? given
                    : Environment.GetEnvironmentVariable(TokenVariable) is { Length: > 0 } fromEnvironment ? fromEnvironment : null,
                RequestTimeout = TimeSpan.FromSeconds(parse.GetValue(requestTimeout)),
            };
            if (parse.GetValue(requestTimeout) is not (> 0 and <= 3600))
            {
                Console.Error.WriteLine($"error: --request-timeout {parse.GetValue(requestTimeout)}: must be between 0 and 3600 seconds.");
                return 2;
            }
            if (parse.GetValue(monitorPort) is int pull)
            {
                options.PullPort = pull;
                options.ReplyPort = null;
            }
            if (parse.GetValue(monitorPorts) is string json && !TryApplyPorts(json, options, out var error))
            {
                Console.Error.WriteLine($"error: --monitor-ports {json}: {error}");
                return 2;
            }
            using var loggerFactory = CommonOptions.CreateLoggerFactory(LogLevel.Information);
            await using var controller = new LMCacheController(options, loggerFactory);
            try
            {
                await controller.StartAsync(cancellationToken);
            }
            catch (LMCacheConfigurationException ex)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
            Console.WriteLine($"LMCache controller: dashboard and API on {controller.HttpEndpoint}, worker pull socket on {controller.PullEndpoint}, " +
                $"reply socket on {controller.ReplyEndpoint ?? "none"}, auth token {(options.AuthToken is null ? "off (loopback only)" : "on")}. Ctrl+C stops.");
            await using var demos = await ControllerDemoInstances.StartAsync(parse.GetValue(demoInstances), controller.PullPort, loggerFactory, options.AuthToken);
            await controller.WaitForShutdownAsync(cancellationToken);
            return 0;
        });
        return command;
    }

    /// <summary>The environment variable that supplies <c>--auth-token</c> when the option is not given.</summary>
    internal const string TokenVariable = "LMCACHE_CONTROLLER_TOKEN";

    private static bool TryApplyPorts(string json, ControllerOptions options, out string error)
    {
        error = string.Empty;
        try
        {
            using var document = JsonDocument.Parse(json);
            if (document.RootElement.ValueKind != JsonValueKind.Object || !document.RootElement.TryGetProperty("pull", out var pull) || !pull.TryGetInt32(out var pullPort))
            {
                error = "expected a JSON object with an integer \"pull\" (and optionally \"reply\").";
                return false;
            }
            options.PullPort = pullPort;
            options.ReplyPort = document.RootElement.TryGetProperty("reply", out var reply) && reply.TryGetInt32(out var replyPort) ? replyPort : null;
            return true;
        }
        catch (JsonException ex)
        {
            error = ex.Message;
            return false;
        }
    }
}
