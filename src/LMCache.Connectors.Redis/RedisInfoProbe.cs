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
    /// Sums the integer field <paramref name="field"/> of <c>INFO <paramref name="section"/></c> over the masters; null
    /// when no master answers or one lacks the field (older servers).
    /// </summary>
    public async Task<(long Sum, int Masters)?> SumAsync(string section, string field, CancellationToken cancellationToken)
    {
        long sum = 0;
        var masters = 0;
        foreach (var server in RedisConnector.DistinctMasters(_multiplexer))
        {
            var groups = await server.InfoAsync(section).WaitAsync(cancellationToken).ConfigureAwait(false);
            var value = groups.SelectMany(group => group).FirstOrDefault(pair => pair.Key == field).Value;
            if (!long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var number))
            {
                return null;
            }
            sum += number;
            masters++;
        }
        return masters > 0 ? (sum, masters) : null;
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync() => _multiplexer.DisposeAsync();
}
