using System.Diagnostics.Metrics;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Storage.Diagnostics;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.Remote;
using LMCache.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Storage.Tests;

public sealed class RemoteContractTests
{
    private sealed class ManualClock : TimeProvider
    {
        public long Now { get; set; }

        public override long TimestampFrequency => 1000;   // milliseconds

        public override long GetTimestamp() => Now;
    }

    [Fact]
    public void The_breaker_opens_at_the_threshold_and_backs_off_exponentially_up_to_the_maximum()
    {
        var clock = new ManualClock();
        var breaker = new CircuitBreaker(3, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5), clock);
        Assert.False(breaker.RecordFailure());
        Assert.False(breaker.RecordFailure());
        Assert.False(breaker.IsOpen);
        Assert.True(breaker.RecordFailure());
        Assert.True(breaker.IsOpen);
        Assert.False(breaker.RecordFailure());   // already open: no second "opened"
        Assert.False(breaker.IsProbeDue);
        clock.Now += 999;
        Assert.False(breaker.IsProbeDue);
        clock.Now += 1;
        Assert.True(breaker.IsProbeDue);

        breaker.RecordProbeFailure();            // 2 s
        Assert.Equal(TimeSpan.FromSeconds(2), breaker.Cooldown);
        clock.Now += 1999;
        Assert.False(breaker.IsProbeDue);
        clock.Now += 1;
        Assert.True(breaker.IsProbeDue);
        breaker.RecordProbeFailure();            // 4 s
        breaker.RecordProbeFailure();            // 8 s, capped at 5 s
        Assert.Equal(TimeSpan.FromSeconds(5), breaker.Cooldown);

