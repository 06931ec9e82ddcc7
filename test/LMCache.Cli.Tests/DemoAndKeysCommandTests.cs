using LMCache.Connectors.Redis;
using LMCache.Core.Memory;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Cli.Tests;

[IntegrationTest]
public sealed class DemoAndKeysCommandTests
{
    [Fact]
    public async Task The_demo_checks_every_byte_through_every_tier()
    {
        var (exitCode, output, error) = await CliRunner.RunAsync("demo", "--prompt-tokens", "600");
        Assert.True(exitCode == 0, $"demo exited {exitCode}:\n{output}\n{error}");
        Assert.Contains("every retrieved byte matched", output, StringComparison.Ordinal);
        Assert.Contains("disk", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Keys_stats_list_and_rm_work_per_model_on_a_real_redis()
    {
        if (RedisProcess.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
        var ct = TestContext.Current.CancellationToken;
        await using var server = await RedisProcess.StartServerAsync(cancellationToken: ct);
        var url = $"redis://127.0.0.1:{server.Port}";
        using var allocator = new NativeSlabAllocator(16L << 20);
        await using (var connector = new RedisConnector(RedisUrl.Parse(url), new RedisConnectorOptions()))
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await connector.WaitUntilConnectedAsync(timeout.Token);
            foreach (var (model, count) in new[] { ("org/model-a", 3), ("org/model-b", 2) })
            {
                for (var i = 0; i < count; i++)
                {
                    using var chunk = TestChunks.Create(allocator, i);
                    await connector.PutAsync(TestChunks.Key(i, model), chunk, ct);
                }
            }
        }
        var chunkBytes = TestChunks.SmallChunk().ByteLength;

        var stats = await CliRunner.RunJsonAsync("keys", "stats", "--remote-url", url, "--json");
        Assert.Equal(5, stats.GetProperty("entries").GetInt32());
        Assert.Equal(5 * chunkBytes, stats.GetProperty("bytes").GetInt64());
        Assert.Equal(0, stats.GetProperty("invalid_or_half").GetInt32());
        var perModel = stats.GetProperty("models").EnumerateArray().ToDictionary(m => m.GetProperty("model").GetString()!, m => m.GetProperty("entries").GetInt32());
        Assert.Equal(3, perModel["org/model-a"]);
        Assert.Equal(2, perModel["org/model-b"]);

        var (listed, listText, _) = await CliRunner.RunAsync("keys", "list", "--remote-url", url, "--model", "org/model-b");
        Assert.Equal(0, listed);
        Assert.Contains(TestChunks.Key(1, "org/model-b").ToString(), listText, StringComparison.Ordinal);
        Assert.DoesNotContain("org/model-a", listText, StringComparison.Ordinal);

        var (removed, _, removeError) = await CliRunner.RunAsync("keys", "rm", "--remote-url", url, "--model", "org/model-a");
        Assert.True(removed == 0, removeError);
        stats = await CliRunner.RunJsonAsync("keys", "stats", "--remote-url", url, "--json");
        Assert.Equal(2, stats.GetProperty("entries").GetInt32());
        Assert.Equal("org/model-b", Assert.Single(stats.GetProperty("models").EnumerateArray()).GetProperty("model").GetString());
        Assert.Equal(0, allocator.OutstandingObjects);
    }

    [Fact]
    public async Task Keys_commands_refuse_a_store_that_cannot_list_with_a_clear_error()
    {
        // blackhole:// answers pings but is no IRemoteKeyspace: every keys subcommand says so and exits 2.
        foreach (var args in new[] { new[] { "keys", "stats" }, ["keys", "list"], ["keys", "inspect", "k"], ["keys", "rm", "k"] })
        {
            var (exitCode, _, error) = await CliRunner.RunAsync([.. args, "--remote-url", "blackhole://"]);
            Assert.Equal(2, exitCode);
            Assert.Contains("blackhole://", error, StringComparison.Ordinal);
            Assert.Contains("cannot list, inspect or remove entries", error, StringComparison.Ordinal);
        }
    }
}
