using System.Net.Http.Json;
using System.Text.Json.Nodes;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Cli.Tests;

[IntegrationTest]
public sealed class ControllerCommandTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]   // with a token, the demo worker must send it to be registered at all
    public async Task The_controller_takes_the_originals_monitor_ports_json_and_a_worker_registers_through_them(bool withToken)
    {
        var ct = TestContext.Current.CancellationToken;
        var httpPort = RedisProcess.FreePort();
        var pullPort = RedisProcess.FreePort();
        var replyPort = RedisProcess.FreePort();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var run = CliRunner.RunUntilStoppedAsync(
            ["controller", "--host", "127.0.0.1", "--port", $"{httpPort}", "--monitor-ports", $"{{\"pull\": {pullPort}, \"reply\": {replyPort}}}", "--demo-instances", "1",
                .. (withToken ? new[] { "--auth-token", "demo-token" } : [])],
            stop.Token);
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{httpPort}") };
            // The demo instance's worker pushes to the pull port and registers: it shows up as an active worker.
            JsonNode? info = null;
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
            while (DateTime.UtcNow < deadline && !run.IsCompleted)
            {
                try
                {
                    using var response = await http.PostAsJsonAsync("/query_worker_info", new { instance_id = "all" }, ct);
                    info = response.IsSuccessStatusCode ? JsonNode.Parse(await response.Content.ReadAsStringAsync(ct)) : null;
                    if (info?["worker_infos"]?.AsArray().Count > 0)
                    {
                        break;
                    }
                }
                catch (HttpRequestException)
                {
                    // Not listening yet.
                }
                await Task.Delay(250, ct);
            }
            Assert.False(run.IsCompleted, $"the controller exited early: {(run.IsCompleted ? (await run).Error : "")}");
            var worker = Assert.Single(info!["worker_infos"]!.AsArray())!;
            Assert.Equal("demo-instance-1", worker["instance_id"]!.GetValue<string>());
            Assert.Equal("active", worker["status"]!.GetValue<string>());
        }
        finally
        {
            await stop.CancelAsync();
        }
        var (exitCode, _, error) = await run;
        Assert.True(exitCode == 0, $"the controller did not stop cleanly on cancellation (exit {exitCode}): {error}");
    }

    [Fact]
    public async Task A_malformed_monitor_ports_value_is_a_clear_error()
    {
        var (exitCode, _, error) = await CliRunner.RunAsync("controller", "--host", "127.0.0.1", "--port", "0", "--monitor-ports", "{\"reply\": 8400}");
        Assert.NotEqual(0, exitCode);
        Assert.Contains("--monitor-ports", error, StringComparison.Ordinal);
        Assert.Contains("\"pull\"", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Binding_beyond_loopback_without_a_token_is_refused_at_start()
    {
        Assert.True(string.IsNullOrEmpty(Environment.GetEnvironmentVariable("LMCACHE_CONTROLLER_TOKEN")), "the test needs LMCACHE_CONTROLLER_TOKEN unset");
        var (exitCode, _, error) = await CliRunner.RunAsync("controller", "--host", "0.0.0.0", "--port", "0", "--monitor-ports", "{\"pull\": 0}");
        Assert.Equal(2, exitCode);
        Assert.Contains("--auth-token", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task By_default_every_socket_is_on_loopback_and_the_start_line_says_so()
    {
        var ct = TestContext.Current.CancellationToken;
        var httpPort = RedisProcess.FreePort();
        var pullPort = RedisProcess.FreePort();
        var replyPort = RedisProcess.FreePort();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var run = CliRunner.RunUntilStoppedAsync(
            ["controller", "--port", $"{httpPort}", "--monitor-ports", $"{{\"pull\": {pullPort}, \"reply\": {replyPort}}}"], stop.Token);
        try
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            var ports = new[] { httpPort, pullPort, replyPort };
            while (DateTime.UtcNow < deadline && !run.IsCompleted
                && !ports.All(p => System.Net.NetworkInformation.IPGlobalProperties.GetIPGlobalProperties().GetActiveTcpListeners().Any(l => l.Port == p)))
            {
                await Task.Delay(100, ct);
            }
            var listeners = System.Net.NetworkInformation.IPGlobalProperties.GetIPGlobalProperties().GetActiveTcpListeners();
            foreach (var port in ports)
            {
                var bound = listeners.Where(l => l.Port == port).ToList();
                Assert.NotEmpty(bound);
                Assert.All(bound, l => Assert.True(System.Net.IPAddress.IsLoopback(l.Address), $"port {port} listens on {l.Address}"));
            }
        }
        finally
        {
            await stop.CancelAsync();
        }
        var (exitCode, output, error) = await run;
        Assert.True(exitCode == 0, $"exit {exitCode}: {error}");
        Assert.Contains($"dashboard and API on http://127.0.0.1:{httpPort}, worker pull socket on tcp://127.0.0.1:{pullPort}, reply socket on tcp://127.0.0.1:{replyPort}", output, StringComparison.Ordinal);
    }
}
