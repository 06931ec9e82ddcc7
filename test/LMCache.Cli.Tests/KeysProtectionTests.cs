using LMCache.Connectors.Redis;
using LMCache.Core.Memory;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Cli.Tests;

/// <summary><c>lmcache keys list</c> and <c>inspect</c> say which entries nothing binds to their key (issue #18 problem 8).</summary>
[IntegrationTest]
public sealed class KeysProtectionTests
{
    [Fact]
    public async Task Keys_list_and_inspect_mark_original_layout_entries_unprotected()
    {
        if (RedisProcess.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
        var ct = TestContext.Current.CancellationToken;
        await using var server = await RedisProcess.StartServerAsync(cancellationToken: ct);
        var url = $"redis://127.0.0.1:{server.Port}";
        using var allocator = new NativeSlabAllocator(16L << 20);
        var ours = TestChunks.Key(1, "org/protection").ToString();
        var original = TestChunks.Key(2, "org/protection").ToString();
        foreach (var (key, checksum) in new[] { (TestChunks.Key(1, "org/protection"), true), (TestChunks.Key(2, "org/protection"), false) })
        {
            await using var connector = new RedisConnector(RedisUrl.Parse(url), new RedisConnectorOptions { WriteChecksum = checksum });
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await connector.WaitUntilConnectedAsync(timeout.Token);
            using var chunk = TestChunks.Create(allocator, 5);
            await connector.PutAsync(key, chunk, ct);
        }

        var (listed, listText, listError) = await CliRunner.RunAsync("keys", "list", "--remote-url", url);
        Assert.True(listed == 0, listError);
        var lines = listText.Split('\n');
        Assert.Contains("bound to the key", lines.Single(l => l.Contains(ours, StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.Contains("UNPROTECTED: no checksum", lines.Single(l => l.Contains(original, StringComparison.Ordinal)), StringComparison.Ordinal);

        var inspected = await CliRunner.RunJsonAsync("keys", "inspect", "--remote-url", url, "--json", ours, original);
        var byKey = inspected.EnumerateArray().ToDictionary(e => e.GetProperty("key").GetString()!, e => e.GetProperty("unprotected").GetBoolean());
        Assert.False(byKey[ours]);
        Assert.True(byKey[original]);
        Assert.Equal(0, allocator.OutstandingObjects);
    }
}
