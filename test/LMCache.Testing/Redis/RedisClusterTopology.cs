namespace LMCache.Testing.Redis;

/// <summary>A three-master Redis Cluster (no replicas) on free loopback ports, created with <c>redis-cli --cluster create</c>.</summary>
public sealed class RedisClusterTopology : IAsyncDisposable
{
    private RedisClusterTopology(IReadOnlyList<RedisProcess> nodes) => Nodes = nodes;

    /// <summary>The three masters.</summary>
    public IReadOnlyList<RedisProcess> Nodes { get; }

    /// <summary>The <c>redis-cluster://</c> URL listing every node.</summary>
    public string Url => "redis-cluster://" + string.Join(',', Nodes.Select(n => n.HostPort));

    /// <summary>Starts three cluster-enabled servers, assigns all slots and waits until every node reports <c>cluster_state:ok</c>.</summary>
    public static async Task<RedisClusterTopology> StartAsync()
    {
        var nodes = new List<RedisProcess>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                nodes.Add(await RedisProcess.StartServerAsync(
                    ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]).ConfigureAwait(false));
            }
            await RedisProcess.RunCliAsync(nodes[0].Port, null,
                ["--cluster", "create", .. nodes.Select(n => n.HostPort), "--cluster-replicas", "0", "--cluster-yes"]).ConfigureAwait(false);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            foreach (var node in nodes)
            {
                while (!(await node.CliAsync("CLUSTER", "INFO").ConfigureAwait(false)).Contains("cluster_state:ok", StringComparison.Ordinal))
                {
                    if (DateTime.UtcNow > deadline)
                    {
                        throw new TimeoutException($"cluster did not reach cluster_state:ok: {node.ReadLog()}");
                    }
                    await Task.Delay(200).ConfigureAwait(false);
                }
            }
            return new RedisClusterTopology(nodes);
        }
        catch
        {
            foreach (var node in nodes)
            {
                await node.DisposeAsync().ConfigureAwait(false);
            }
            throw;
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        foreach (var node in Nodes)
        {
            await node.DisposeAsync().ConfigureAwait(false);
        }
    }
}
