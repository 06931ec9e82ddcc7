using LMCache.Core.Keys;
using LMCache.Core.Memory;

namespace LMCache.Storage.Remote;

/// <summary><c>blackhole://</c>: every lookup misses and every put is discarded (the original's test connector).</summary>
public sealed class BlackholeConnector : IRemoteConnector
{
    /// <inheritdoc />
    public string Description => "blackhole://";

    /// <inheritdoc />
    public RemoteCapabilities Capabilities => RemoteCapabilities.BatchedExists | RemoteCapabilities.BatchedGet | RemoteCapabilities.Ping;

    /// <inheritdoc />
    public ValueTask<int> ExistsPrefixAsync(ReadOnlyMemory<CacheEngineKey> keys, CancellationToken cancellationToken) => ValueTask.FromResult(0);

    /// <inheritdoc />
    public ValueTask<MemoryObject?> GetAsync(CacheEngineKey key, IMemoryAllocator allocator, CancellationToken cancellationToken) =>
        ValueTask.FromResult<MemoryObject?>(null);

    /// <inheritdoc />
    public ValueTask<int> GetPrefixAsync(
        ReadOnlyMemory<CacheEngineKey> keys, Memory<MemoryObject?> destination, IMemoryAllocator allocator, CancellationToken cancellationToken) =>
        ValueTask.FromResult(0);

    /// <inheritdoc />
    public ValueTask PutAsync(CacheEngineKey key, MemoryObject payload, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <inheritdoc />
    public ValueTask<bool> PingAsync(CancellationToken cancellationToken) => ValueTask.FromResult(true);

    /// <inheritdoc />
    public ValueTask<bool> RemoveAsync(CacheEngineKey key, CancellationToken cancellationToken) => ValueTask.FromResult(false);

    /// <inheritdoc />
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>Creates <see cref="BlackholeConnector"/>s.</summary>
public sealed class BlackholeConnectorFactory : IRemoteConnectorFactory
{
    /// <inheritdoc />
    public IReadOnlyList<string> Schemes { get; } = ["blackhole"];

    /// <inheritdoc />
    public IRemoteConnector Create(string url, RemoteConnectorContext context) => new BlackholeConnector();
}
