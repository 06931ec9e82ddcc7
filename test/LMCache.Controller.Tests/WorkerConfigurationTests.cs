using LMCache.Controller.Worker;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Core.Keys;
using LMCache.Engine;
using LMCache.Testing;

namespace LMCache.Controller.Tests;

[IntegrationTest]
public sealed class WorkerConfigurationTests
{
    [Fact]
    public async Task The_originals_keys_start_a_worker_that_registers()
    {
        await using var cluster = await Cluster.StartAsync();
        var options = new LMCacheEngineOptions
        {
            ChunkSize = Instance.ChunkSize,
            MaxLocalCpuSizeGib = 0.01,
            EnableController = true,
            LMCacheInstanceId = "configured",
            ControllerPullUrl = $"127.0.0.1:{cluster.Controller.PullPort}",
            LMCacheWorkerHeartbeatDelayTime = 0,
            LMCacheWorkerHeartbeatTime = 1,
        };
        await using var engine = LMCacheEngine.Create(options, new KeyScope("vllm", "m"), Instance.Layout);
        await using var worker = ControllerWorker.StartIfEnabled(engine);
        Assert.NotNull(worker);
        Assert.True(worker.Port > 0);

        await Cluster.WaitUntilAsync(async () =>
        {
            var infos = await cluster.PostAsync("/query_worker_info", new { instance_id = "all" });
            return infos["worker_infos"]!.AsArray().Any(w => (string?)w!["instance_id"] == "configured" && (int)w["port"]! == worker.Port);
        }, "the configured worker registered");
    }

    [Fact]
    public async Task No_worker_without_enable_controller_and_a_clear_error_without_a_pull_url()
    {
        await using var engine = LMCacheEngine.Create(new LMCacheEngineOptions { MaxLocalCpuSizeGib = 0.01 }, new KeyScope("vllm", "m"), Instance.Layout);
        Assert.Null(ControllerWorker.StartIfEnabled(engine));

        var error = Assert.Throws<LMCacheConfigurationException>(() =>
            ControllerWorkerOptions.FromEngineOptions(new LMCacheEngineOptions { EnableController = true }, workerId: 0));
        Assert.Contains("controller_pull_url", error.Message, StringComparison.Ordinal);

        var ports = ControllerWorkerOptions.FromEngineOptions(
            new LMCacheEngineOptions { ControllerPullUrl = "10.0.0.1:8300", LMCacheWorkerPorts = [8500, 8501] }, workerId: 1);
        Assert.Equal(8501, ports.Port);
        Assert.Equal(TimeSpan.FromSeconds(10), ports.HeartbeatDelay);
        Assert.Null(ports.HeartbeatInterval);
        Assert.Equal("*", ports.BindHost);
        Assert.Equal("127.0.0.1", ControllerWorkerOptions.FromEngineOptions(new LMCacheEngineOptions { ControllerPullUrl = "127.0.0.1:8300" }, 0).BindHost);
    }
}
