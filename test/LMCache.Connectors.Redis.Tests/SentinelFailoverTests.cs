using System.Collections.Concurrent;
using LMCache.Core.Serde;
using LMCache.Storage.Remote;
using LMCache.Testing;
using LMCache.Testing.Redis;
using Microsoft.Extensions.Logging.Testing;

namespace LMCache.Connectors.Redis.Tests;

/// <summary>
/// Sentinel failover while a writer and a reader run through the remote backend: the master is killed (SIGKILL) or
/// frozen (SIGSTOP); the client follows the new master; every read returns the stored bytes or a miss, never wrong
/// bytes; no request fails or hangs.
/// </summary>
[IntegrationTest]
public sealed class SentinelFailoverTests
{
    [Fact]
    public Task Failover_after_the_master_is_killed_under_load() => RunFailoverAsync(freeze: false);

    [Fact]
    public Task Failover_after_the_master_is_frozen_under_load() => RunFailoverAsync(freeze: true);

    private static async Task RunFailoverAsync(bool freeze)
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        await using var topology = await RedisSentinelTopology.StartAsync(downAfterMilliseconds: 1500, failoverTimeoutMilliseconds: 5000);
        var logs = new FakeLogCollector();
        using var allocator = TestSupport.Allocator(256L << 20);
        var connector = await TestSupport.ConnectedAsync(topology.Url(), logs, TestSupport.Options(2));
        await using var backend = new RemoteBackend(connector, new NaiveSerde(), allocator, TestSupport.BackendOptions(2));
        var oldMaster = await topology.GetCurrentMasterAsync();
        Assert.Equal(oldMaster.Port, SentinelTests.PortOf(connector.CurrentMaster));

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var written = new ConcurrentBag<int>();
        var failures = new ConcurrentQueue<string>();
        long hits = 0, misses = 0, wrong = 0;
        var callGuard = TimeSpan.FromSeconds(20);

        var writer = Task.Run(async () =>
        {
            for (var i = 0; !stop.IsCancellationRequested; i++)
            {
                try
                {
                    using (var chunk = TestChunks.Create(allocator, i))
                    {
                        backend.SubmitPut(TestChunks.Key(i, "failover"), chunk);
                    }
                    written.Add(i);
                    await Task.Delay(10, stop.Token);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    break;
                }
                catch (Exception ex)
                {
                    failures.Enqueue("put: " + ex);
                }
            }
        }, ct);
        var reader = Task.Run(async () =>
        {
            var random = new Random(1);
            while (!stop.IsCancellationRequested)
            {
                var snapshot = written.ToArray();
                if (snapshot.Length == 0)
                {
                    await Task.Delay(10, ct);
                    continue;
                }
                var seed = snapshot[random.Next(snapshot.Length)];
                try
                {
                    using var read = await backend.GetAsync(TestChunks.Key(seed, "failover"), ct).AsTask().WaitAsync(callGuard, ct);
                    if (read is null)
                    {
                        Interlocked.Increment(ref misses);
                    }
                    else if (TestChunks.Matches(read, seed))
                    {
                        Interlocked.Increment(ref hits);
                    }
                    else
                    {
                        Interlocked.Increment(ref wrong);
                    }
                }
                catch (Exception ex)
                {
                    failures.Enqueue("get: " + ex);
                }
            }
        }, ct);

        await TestSupport.EventuallyAsync(() => Task.FromResult(Interlocked.Read(ref hits) > 20), "reads hit before the failover");
        if (freeze)
        {
            await oldMaster.PauseAsync();
        }
        else
        {
            oldMaster.Kill();
        }
        var newMaster = await topology.WaitForNewMasterAsync(oldMaster.Port, TimeSpan.FromSeconds(90));
        var hitsAtFailover = Interlocked.Read(ref hits);

        await TestSupport.EventuallyAsync(() => Task.FromResult(SentinelTests.PortOf(connector.CurrentMaster) == newMaster.Port),
            "the client follows the new master", context: logs.Messages);
        await TestSupport.EventuallyAsync(() => Task.FromResult(Interlocked.Read(ref hits) > hitsAtFailover + 20),
            "reads hit on the new master", context: logs.Messages);

        await stop.CancelAsync();
        await Task.WhenAll(writer, reader).WaitAsync(TimeSpan.FromSeconds(60), ct);
        await backend.FlushAsync(ct);

        Assert.Empty(failures);
        Assert.Equal(0, Interlocked.Read(ref wrong));
        Assert.True(Interlocked.Read(ref misses) >= 0);
        if (freeze)
        {
            await oldMaster.ResumeAsync();
        }
    }
}
