using System.Collections.Concurrent;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.Remote;

namespace LMCache.Testing;

/// <summary>How a <see cref="FaultInjectingConnector"/> answers a call.</summary>
public enum ConnectorFault
{
    /// <summary>Answers from its in-memory store.</summary>
    None,
    /// <summary>Throws <see cref="IOException"/> (a broken connection).</summary>
    Throw,
    /// <summary>Never answers and ignores cancellation (a dead peer behind a black-holed route).</summary>
    Hang,
    /// <summary>Waits for <see cref="FaultInjectingConnector.OpenGate"/> (honouring cancellation), then answers normally.</summary>
    Gate,
    /// <summary>Waits for <see cref="FaultInjectingConnector.OpenGate"/> ignoring cancellation, then answers normally (a late result).</summary>
    GateIgnoringCancellation,
}

/// <summary>
/// An in-memory remote store with injectable faults, for unit tests of <see cref="RemoteBackend"/> (a fake only for
/// fault injection: the backend under test is real). Entries keep their bytes and metadata like a real connector, and
/// reads allocate from the allocator they are given, so leaks show up in that allocator's outstanding count.
/// </summary>
public sealed class FaultInjectingConnector : IRemoteConnector
{
    private readonly ConcurrentDictionary<CacheEngineKey, (byte[] Bytes, MemoryObjectMetadata Metadata)> _store = new();
    private TaskCompletionSource _gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _putStarted = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _getStarted = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _pinged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _gets, _exists, _puts, _pings, _completedLateGets;

    /// <summary>Fault of lookups and reads.</summary>
    public ConnectorFault ReadFault { get; set; }

    /// <summary>Fault of puts.</summary>
    public ConnectorFault PutFault { get; set; }

    /// <summary>What <see cref="PingAsync"/> answers.</summary>
    public bool Healthy { get; set; } = true;

    /// <summary>Calls of <see cref="GetAsync"/> and <see cref="GetPrefixAsync"/>.</summary>
    public int GetCalls => Volatile.Read(ref _gets);

    /// <summary>Calls of <see cref="ExistsPrefixAsync"/>.</summary>
    public int ExistsCalls => Volatile.Read(ref _exists);

    /// <summary>Calls of <see cref="PutAsync"/>.</summary>
    public int PutCalls => Volatile.Read(ref _puts);

    /// <summary>Calls of <see cref="PingAsync"/>.</summary>
    public int PingCalls => Volatile.Read(ref _pings);

    /// <summary>Reads that filled their buffer after waiting on the gate.</summary>
    public int CompletedLateGets => Volatile.Read(ref _completedLateGets);

    /// <summary>Completes when the first put reaches the connector.</summary>
    public Task PutStarted => _putStarted.Task;

    /// <summary>Completes when the first read reaches the connector.</summary>
    public Task GetStarted => _getStarted.Task;

    /// <summary>Completes when the first ping reaches the connector.</summary>
    public Task Pinged => _pinged.Task;

    /// <summary>Whether <see cref="DisposeAsync"/> ran.</summary>
    public bool Disposed { get; private set; }

    /// <summary>Keys stored so far.</summary>
    public ICollection<CacheEngineKey> Keys => _store.Keys;

    /// <inheritdoc />
    public string Description => "fault-injecting://test";

    /// <inheritdoc />
    public RemoteCapabilities Capabilities => RemoteCapabilities.BatchedExists | RemoteCapabilities.BatchedGet | RemoteCapabilities.Ping | RemoteCapabilities.Remove;

    /// <summary>Releases every call waiting on the gate (and later ones: the gate stays open until <see cref="CloseGate"/>).</summary>
    public void OpenGate() => _gate.TrySetResult();

    /// <summary>Makes later gated calls wait again.</summary>
    public void CloseGate() => _gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Stores an entry directly (bypassing the backend), e.g. to seed the remote.</summary>
    public void Seed(CacheEngineKey key, ReadOnlySpan<byte> bytes, MemoryObjectMetadata metadata) => _store[key] = (bytes.ToArray(), metadata);

    /// <inheritdoc />
    public async ValueTask<int> ExistsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _exists);
        await ApplyAsync(ReadFault, cancellationToken).ConfigureAwait(false);
        for (var i = 0; i < keys.Length; i++)
        {
            if (!_store.ContainsKey(keys.Span[i]))
            {
                return i;
            }
        }
        return keys.Length;
    }

    /// <inheritdoc />
    public async ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, IMemoryAllocator allocator, CancellationToken cancellationToken)
    {
        var one = new MemoryObject?[1];
        var count = await GetPrefixAsync(new[] { key }, one, allocator, cancellationToken).ConfigureAwait(false);
        return count == 1 ? one[0] : null;
    }

    /// <inheritdoc />
    public async ValueTask<int> GetPrefixAsync(
        ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, IMemoryAllocator allocator, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _gets);
        _getStarted.TrySetResult();
        var gated = ReadFault is ConnectorFault.Gate or ConnectorFault.GateIgnoringCancellation;
        await ApplyAsync(ReadFault, cancellationToken).ConfigureAwait(false);
        var count = 0;
        for (var i = 0; i < keys.Length; i++)
        {
            if (!_store.TryGetValue(keys.Span[i], out var entry) || !allocator.TryAllocate(entry.Metadata, out var memoryObject))
            {
                break;
            }
            entry.Bytes.CopyTo(memoryObject.Span);
            destination.Span[i] = memoryObject;
            count++;
        }
        if (gated)
        {
            Interlocked.Increment(ref _completedLateGets);
        }
        return count;
    }

    /// <inheritdoc />
    public async ValueTask PutAsync(CacheEngineKey key, MemoryObject payload, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _puts);
        _putStarted.TrySetResult();
        await ApplyAsync(PutFault, cancellationToken).ConfigureAwait(false);
        _store[key] = (payload.Span.ToArray(), payload.Metadata);
    }

    /// <inheritdoc />
    public ValueTask<bool> PingAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _pings);
        _pinged.TrySetResult();
        return ValueTask.FromResult(Healthy);
    }

    /// <inheritdoc />
    public async ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken)
    {
        await ApplyAsync(ReadFault, cancellationToken).ConfigureAwait(false);
        return _store.TryRemove(key, out _);
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        Disposed = true;
        return ValueTask.CompletedTask;
    }

    private Task ApplyAsync(ConnectorFault fault, CancellationToken cancellationToken) => fault switch
    {
        ConnectorFault.Throw => Task.FromException(new IOException("injected connection failure")),
        ConnectorFault.Hang => new TaskCompletionSource().Task,
        ConnectorFault.Gate => _gate.Task.WaitAsync(cancellationToken),
        ConnectorFault.GateIgnoringCancellation => _gate.Task,
        _ => Task.CompletedTask,
    };
}
