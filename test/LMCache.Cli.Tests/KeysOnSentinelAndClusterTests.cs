using LMCache.Connectors.Redis;
using LMCache.Core.Memory;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Cli.Tests;

/// <summary>The keys tools through redis-sentinel:// (master and replica: the replica's copies must not count twice) and redis-cluster:// (entries over three masters).</summary>
[IntegrationTest]
public sealed class KeysOnSentinelAndClusterTests
{
    [Theory]
    [InlineData("sentinel")]
    [InlineData("cluster")]
    public async Task Keys_stats_list_inspect_and_rm_see_every_entry_once(string topology)
    {
        if (RedisProcess.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
        var ct = TestContext.Current.CancellationToken;
        await using var sentinel = topology == "sentinel" ? await RedisSentinelTopology.StartAsync(password: "keys-pw") : null;
        await using var cluster = topology == "cluster" ? await RedisClusterTopology.StartAsync() : null;
        var url = sentinel?.Url() ?? cluster!.Url;
        using var allocator = new NativeSlabAllocator(16L << 20);
        await using (var connector = new RedisConnector(RedisUrl.Parse(url), new RedisConnectorOptions()))
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(60));
            await connector.WaitUntilConnectedAsync(timeout.Token);
            foreach (var (model, count) in new[] { ("org/model-a", 12), ("org/model-b", 5) })
            {
                for (var i = 0; i < count; i++)
                {
                    using var chunk = TestChunks.Create(allocator, i);
                    await connector.PutAsync(TestChunks.Key(i, model), chunk, ct);
                }
            }
        }
        if (sentinel is not null)
        {
            // The replica holds copies of everything; only the master may be counted.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while ((await sentinel.Replica.CliAsync("DBSIZE")).Trim() != "34")
            {
                Assert.True(DateTime.UtcNow < deadline, "the replica did not receive the 34 keys");
                await Task.Delay(100, ct);
            }
        }

        var stats = await CliRunner.RunJsonAsync("keys", "stats", "--remote-url", url, "--json");
        Assert.Equal(17, stats.GetProperty("entries").GetInt32());
        Assert.Equal(17L * TestChunks.SmallChunk().ByteLength, stats.GetProperty("bytes").GetInt64());
        var perModel = stats.GetProperty("models").EnumerateArray().ToDictionary(m => m.GetProperty("model").GetString()!, m => m.GetProperty("entries").GetInt32());
        Assert.Equal(12, perModel["org/model-a"]);
        Assert.Equal(5, perModel["org/model-b"]);

        var (listed, listText, listError) = await CliRunner.RunAsync("keys", "list", "--remote-url", url, "--model", "org/model-b");
        Assert.True(listed == 0, listError);
        for (var i = 0; i < 5; i++)
        {
            Assert.Contains(TestChunks.Key(i, "org/model-b").ToString(), listText, StringComparison.Ordinal);
        }
        Assert.DoesNotContain("org/model-a", listText, StringComparison.Ordinal);

        var inspected = TestChunks.Key(3, "org/model-b").ToString();
        var (inspectCode, inspectText, inspectError) = await CliRunner.RunAsync("keys", "inspect", "--remote-url", url, inspected);
        Assert.True(inspectCode == 0, $"{inspectText}\n{inspectError}");
        Assert.Contains(inspected, inspectText, StringComparison.Ordinal);
        var (missingCode, _, _) = await CliRunner.RunAsync("keys", "inspect", "--remote-url", url, TestChunks.Key(99, "org/model-b").ToString());
        Assert.Equal(1, missingCode);

        var (removed, _, removeError) = await CliRunner.RunAsync("keys", "rm", "--remote-url", url, "--model", "org/model-a");
        Assert.True(removed == 0, removeError);
        stats = await CliRunner.RunJsonAsync("keys", "stats", "--remote-url", url, "--json");
        Assert.Equal(5, stats.GetProperty("entries").GetInt32());
        Assert.Equal("org/model-b", Assert.Single(stats.GetProperty("models").EnumerateArray()).GetProperty("model").GetString());
        Assert.Equal(0, allocator.OutstandingObjects);
    }
}
