using System.Globalization;
using StackExchange.Redis;

namespace LMCache.Connectors.Redis;

/// <summary>
/// A separate connection to a connector's current masters that may run <c>INFO</c> (the connector's own connection
/// keeps admin commands off), for diagnostics such as <c>lmcache bench remote</c>. It opens no subscription connection,
/// so between two readings it adds one command of its own per master: the <c>INFO</c> that takes the second reading.
/// </summary>
public sealed class RedisInfoProbe : IAsyncDisposable
{
    private readonly ConnectionMultiplexer _multiplexer;

    internal RedisInfoProbe(ConnectionMultiplexer multiplexer) => _multiplexer = multiplexer;

    /// <summary>
    /// Runs <paramref name="operations"/> (which returns how many operations it made) and returns the masters' read
    /// events per operation (<c>INFO stats</c> <c>total_reads_processed</c>, summed, less the probe's own second
    /// <c>INFO</c>). Each read event is a server taking in one burst of commands, so this counts round trips: a
    /// pipelined batch is one per master it touches (two where the socket splits it), a command at a time one per
    /// command. Null, after the operations ran, when a master does not tell (an ACL without <c>INFO</c>, an old server).
    /// </summary>
    public async Task<double?> ReadEventsPerOperationAsync(Func<Task<int>> operations, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(operations);
        var before = await TrySumReadsAsync(cancellationToken).ConfigureAwait(false);
        var count = await operations().ConfigureAwait(false);
        var after = before is null ? null : await TrySumReadsAsync(cancellationToken).ConfigureAwait(false);
        return before is { } b && after is { } a && count > 0 ? (double)(a.Sum - b.Sum - a.Masters) / count : null;
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync() => _multiplexer.DisposeAsync();

    private async Task<(long Sum, int Masters)?> TrySumReadsAsync(CancellationToken cancellationToken)
    {
        long sum = 0;
        var masters = 0;
        try
        {
            foreach (var server in RedisConnection.DistinctMasters(_multiplexer))
            {
                var groups = await server.InfoAsync("stats").WaitAsync(cancellationToken).ConfigureAwait(false);
                var value = groups.SelectMany(group => group).FirstOrDefault(pair => pair.Key == "total_reads_processed").Value;
                if (!long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var number))
                {
                    return null;
                }
                sum += number;
                masters++;
            }
        }
        catch (RedisException)
        {
            return null;
        }
        return masters > 0 ? (sum, masters) : null;
    }
}
