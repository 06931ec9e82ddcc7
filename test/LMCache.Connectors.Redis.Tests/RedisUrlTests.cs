using System.Net;
using System.Net.Sockets;
using LMCache.Core.Diagnostics;
using LMCache.Testing;

namespace LMCache.Connectors.Redis.Tests;

[IntegrationTest]
public sealed class RedisUrlTests
{
    [Fact]
    public void Redis_url_with_user_password_and_database()
    {
        var url = RedisUrl.Parse("redis://alice:s%40cret@cache.local:6380/3");
        Assert.Equal(RedisTopology.Standalone, url.Topology);
        Assert.Equal(new DnsEndPoint("cache.local", 6380), Assert.Single(url.EndPoints));
        Assert.Equal("alice", url.User);
        Assert.Equal("s@cret", url.Password);
        Assert.Equal(3, url.Database);
        Assert.False(url.UseTls);
        Assert.Equal("redis://alice:***@cache.local:6380/3", url.Redacted);
    }

    [Fact]
    public void Defaults_port_and_database()
    {
        var url = RedisUrl.Parse("redis://localhost");
        Assert.Equal(new DnsEndPoint("localhost", 6379), Assert.Single(url.EndPoints));
        Assert.Equal(0, url.Database);
        Assert.Null(url.User);
        Assert.Null(url.Password);
    }

    [Fact]
    public void Password_only_and_tls_forms()
    {
        var url = RedisUrl.Parse("rediss://:pw@h:6390?ssl_cert_reqs=none&db=2");
        Assert.True(url.UseTls);
        Assert.False(url.TlsVerifyServer);
        Assert.Null(url.User);
        Assert.Equal("pw", url.Password);
        Assert.Equal(2, url.Database);
        Assert.True(RedisUrl.Parse("valkeys://h:1").UseTls);
        Assert.Equal(RedisTopology.Standalone, RedisUrl.Parse("valkey://h:1").Topology);
    }

    [Fact]
    public void Unix_socket_with_database_and_password_in_query()
    {
        var url = RedisUrl.Parse("unix:///run/redis/redis.sock?db=1&password=pw");
        var endPoint = Assert.IsType<UnixDomainSocketEndPoint>(Assert.Single(url.EndPoints));
        Assert.Equal("/run/redis/redis.sock", endPoint.ToString());
        Assert.Equal(1, url.Database);
        Assert.Equal("pw", url.Password);
        Assert.DoesNotContain("pw", url.Redacted.Replace("password", "", StringComparison.Ordinal), StringComparison.Ordinal);
    }

    [Fact]
    public void Sentinel_list_service_name_from_query_then_environment_then_default()
    {
        var url = RedisUrl.Parse("redis-sentinel://u:p@h1:26379,h2:26380,h3?service_name=cache", environmentServiceName: "fromenv");
        Assert.Equal(RedisTopology.Sentinel, url.Topology);
        Assert.Equal([new DnsEndPoint("h1", 26379), new DnsEndPoint("h2", 26380), new DnsEndPoint("h3", 26379)], url.EndPoints);
        Assert.Equal("cache", url.ServiceName);
        Assert.Equal("u", url.User);
        Assert.Equal("p", url.Password);
        Assert.Equal("fromenv", RedisUrl.Parse("redis-sentinel://h1:1", environmentServiceName: "fromenv").ServiceName);
        Assert.Equal("mymaster", RedisUrl.Parse("redis-sentinel://h1:1", environmentServiceName: " ").ServiceName);
    }

    [Fact]
    public void Cluster_seed_list()
    {
        var url = RedisUrl.Parse("redis-cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002");
        Assert.Equal(RedisTopology.Cluster, url.Topology);
        Assert.Equal(3, url.EndPoints.Count);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("10.0.0.1"), 7000), url.EndPoints[0]);
        Assert.Equal(new IPEndPoint(IPAddress.IPv6Loopback, 7002), url.EndPoints[2]);
    }

    [Theory]
    [InlineData("localhost:6379")]
    [InlineData("redis://")]
    [InlineData("redis://h:notaport")]
    [InlineData("redis://h:70000")]
    [InlineData("redis://h:1/x")]
    [InlineData("redis://h1:1,h2:2")]
    [InlineData("unix://relative.sock")]
    [InlineData("redis-cluster://h:1?db=2")]
    [InlineData("redis-sentinel://")]
    [InlineData("memcached://h:1")]
    public void Malformed_urls_are_configuration_errors(string text)
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => RedisUrl.Parse(text));
        Assert.Contains("remote_url", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Errors_never_show_the_password()
    {
        var error = Assert.Throws<LMCacheConfigurationException>(() => RedisUrl.Parse("redis://u:topsecret@h:bad"));
        Assert.DoesNotContain("topsecret", error.Message, StringComparison.Ordinal);
    }
}
