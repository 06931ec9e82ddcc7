using LMCache.Core.Memory;
using LMCache.Storage.Remote;
using LMCache.Testing.Redis;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using StackExchange.Redis;

// Redis processes, failovers and timeouts compete for 2 cores: run test classes one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace LMCache.Connectors.Redis.Tests;

/// <summary>Helpers shared by the connector tests.</summary>
internal static class TestSupport
{
    /// <summary>A hang guard for awaits in tests (not a performance assertion).</summary>
    public static readonly TimeSpan Guard = TimeSpan.FromSeconds(60);

    public static void RequireRedis()
    {
        if (RedisProcess.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
    }

    public static RedisConnectorOptions Options(double timeoutSeconds = 3) => new()
    {
        OperationTimeout = TimeSpan.FromSeconds(timeoutSeconds),
        ConnectTimeout = TimeSpan.FromSeconds(Math.Min(timeoutSeconds, 2)),
        ReconnectInterval = TimeSpan.FromMilliseconds(250),
        KeepAliveSeconds = 1,
    };

    public static RedisConnector Connect(string url, FakeLogCollector? logs = null, RedisConnectorOptions? options = null) =>
        new(RedisUrl.Parse(url), options ?? Options(), logs is null ? null : new FakeLogger<RedisConnector>(logs));

    public static async Task<RedisConnector> ConnectedAsync(string url, FakeLogCollector? logs = null, RedisConnectorOptions? options = null)
    {
        var connector = Connect(url, logs, options);
        using var timeout = new CancellationTokenSource(Guard);
        await connector.WaitUntilConnectedAsync(timeout.Token);
        return connector;
    }

    public static RemoteBackendOptions BackendOptions(double timeoutSeconds = 2) => new()
    {
        Timeout = TimeSpan.FromSeconds(timeoutSeconds),
        PutQueueCapacity = 64,
        PutConcurrency = 2,
        FailureThreshold = 3,
        InitialCooldown = TimeSpan.FromMilliseconds(200),
        MaxCooldown = TimeSpan.FromSeconds(1),
        PingTimeout = TimeSpan.FromSeconds(timeoutSeconds),
    };

    /// <summary>A raw client for setting up and checking stored bytes directly.</summary>
    public static async Task<ConnectionMultiplexer> RawAsync(RedisProcess server, string? user = null, string? password = null)
    {
        var config = new ConfigurationOptions { AbortOnConnectFail = false, User = user, Password = password ?? server.Password, ConnectTimeout = 5000, SyncTimeout = 10000, AsyncTimeout = 10000 };
        config.EndPoints.Add("127.0.0.1", server.Port);
        return await ConnectionMultiplexer.ConnectAsync(config);
    }

    /// <summary>Polls <paramref name="condition"/> until true or the guard runs out (an event we cannot await directly).</summary>
    public static async Task EventuallyAsync(Func<Task<bool>> condition, string what, TimeSpan? within = null, Func<string>? context = null)
    {
        var deadline = DateTime.UtcNow + (within ?? Guard);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out waiting for: {what}{(context is null ? "" : Environment.NewLine + context())}");
            }
            await Task.Delay(100);
        }
    }

    public static NativeSlabAllocator Allocator(long bytes = 64L << 20) => new(bytes);

    public static int Hits(this FakeLogCollector logs, int eventId) => logs.GetSnapshot().Count(r => r.Id.Id == eventId);

    public static string Messages(this FakeLogCollector logs) => string.Join("\n", logs.GetSnapshot().Select(r => $"[{r.Level}] {r.Message}"));

    public static LogLevel Level(this FakeLogRecord record) => record.Level;
}