        Assert.True(breaker.RecordSuccess());
        Assert.False(breaker.IsOpen);
        Assert.False(breaker.IsProbeDue);
        Assert.Equal(TimeSpan.FromSeconds(1), breaker.Cooldown);
        Assert.Equal(0, breaker.ConsecutiveFailures);
        Assert.False(breaker.RecordSuccess());   // already closed
    }

    [Fact]
    public void Remote_options_come_from_the_engine_configuration()
    {
        var options = new LMCacheEngineOptions
        {
            BlockingTimeoutSecs = 3,
            ExtraConfig = new Dictionary<string, object?>
            {
                ["remote_put_queue_size"] = 8L,
                ["remote_put_concurrency"] = "4",
                ["remote_failure_threshold"] = 5.0,
                ["ping_interval"] = 12L,
                ["ping_timeout"] = 0.5,
            },
        };
        var remote = RemoteBackendOptions.FromEngineOptions(options);
        Assert.Equal(TimeSpan.FromSeconds(3), remote.Timeout);
        Assert.Equal(8, remote.PutQueueCapacity);
        Assert.Equal(4, remote.PutConcurrency);
        Assert.Equal(5, remote.FailureThreshold);
        Assert.Equal(TimeSpan.FromSeconds(12), remote.MaxCooldown);
        Assert.Equal(TimeSpan.FromSeconds(0.5), remote.PingTimeout);

        var defaults = RemoteBackendOptions.FromEngineOptions(new LMCacheEngineOptions());
        Assert.Equal(TimeSpan.FromSeconds(10), defaults.Timeout);
        Assert.Equal(64, defaults.PutQueueCapacity);
        Assert.Equal(2, defaults.PutConcurrency);
        Assert.Equal(3, defaults.FailureThreshold);
        Assert.Equal(TimeSpan.FromSeconds(30), defaults.MaxCooldown);
        Assert.Equal(TimeSpan.FromSeconds(5), defaults.PingTimeout);

        var wrongType = new LMCacheEngineOptions { ExtraConfig = new Dictionary<string, object?> { ["remote_put_queue_size"] = "lots" } };
        Assert.Contains("remote_put_queue_size", Assert.Throws<LMCacheConfigurationException>(() => RemoteBackendOptions.FromEngineOptions(wrongType)).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0, 64, 2, 3)]
    [InlineData(1, 0, 2, 3)]
    [InlineData(1, 64, 0, 3)]
    [InlineData(1, 64, 2, 0)]
    public void Impossible_remote_options_are_refused(int timeoutSeconds, int queue, int concurrency, int threshold)
    {
        using var cpu = new LocalCpuBackend(1 << 20);
        var options = new RemoteBackendOptions
        {
            Timeout = TimeSpan.FromSeconds(timeoutSeconds),
            PutQueueCapacity = queue,
            PutConcurrency = concurrency,
            FailureThreshold = threshold,
        };
        Assert.Throws<LMCacheConfigurationException>(() => new RemoteBackend(new BlackholeConnector(), new Core.Serde.NaiveSerde(), cpu, options));
    }

    [Fact]
    public async Task The_registry_picks_connectors_by_scheme_and_names_the_known_ones()
    {
        var registry = new RemoteConnectorRegistry();
        var context = new RemoteConnectorContext(new LMCacheEngineOptions(), NullLoggerFactory.Instance);
        await using var blackhole = registry.Create("BlackHole://anything", context);
        Assert.IsType<BlackholeConnector>(blackhole);
        Assert.Equal(0, await blackhole.ExistsPrefixAsync(new[] { TestChunks.Key(1) }, TestContext.Current.CancellationToken));
        Assert.Equal("redis", RemoteConnectorRegistry.SchemeOf("Redis://h:1"));
        var unknown = Assert.Throws<LMCacheConfigurationException>(() => registry.Create("redis://h:6379", context));
        Assert.Contains("'redis://'", unknown.Message, StringComparison.Ordinal);
        Assert.Contains("blackhole://", unknown.Message, StringComparison.Ordinal);
        Assert.Throws<LMCacheConfigurationException>(() => RemoteConnectorRegistry.SchemeOf("no-scheme"));
    }

    [Fact]
    public async Task Tier_counters_are_published_on_the_storage_meter_tagged_by_tier()
    {
        using var meterFactory = new RecordingMeterFactory();
        using var metrics = new StorageMetrics(meterFactory);
        var cpu = new LocalCpuBackend(1 << 20);
        metrics.Register(cpu.Statistics);
        var chunk = TestChunks.Create(cpu, 1);
        cpu.SubmitPut(TestChunks.Key(1), chunk);
        chunk.Release();
        (await cpu.GetAsync(TestChunks.Key(1), TestContext.Current.CancellationToken))!.Release();
        Assert.Null(await cpu.GetAsync(TestChunks.Key(2), TestContext.Current.CancellationToken));
        Assert.Equal(0.5, cpu.Statistics.HitRate);

        var seen = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (meterFactory.Created.Contains(instrument.Meter))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag is { Key: "tier", Value: LocalCpuBackend.BackendName })
                {
                    seen[instrument.Name] = value;
                }
            }
        });
        listener.Start();
        listener.RecordObservableInstruments();

        Assert.Equal(1, seen["lmcache.storage.hits"]);
        Assert.Equal(1, seen["lmcache.storage.misses"]);
        Assert.Equal(1, seen["lmcache.storage.puts"]);
        Assert.Equal(1, seen["lmcache.storage.entries"]);
        Assert.Equal(16 * 512, seen["lmcache.storage.used_bytes"]);
        Assert.Equal(16 * 512, seen["lmcache.storage.bytes_read"]);
        Assert.Equal(1 << 20, seen["lmcache.storage.capacity_bytes"]);
        Assert.Equal(0, seen["lmcache.storage.evictions"]);
        cpu.Dispose();
        Assert.Equal(0, cpu.OutstandingObjects);
    }

    /// <summary>Hands out meters and remembers them, so the listener hears only this test's instruments.</summary>
    private sealed class RecordingMeterFactory : IMeterFactory
    {
        public List<Meter> Created { get; } = [];

        public Meter Create(MeterOptions options)
        {
            var meter = new Meter(options);
            Created.Add(meter);
            return meter;
        }

        public void Dispose() => Created.ForEach(m => m.Dispose());
    }
}
