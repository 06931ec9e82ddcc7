using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Testing;

namespace LMCache.Server.Tests;

/// <summary>
/// The independent standard-library Python client (test/python/lm_client.py), written from the original protocol's
/// struct layouts, against a real server: PUT/GET/EXIST/HEALTH/LIST, misses, concurrent clients, malformed frames,
/// and bytes written by one side read by the other.
/// </summary>
[Trait("Category", "Integration")]
[IntegrationTest]
public sealed class PythonClientTests
{
    [Fact]
    public async Task Basic_commands_work()
    {
        await using var harness = await ServerHarness.StartAsync();
        var output = await RunPythonAsync(harness, "basic");
        Assert.Contains("OK basic", output, StringComparison.Ordinal);
        var stats = harness.Server.GetStatistics();
        Assert.True(stats.Hits >= 5);
        Assert.True(stats.Misses >= 1);
        Assert.Equal(0, stats.ConnectionErrors);
    }

    [Fact]
    public async Task Concurrent_clients_each_read_their_own_bytes()
    {
        await using var harness = await ServerHarness.StartAsync();
        var output = await RunPythonAsync(harness, "concurrent");
        Assert.Contains("OK concurrent", output, StringComparison.Ordinal);
        Assert.Equal(80, harness.Server.GetStatistics().Keys);
    }

    [Fact]
    public async Task Malformed_frames_close_only_their_connection()
    {
        await using var harness = await ServerHarness.StartAsync(o => o.MaxPayloadBytes = 16L << 20);
        var output = await RunPythonAsync(harness, "malformed");
        Assert.Contains("OK malformed", output, StringComparison.Ordinal);
        var stats = harness.Server.GetStatistics();
        Assert.Equal(7, stats.ConnectionErrors);
        // One warning line per closed connection, naming why.
        var lines = harness.Logs.Entries.Where(e => e.EventId == 4012).Select(e => e.Message).ToList();
        Assert.Equal(7, lines.Count);
        Assert.Contains(lines, l => l.Contains("unknown command 9", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("bad key", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("middle of a payload", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("UTF-8", StringComparison.Ordinal));
        // The interrupted PUT's block went back to the pool: only the one good entry is held.
        Assert.Equal(1, harness.Server.Store.OutstandingObjects);
    }

    [Fact]
    public async Task Bytes_written_by_our_connector_are_read_by_the_python_client_and_back()
    {
        await using var harness = await ServerHarness.StartAsync();
        await using var connector = harness.CreateConnector();
        using var allocator = new NativeSlabAllocator(16L << 20);
        var ct = TestContext.Current.CancellationToken;
        var lines = new StringBuilder();
        for (var i = 0; i < 4; i++)
        {
            var key = TestChunks.Key(i);
            var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 8 + i, 64), KvDType.BFloat16, MemoryFormat.KV2LTD);
            using var chunk = TestChunks.Create(allocator, i, metadata);
            await connector.PutAsync(key, chunk, ct);
            lines.Append(key).Append(' ').Append(Convert.ToHexStringLower(SHA256.HashData(chunk.Span)))
                .Append($" 1 3 {metadata.Shape.D0} {metadata.Shape.D1} {metadata.Shape.D2} {metadata.Shape.D3}\n");
        }
        // A HEALTH on every pooled connection orders our PUTs before the Python client's reads.
        for (var i = 0; i < 4; i++)
        {
            Assert.True(await connector.PingAsync(ct));
        }
        var output = await RunPythonAsync(harness, "readback", lines.ToString());
        Assert.Contains("OK readback 4", output, StringComparison.Ordinal);

        var pythonKey = CacheEngineKey.Parse("vllm@py/writer@1@0@" + Convert.ToHexStringLower(SHA256.HashData(Encoding.ASCII.GetBytes("4242")))[..16] + "@bfloat16");
        using var read = await connector.GetAsync(pythonKey, allocator, ct);
        Assert.NotNull(read);
        Assert.Equal(new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 16, 64), KvDType.BFloat16, MemoryFormat.KV2LTD), read.Metadata);
        var seed = SHA256.HashData(Encoding.ASCII.GetBytes("chunk4242"));
        var expected = Enumerable.Repeat(seed, read.Length / seed.Length + 1).SelectMany(b => b).Take(read.Length).ToArray();
        Assert.True(read.Span.SequenceEqual(expected));
    }

    private static async Task<string> RunPythonAsync(ServerHarness harness, string scenario, string? stdin = null)
    {
        var python = FindPython();
        if (python is null)
        {
            Assert.Skip("python3 is not installed; scripts/test.sh installs it (apt-get install python3).");
        }
        var script = Path.Combine(AppContext.BaseDirectory, "python", "lm_client.py");
        var start = new ProcessStartInfo(python, [script, "127.0.0.1", harness.Endpoint.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), scenario])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        using var process = Process.Start(start)!;
        try
        {
            await process.StandardInput.WriteAsync(stdin ?? string.Empty);
            process.StandardInput.Close();
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
            await process.WaitForExitAsync(timeout.Token);
            var output = await stdout + await stderr;
            Assert.True(process.ExitCode == 0, $"python client failed ({process.ExitCode}):\n{output}");
            return output;
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
    }

    private static string? FindPython()
    {
        foreach (var directory in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
        {
            var candidate = Path.Combine(directory, "python3");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }
}
