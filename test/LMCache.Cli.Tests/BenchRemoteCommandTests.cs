using LMCache.Core.Keys;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Cli.Tests;

[IntegrationTest]
public sealed class BenchRemoteCommandTests
{
    [Fact]
    public async Task Bench_remote_measures_us_and_both_baselines_on_a_real_redis_and_leaves_no_keys()
    {
        if (RedisProcess.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
        var ct = TestContext.Current.CancellationToken;
        await using var server = await RedisProcess.StartServerAsync(cancellationToken: ct);
        var url = $"redis://127.0.0.1:{server.Port}";

        var result = await CliRunner.RunJsonAsync(
            "bench", "remote", "--remote-url", url, "--chunk-mib", "0.25", "--chunks", "8", "--rounds", "2", "--baseline", "--json");
        var output = result.GetRawText();
        Assert.Equal(256 * 1024, result.GetProperty("chunk_bytes").GetInt32());
        Assert.Equal(8, result.GetProperty("chunks").GetInt32());
        Assert.Equal(8, result.GetProperty("verified_reads").GetInt32());   // every chunk of the first retrieve round compared byte for byte
        foreach (var field in new[] { "store_gbps", "retrieve_gbps", "lookup_chunks_per_s", "redis_benchmark_set_gbps", "redis_benchmark_get_gbps",
                     "stackexchange_redis_set_gbps", "stackexchange_redis_get_gbps" })
        {
            Assert.True(result.GetProperty(field).GetDouble() > 0, $"{field} is not positive: {output}");
        }
        Assert.False(result.TryGetProperty("redis_benchmark_error", out var benchmarkError), benchmarkError.ToString());
        Assert.InRange(result.GetProperty("lookup_server_reads_per_batch").GetDouble(), 1, 3);
        var ratio = result.GetProperty("store_gbps").GetDouble() / result.GetProperty("redis_benchmark_set_gbps").GetDouble();
        Assert.Equal(Math.Round(ratio, 3), result.GetProperty("store_vs_redis_benchmark").GetDouble(), 2);

        var keys = await RedisProcess.RunCliAsync(server.Port, null, ["DBSIZE"], ct);
        Assert.Equal("0", keys.Trim());
    }

    [Fact]
    public async Task Bench_remote_writes_the_keys_the_original_server_parses()
    {
        if (PythonScripts.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
        var ct = TestContext.Current.CancellationToken;
        // A stand-in for the original's lmcache_server: it parses every request's key with the original's
        // from_string (fmt@model@world_size@worker_id@hash@dtype) and closes the connection on one it cannot parse.
        await using var standIn = await OriginalServerStandIn.StartAsync(cancellationToken: ct);

        var result = await CliRunner.RunJsonAsync(
            "bench", "remote", "--remote-url", standIn.Url, "--chunk-mib", "0.25", "--chunks", "4", "--rounds", "1", "--clients", "2", "--json");
        Assert.Equal(4, result.GetProperty("verified_reads").GetInt32());

        var stats = await standIn.StopAsync(ct);
        Assert.Empty(stats.GetProperty("closed").EnumerateArray());
        var keys = stats.GetProperty("keys").EnumerateArray().Select(k => k.GetString()!).ToList();
        Assert.NotEmpty(keys);
        Assert.All(keys, text =>
        {
            // The same 6-field form as demo and serve, with the hash spelled as the original spells it.
            var key = CacheEngineKey.Parse(text);
            Assert.Equal("bfloat16", key.DType);
            Assert.Equal(CacheEngineKey.CanonicalHashText(key.ChunkHash), key.ChunkHash);
        });
    }
}
