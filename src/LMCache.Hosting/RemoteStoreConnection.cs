using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Storage.Remote;
using Microsoft.Extensions.Logging;

namespace LMCache.Hosting;

/// <summary>Opens a remote store by URL with the built-in connectors, for tools (<c>lmcache keys</c>, <c>bench remote</c>).</summary>
public static class RemoteStoreConnection
{
    /// <summary>
    /// Creates the connector for <paramref name="url"/> and waits until the store answers, at most
    /// <paramref name="timeout"/>. The caller disposes the connector.
    /// </summary>
    /// <exception cref="LMCacheConfigurationException">The URL is invalid or its scheme unknown.</exception>
    /// <exception cref="LMCacheException">The store did not answer within <paramref name="timeout"/> or refused the connection; the message says why.</exception>
    public static async Task<IRemoteConnector> OpenAsync(string url, LMCacheEngineOptions options, ILoggerFactory loggerFactory, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(url);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        var connector = LMCacheBuiltIns.CreateConnectorRegistry().Create(url, new RemoteConnectorContext(options, loggerFactory));
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        try
        {
            if (connector is IRemoteKeyspace keyspace)
            {
                await keyspace.WaitUntilConnectedAsync(limit.Token).ConfigureAwait(false);
            }
            else if (!await connector.PingAsync(limit.Token).ConfigureAwait(false))
            {
                throw new LMCacheException("the store did not answer a ping");
            }
            return connector;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            await connector.DisposeAsync().ConfigureAwait(false);
            var reason = ex is OperationCanceledException ? $"no answer within {timeout.TotalSeconds:0.#} s" : ex.Message;
            throw new LMCacheException($"cannot reach {connector.Description}: {reason}", ex);
        }
    }
}
