using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Core.Serde;
using LMCache.Storage.LocalCpu;
using LMCache.Storage.Remote;
using LMCache.Testing;

namespace LMCache.Storage.Tests;

public sealed class RemoteBackendTests : IDisposable
{
    private readonly LocalCpuBackend _cpu = new(64 * 16 * 512);
    private readonly FaultInjectingConnector _connector = new();

    public void Dispose()
    {
        _connector.OpenGate();
        _cpu.Dispose();
    }

    private RemoteBackend Create(TimeSpan? timeout = null, int queue = 64, int concurrency = 2, int threshold = 3, TimeSpan? cooldown = null) =>
        new(_connector, new NaiveSerde(), _cpu, new RemoteBackendOptions
        {
            Timeout = timeout ?? TimeSpan.FromSeconds(20),
            PutQueueCapacity = queue,
            PutConcurrency = concurrency,
            FailureThreshold = threshold,
            InitialCooldown = cooldown ?? TimeSpan.FromMilliseconds(50),
            MaxCooldown = TimeSpan.FromMilliseconds(200),
            PingTimeout = TimeSpan.FromSeconds(5),
        });

    [Fact]
    public async Task Puts_reach_the_connector_and_reads_come_back_byte_exact()
    {
        await using (var remote = Create())
        {
            await PutAsync(remote, 1, 2, 3);
            Assert.Equal(3, _connector.Keys.Count);
            Assert.Equal(3, remote.Statistics.Puts);
            Assert.Equal(3, await remote.ContainsPrefixAsync(Keys(1, 2, 3, 4)));
            var destination = new MemoryObject?[4];
            Assert.Equal(3, await remote.GetPrefixAsync(Keys(1, 2, 3, 4), destination));
            for (var i = 0; i < 3; i++)
            {
                Assert.True(TestChunks.Matches(destination[i]!, i + 1));
                Assert.Equal(TestChunks.SmallChunk(), destination[i]!.Metadata);
                destination[i]!.Release();
            }
            Assert.Null(destination[3]);
            using var single = await remote.GetAsync(TestChunks.Key(2));
            Assert.NotNull(single);
            Assert.True(TestChunks.Matches(single, 2));
            Assert.IsNotAssignableFrom<IPinnableBackend>(remote);   // the remote tier cannot pin (as in the original)
            Assert.Equal(0, await remote.ClearAsync());
        }
        Assert.True(_connector.Disposed);
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task A_connector_that_never_answers_costs_a_miss_within_the_timeout()
    {
        _connector.Seed(TestChunks.Key(1), new byte[16 * 512], TestChunks.SmallChunk());
        _connector.ReadFault = ConnectorFault.Hang;
        await using var remote = Create(timeout: TimeSpan.FromMilliseconds(200), threshold: 100);

        Assert.Equal(0, await Eventually.CompletesAsync(remote.ContainsPrefixAsync(Keys(1)).AsTask(), "exists on a hung remote"));
        Assert.Null(await Eventually.CompletesAsync(remote.GetAsync(TestChunks.Key(1)).AsTask(), "get on a hung remote"));
        var destination = new MemoryObject?[2];
        Assert.Equal(0, await Eventually.CompletesAsync(remote.GetPrefixAsync(Keys(1, 2), destination).AsTask(), "prefix get on a hung remote"));
        Assert.All(destination, Assert.Null);
        Assert.False(await Eventually.CompletesAsync(remote.RemoveAsync(TestChunks.Key(1)).AsTask(), "remove on a hung remote"));
        Assert.Equal(4, remote.Statistics.Errors);
        Assert.Equal(3, remote.Statistics.Misses);
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task Exceptions_from_the_connector_are_misses()
    {
        _connector.Seed(TestChunks.Key(1), new byte[16 * 512], TestChunks.SmallChunk());
        _connector.ReadFault = ConnectorFault.Throw;
        await using var remote = Create(threshold: 100);
        Assert.Equal(0, await remote.ContainsPrefixAsync(Keys(1)));
        Assert.Null(await remote.GetAsync(TestChunks.Key(1)));
        Assert.False(await remote.RemoveAsync(TestChunks.Key(1)));
        Assert.Equal(3, remote.Statistics.Errors);
        Assert.False(remote.IsBypassed);

        _connector.ReadFault = ConnectorFault.None;   // positive control: the same entry reads once the remote recovers
        using var read = await remote.GetAsync(TestChunks.Key(1));
        Assert.NotNull(read);
    }

    [Fact]
    public async Task Failed_puts_are_dropped_and_counted_never_thrown()
    {
        _connector.PutFault = ConnectorFault.Throw;
        await using var remote = Create(threshold: 100);
        await PutAsync(remote, 1, 2);
        Assert.Equal(2, remote.Statistics.PutsDropped);
        Assert.Equal(0, remote.Statistics.Puts);
        Assert.Empty(_connector.Keys);
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task The_circuit_opens_after_N_failures_and_closes_after_a_successful_probe()
    {
        await PutWithHealthyRemoteAsync(1);
        _connector.ReadFault = ConnectorFault.Throw;
        _connector.Healthy = false;
        await using var remote = Create(threshold: 3);

        for (var i = 0; i < 2; i++)
        {
            Assert.Null(await remote.GetAsync(TestChunks.Key(1)));
            Assert.False(remote.IsBypassed);
        }
        Assert.Null(await remote.GetAsync(TestChunks.Key(1)));
        Assert.True(remote.IsBypassed);

        // Open: calls are misses without reaching the connector, and puts are dropped.
        var calls = _connector.GetCalls + _connector.ExistsCalls;
        _connector.ReadFault = ConnectorFault.None;
        Assert.Null(await remote.GetAsync(TestChunks.Key(1)));
        Assert.Equal(0, await remote.ContainsPrefixAsync(Keys(1)));
        Assert.Equal(calls, _connector.GetCalls + _connector.ExistsCalls);
        var chunk = TestChunks.Create(_cpu, 2);
        remote.SubmitPut(TestChunks.Key(2), chunk);
        chunk.Release();
        Assert.Equal(1, remote.Statistics.PutsDropped);
        Assert.Equal(0, remote.PendingPuts);

        // Failed probes keep it open; the first successful probe closes it.
        await Eventually.CompletesAsync(_connector.Pinged, "the health probe pings the open circuit");
        Assert.True(remote.IsBypassed);
        _connector.Healthy = true;
        await Eventually.TrueAsync(() => !remote.IsBypassed, "a successful probe closes the circuit");
        using var read = await remote.GetAsync(TestChunks.Key(1));
        Assert.NotNull(read);
        Assert.True(TestChunks.Matches(read, 1));
    }

    [Fact]
    public async Task A_success_resets_the_failure_count()
    {
        _connector.Seed(TestChunks.Key(1), new byte[16 * 512], TestChunks.SmallChunk());
        await using var remote = Create(threshold: 3);
        for (var round = 0; round < 3; round++)
        {
            _connector.ReadFault = ConnectorFault.Throw;
            Assert.Null(await remote.GetAsync(TestChunks.Key(1)));
            Assert.Null(await remote.GetAsync(TestChunks.Key(1)));
            _connector.ReadFault = ConnectorFault.None;
            using var read = await remote.GetAsync(TestChunks.Key(1));
            Assert.NotNull(read);
        }
        Assert.False(remote.IsBypassed);
    }

    [Fact]
    public async Task A_full_put_queue_drops_and_counts_the_put()
    {
        _connector.PutFault = ConnectorFault.Gate;
        await using var remote = Create(queue: 2, concurrency: 1);
        var first = TestChunks.Create(_cpu, 1);
        remote.SubmitPut(TestChunks.Key(1), first);
        first.Release();
        await Eventually.CompletesAsync(_connector.PutStarted, "the first put reaches the connector");

        foreach (var i in new[] { 2, 3, 4 })   // 2 and 3 fill the queue, 4 does not fit
        {
            var chunk = TestChunks.Create(_cpu, i);
            remote.SubmitPut(TestChunks.Key(i), chunk);
            chunk.Release();
        }
        Assert.Equal(1, remote.Statistics.PutsDropped);
        Assert.Equal(3, remote.PendingPuts);
        Assert.Equal(3, _cpu.OutstandingObjects);   // the queue holds a reference to each queued chunk

        _connector.OpenGate();
        await remote.FlushAsync();
        Assert.Equal(3, remote.Statistics.Puts);
        Assert.Equal([1, 2, 3], _connector.Keys.Select(k => Array.IndexOf(Keys(0, 1, 2, 3, 4), k)).Order());
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task A_put_of_a_key_already_in_flight_is_not_queued_twice()
    {
        _connector.PutFault = ConnectorFault.Gate;
        await using var remote = Create(concurrency: 1);
        var chunk = TestChunks.Create(_cpu, 1);
        remote.SubmitPut(TestChunks.Key(1), chunk);
        remote.SubmitPut(TestChunks.Key(1), chunk);
        Assert.Equal(1, remote.PendingPuts);
        chunk.Release();
        _connector.OpenGate();
        await remote.FlushAsync();
        Assert.Equal(1, _connector.PutCalls);
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task A_late_reply_after_a_timeout_is_released_not_leaked()
    {
        foreach (var i in new[] { 1, 2, 3 })
        {
            _connector.Seed(TestChunks.Key(i), new byte[16 * 512], TestChunks.SmallChunk());
        }
        _connector.ReadFault = ConnectorFault.GateIgnoringCancellation;
        await using var remote = Create(timeout: TimeSpan.FromMilliseconds(200), threshold: 100);
        var destination = new MemoryObject?[3];

        Assert.Equal(0, await Eventually.CompletesAsync(remote.GetPrefixAsync(Keys(1, 2, 3), destination).AsTask(), "a prefix get that times out"));
        Assert.All(destination, Assert.Null);

        _connector.OpenGate();   // the connector now fills its buffer with three chunks nobody waits for
        await Eventually.TrueAsync(() => _connector.CompletedLateGets == 1, "the late reply arrives");
        await Eventually.TrueAsync(() => _cpu.OutstandingObjects == 0, "the late chunks are released");
        Assert.All(destination, Assert.Null);
    }

    [Fact]
    public async Task A_put_that_times_out_keeps_its_payload_until_the_connector_lets_go()
    {
        _connector.PutFault = ConnectorFault.GateIgnoringCancellation;
        await using var remote = Create(timeout: TimeSpan.FromMilliseconds(200), threshold: 100);
        var chunk = TestChunks.Create(_cpu, 1);
        remote.SubmitPut(TestChunks.Key(1), chunk);
        chunk.Release();
        await Eventually.CompletesAsync(remote.FlushAsync(), "the put times out");
        Assert.Equal(1, remote.Statistics.PutsDropped);
        Assert.Equal(1, _cpu.OutstandingObjects);   // the connector may still be reading it
        _connector.OpenGate();
        await Eventually.TrueAsync(() => _cpu.OutstandingObjects == 0, "the payload is released when the send ends");
    }

    [Fact]
    public async Task Dispose_releases_queued_puts()
    {
        _connector.PutFault = ConnectorFault.Gate;
        var remote = Create(timeout: TimeSpan.FromMilliseconds(300), queue: 8, concurrency: 1, threshold: 100);
        foreach (var i in Enumerable.Range(0, 6))
        {
            var chunk = TestChunks.Create(_cpu, i);
            remote.SubmitPut(TestChunks.Key(i), chunk);
            chunk.Release();
        }
        Assert.Equal(6, _cpu.OutstandingObjects);
        await Eventually.CompletesAsync(remote.DisposeAsync().AsTask(), "dispose with puts stuck on the remote");
        await Eventually.TrueAsync(() => _cpu.OutstandingObjects == 0, "every queued chunk is released");
        Assert.True(_connector.Disposed);
        // A put after dispose is dropped, not queued.
        var late = TestChunks.Create(_cpu, 9);
        remote.SubmitPut(TestChunks.Key(9), late);
        late.Release();
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    [Fact]
    public async Task Entries_the_serde_cannot_decode_are_misses()
    {
        _connector.Seed(TestChunks.Key(1), new byte[100], MemoryObjectMetadata.Opaque(100));   // naive cannot decode opaque bytes
        _connector.Seed(TestChunks.Key(2), new byte[16 * 512], TestChunks.SmallChunk());
        await using var remote = Create();
        var destination = new MemoryObject?[2];
        Assert.Equal(0, await remote.GetPrefixAsync(Keys(1, 2), destination));
        Assert.All(destination, Assert.Null);
        Assert.Equal(1, remote.Statistics.Errors);
        Assert.Equal(0, _cpu.OutstandingObjects);
    }

    private async Task PutWithHealthyRemoteAsync(int index)
    {
        await using var seeder = new RemoteBackend(new ForwardingConnector(_connector), new NaiveSerde(), _cpu, new RemoteBackendOptions());
        await PutAsync(seeder, index);
    }

    private async Task PutAsync(RemoteBackend remote, params int[] indexes)
    {
        foreach (var i in indexes)
        {
            var chunk = TestChunks.Create(_cpu, i);
            remote.SubmitPut(TestChunks.Key(i), chunk);
            chunk.Release();
        }
        await remote.FlushAsync();
    }

    private static CacheEngineKey[] Keys(params int[] indexes) => [.. indexes.Select(i => TestChunks.Key(i))];

    /// <summary>Shares the fake's store with a second backend without letting that backend dispose it.</summary>
    private sealed class ForwardingConnector(FaultInjectingConnector inner) : IRemoteConnector
    {
        public string Description => inner.Description;
        public RemoteCapabilities Capabilities => inner.Capabilities;
        public ValueTask<int> ExistsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken) => inner.ExistsPrefixAsync(keys, cancellationToken);
        public ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, IMemoryAllocator allocator, CancellationToken cancellationToken) => inner.GetAsync(key, allocator, cancellationToken);
        public ValueTask<int> GetPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, IMemoryAllocator allocator, CancellationToken cancellationToken) =>
            inner.GetPrefixAsync(keys, destination, allocator, cancellationToken);
        public ValueTask PutAsync(CacheEngineKey key, MemoryObject payload, CancellationToken cancellationToken) => inner.PutAsync(key, payload, cancellationToken);
        public ValueTask<bool> PingAsync(CancellationToken cancellationToken) => inner.PingAsync(cancellationToken);
        public ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken) => inner.RemoveAsync(key, cancellationToken);
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
