using LMCache.Testing.Redis;

namespace LMCache.Connectors.Redis.Tests;

/// <summary>
/// One real redis-server for a test class: the default user needs <see cref="DefaultPassword"/>, the ACL user
/// <see cref="User"/> has <see cref="UserPassword"/>, and it also listens on a unix socket.
/// </summary>
public sealed class RedisServerFixture : IAsyncLifetime
{
    public const string DefaultPassword = "defaultpw";
    public const string User = "alice";
    public const string UserPassword = "s3cret";

    private RedisProcess? _server;

    public RedisProcess Server => _server ?? throw new InvalidOperationException(RedisProcess.MissingReason ?? "not started");

    public string SocketPath => Path.Combine(Server.Folder, "redis.sock");

    public string Url => $"redis://:{DefaultPassword}@127.0.0.1:{Server.Port}";

    public async ValueTask InitializeAsync()
    {
        if (!RedisProcess.IsInstalled)
        {
            return;
        }
        _server = await RedisProcess.StartServerAsync(
            ["--user", User, "on", ">" + UserPassword, "~*", "&*", "+@all", "--unixsocket", Path.Combine("{dir}", "redis.sock"), "--unixsocketperm", "700"],
            password: DefaultPassword);
    }

    public async ValueTask DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }
}

/// <summary>A Sentinel topology (master, replica, three sentinels) whose data servers need a password.</summary>
public sealed class SentinelFixture : IAsyncLifetime
{
    public const string Password = "sentinel-data-pw";

    private RedisSentinelTopology? _topology;

    public RedisSentinelTopology Topology => _topology ?? throw new InvalidOperationException(RedisProcess.MissingReason ?? "not started");

    public async ValueTask InitializeAsync()
    {
        if (RedisProcess.IsInstalled)
        {
            _topology = await RedisSentinelTopology.StartAsync(password: Password);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_topology is not null)
        {
            await _topology.DisposeAsync();
        }
    }
}

/// <summary>A three-master Redis Cluster.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    private RedisClusterTopology? _cluster;

    public RedisClusterTopology Cluster => _cluster ?? throw new InvalidOperationException(RedisProcess.MissingReason ?? "not started");

    public async ValueTask InitializeAsync()
    {
        if (RedisProcess.IsInstalled)
        {
            _cluster = await RedisClusterTopology.StartAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
        }
    }
}
