using System.Globalization;

namespace LMCache.Testing.Redis;

/// <summary>
/// The seed's Sentinel set-up on free loopback ports: a master, one replica, and three sentinels monitoring
/// <c>mymaster</c> with quorum 2 (short failure detection so failover tests stay quick).
/// </summary>
public sealed class RedisSentinelTopology : IAsyncDisposable
{
    private RedisSentinelTopology(RedisProcess master, RedisProcess replica, IReadOnlyList<RedisProcess> sentinels, string serviceName, string? password)
    {
        Master = master;
        Replica = replica;
        Sentinels = sentinels;
        ServiceName = serviceName;
        Password = password;
    }

    /// <summary>The server that started as master.</summary>
    public RedisProcess Master { get; }

    /// <summary>The server that started as replica.</summary>
    public RedisProcess Replica { get; }

    /// <summary>The three sentinels.</summary>
    public IReadOnlyList<RedisProcess> Sentinels { get; }

    /// <summary>The monitored service name.</summary>
    public string ServiceName { get; }

    /// <summary>The data servers' password, or null.</summary>
    public string? Password { get; }

    /// <summary>Both data servers.</summary>
    public IEnumerable<RedisProcess> Servers => [Master, Replica];

    /// <summary>The <c>redis-sentinel://</c> URL of this topology (with credentials when a password is set).</summary>
    public string Url(bool withServiceName = true) =>
        "redis-sentinel://" + (Password is null ? "" : $":{Password}@") + string.Join(',', Sentinels.Select(s => s.HostPort))
        + (withServiceName ? $"?service_name={ServiceName}" : "");

    /// <summary>Starts the topology and waits until every sentinel sees the replica and the two other sentinels.</summary>
    /// <param name="downAfterMilliseconds">Sentinel <c>down-after-milliseconds</c>.</param>
    /// <param name="failoverTimeoutMilliseconds">Sentinel <c>failover-timeout</c>.</param>
    /// <param name="password">requirepass/masterauth of the data servers (and <c>auth-pass</c> of the sentinels), or null.</param>
    /// <param name="serviceName">The monitored name.</param>
    public static async Task<RedisSentinelTopology> StartAsync(
        int downAfterMilliseconds = 1500, int failoverTimeoutMilliseconds = 5000, string? password = null, string serviceName = "mymaster")
    {
        var started = new List<RedisProcess>();
        try
        {
            var master = await RedisProcess.StartServerAsync(password: password).ConfigureAwait(false);
            started.Add(master);
            var replica = await RedisProcess.StartServerAsync(["--replicaof", "127.0.0.1", master.Port.ToString(CultureInfo.InvariantCulture)], password).ConfigureAwait(false);
            started.Add(replica);
            var config = $"sentinel monitor {serviceName} 127.0.0.1 {master.Port} 2\n" +
                         $"sentinel down-after-milliseconds {serviceName} {downAfterMilliseconds}\n" +
                         $"sentinel failover-timeout {serviceName} {failoverTimeoutMilliseconds}\n" +
                         $"sentinel parallel-syncs {serviceName} 1\n" +
                         (password is null ? "" : $"sentinel auth-pass {serviceName} {password}\n");
            var sentinels = new List<RedisProcess>();
            for (var i = 0; i < 3; i++)
            {
                var sentinel = await RedisProcess.StartSentinelAsync(null, config).ConfigureAwait(false);
                started.Add(sentinel);
                sentinels.Add(sentinel);
            }
            var topology = new RedisSentinelTopology(master, replica, sentinels, serviceName, password);
            await topology.WaitUntilSettledAsync(TimeSpan.FromSeconds(60)).ConfigureAwait(false);
            return topology;
        }
        catch
        {
            foreach (var process in started)
            {
                await process.DisposeAsync().ConfigureAwait(false);
            }
            throw;
        }
    }

    /// <summary>The master port as reported by the first sentinel that answers.</summary>
    public async Task<int?> GetMasterPortAsync()
    {
        foreach (var sentinel in Sentinels)
        {
            try
            {
                var lines = Lines(await sentinel.CliAsync("SENTINEL", "get-master-addr-by-name", ServiceName).ConfigureAwait(false));
                if (lines.Length >= 2 && int.TryParse(lines[1], CultureInfo.InvariantCulture, out var port))
                {
                    return port;
                }
            }
            catch (InvalidOperationException)
            {
                // Try the next sentinel.
            }
        }
        return null;
    }

    /// <summary>The data server currently master according to the sentinels.</summary>
    public async Task<RedisProcess> GetCurrentMasterAsync()
    {
        var port = await GetMasterPortAsync().ConfigureAwait(false);
        return Servers.FirstOrDefault(s => s.Port == port) ?? throw new InvalidOperationException($"sentinels report master port {port?.ToString(CultureInfo.InvariantCulture) ?? "none"}");
    }

    /// <summary>Waits until the sentinels report a master other than <paramref name="oldPort"/> and it accepts writes.</summary>
    public async Task<RedisProcess> WaitForNewMasterAsync(int oldPort, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            var port = await GetMasterPortAsync().ConfigureAwait(false);
            if (port is { } p && p != oldPort)
            {
                var server = Servers.First(s => s.Port == p);
                var role = await server.CliAsync("ROLE").ConfigureAwait(false);
                if (role.StartsWith("master", StringComparison.Ordinal))
                {
                    return server;
                }
            }
            await Task.Delay(200).ConfigureAwait(false);
        }
        throw new TimeoutException($"no failover away from port {oldPort} within {timeout}: {Sentinels[0].ReadLog()}");
    }

    /// <summary>Waits until each sentinel sees one replica and two other sentinels, and the replica's link is up.</summary>
    public async Task WaitUntilSettledAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var settled = true;
            foreach (var sentinel in Sentinels)
            {
                var fields = Fields(await sentinel.CliAsync("SENTINEL", "master", ServiceName).ConfigureAwait(false));
                if (fields.GetValueOrDefault("num-slaves") != "1" || fields.GetValueOrDefault("num-other-sentinels") != "2"
                    || fields.GetValueOrDefault("flags") != "master")
                {
                    settled = false;
                    break;
                }
            }
            if (settled)
            {
                var master = await GetCurrentMasterAsync().ConfigureAwait(false);
                var replica = Servers.First(s => s != master);
                var info = await replica.CliAsync("INFO", "replication").ConfigureAwait(false);
                settled = info.Contains("master_link_status:up", StringComparison.Ordinal);
            }
            if (settled)
            {
                return;
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"sentinel topology did not settle within {timeout}: {Sentinels[0].ReadLog()}");
            }
            await Task.Delay(200).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        foreach (var sentinel in Sentinels)
        {
            await sentinel.DisposeAsync().ConfigureAwait(false);
        }
        await Master.DisposeAsync().ConfigureAwait(false);
        await Replica.DisposeAsync().ConfigureAwait(false);
    }

    private static string[] Lines(string output) => output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static Dictionary<string, string> Fields(string output)
    {
        var lines = Lines(output);
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i + 1 < lines.Length; i += 2)
        {
            result[lines[i]] = lines[i + 1];
        }
        return result;
    }
}
