using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Core.Serde;
using LMCache.Storage.Remote;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Connectors.Redis.Tests;

/// <summary>
/// The remote backend over a real Redis that is absent at start, killed mid-run, or frozen: every request returns (a
/// miss) within the timeout, nothing throws, and service resumes by itself when Redis is back.
/// </summary>
[IntegrationTest]
public sealed class OutageTests
{
    private const double TimeoutSeconds = 1.5;

    // The backend bounds every call by its timeout; this guard only catches a hang (it is not a performance assertion).
    private static readonly TimeSpan s_callGuard = TimeSpan.FromSeconds(TimeoutSeconds + 15);

    [Fact]
    public async Task Redis_down_at_start_is_a_miss_and_the_backend_recovers_when_it_starts()
    {
        TestSupport.RequireRedis();
        var port = RedisProcess.FreePort();
        using var allocator = TestSupport.Allocator();
        var connector = TestSupport.Connect($"redis://127.0.0.1:{port}", options: TestSupport.Options(TimeoutSeconds));
        await using var backend = new RemoteBackend(connector, new NaiveSerde(), allocator, TestSupport.BackendOptions(TimeoutSeconds));
        var key = TestChunks.Key(1, "down-at-start");

        await AssertMissesAsync(backend, key, allocator);

        await using var server = await RedisProcess.StartServerAsync(port: port, cancellationToken: TestContext.Current.CancellationToken);
        await EventuallyRoundTripsAsync(backend, allocator, "down-at-start");
    }

    [Fact]
    public async Task Redis_killed_mid_run_is_a_miss_and_the_backend_recovers_when_it_restarts()
    {
        TestSupport.RequireRedis();
        await using var server = await RedisProcess.StartServerAsync(cancellationToken: TestContext.Current.CancellationToken);
        using var allocator = TestSupport.Allocator();
        await using var backend = new RemoteBackend(
            await TestSupport.ConnectedAsync($"redis://127.0.0.1:{server.Port}", options: TestSupport.Options(TimeoutSeconds)),
            new NaiveSerde(), allocator, TestSupport.BackendOptions(TimeoutSeconds));
        await EventuallyRoundTripsAsync(backend, allocator, "killed-before");

        server.Kill();
        var key = TestChunks.Key(2, "killed");
        await AssertMissesAsync(backend, key, allocator);
        await TestSupport.EventuallyAsync(async () =>
        {
            await backend.ContainsPrefixAsync(new[] { key }, TestContext.Current.CancellationToken);
            return backend.IsBypassed;
        }, "the circuit opens while Redis is dead");

        await server.StartAsync(TestContext.Current.CancellationToken);
        await EventuallyRoundTripsAsync(backend, allocator, "killed-after");
        Assert.False(backend.IsBypassed);
        Assert.Equal(0, await WaitForNoOutstandingAsync(allocator));
    }

    [Fact]
    public async Task Redis_frozen_with_SIGSTOP_is_a_miss_within_the_timeout_and_recovers_on_SIGCONT()
    {
        TestSupport.RequireRedis();
        var ct = TestContext.Current.CancellationToken;
        await using var server = await RedisProcess.StartServerAsync(cancellationToken: TestContext.Current.CancellationToken);
        using var allocator = TestSupport.Allocator();
        await using var backend = new RemoteBackend(
            await TestSupport.ConnectedAsync($"redis://127.0.0.1:{server.Port}", options: TestSupport.Options(TimeoutSeconds)),
            new NaiveSerde(), allocator, TestSupport.BackendOptions(TimeoutSeconds));
        var stored = TestChunks.Key(3, "frozen");
        using (var chunk = TestChunks.Create(allocator, 3))
        {
            backend.SubmitPut(stored, chunk);
        }
        await backend.FlushAsync(ct);

        await server.PauseAsync();
        await AssertMissesAsync(backend, stored, allocator);

        await server.ResumeAsync();
        await TestSupport.EventuallyAsync(async () =>
        {
            using var read = await backend.GetAsync(stored, ct);
            return read is not null && TestChunks.Matches(read, 3);
        }, "the entry stored before the freeze is served again");
        await EventuallyRoundTripsAsync(backend, allocator, "frozen-after");
    }

    /// <summary>Lookup, read and put against a dead remote: all return, all miss, nothing throws or leaks.</summary>
    private static async Task AssertMissesAsync(RemoteBackend backend, CacheEngineKey key, IMemoryAllocator allocator)
    {
        var ct = TestContext.Current.CancellationToken;
        for (var round = 0; round < 4; round++)
        {
            Assert.Equal(0, await backend.ContainsPrefixAsync(new[] { key }, ct).AsTask().WaitAsync(s_callGuard, ct));
            Assert.Null(await backend.GetAsync(key, ct).AsTask().WaitAsync(s_callGuard, ct));
            using var chunk = TestChunks.Create(allocator, round);
            backend.SubmitPut(TestChunks.Key(100 + round, "dead"), chunk); // never blocks: queued or dropped
        }
    }

    private static async Task EventuallyRoundTripsAsync(RemoteBackend backend, IMemoryAllocator allocator, string model)
    {
        var ct = TestContext.Current.CancellationToken;
        var attempt = 0;
        await TestSupport.EventuallyAsync(async () =>
        {
            var key = TestChunks.Key(attempt, model);
            var seed = 7000 + attempt++;
            using (var chunk = TestChunks.Create(allocator, seed))
            {
                backend.SubmitPut(key, chunk);
            }
            await backend.FlushAsync(ct);
            using var read = await backend.GetAsync(key, ct);
            Assert.True(read is null || TestChunks.Matches(read, seed), "wrong bytes returned");
            return read is not null;
        }, $"a put and a read round-trip ({model})");
    }

    private static async Task<int> WaitForNoOutstandingAsync(IMemoryAllocator allocator)
    {
        // Reads abandoned at a timeout release their objects when the late answer arrives; give them that moment.
        await TestSupport.EventuallyAsync(() => Task.FromResult(allocator.OutstandingObjects == 0), "no leaked objects", TimeSpan.FromSeconds(30));
        return allocator.OutstandingObjects;
    }
}
