using System.Diagnostics;
using System.Globalization;
using LMCache.Testing;
using LMCache.Testing.Redis;

namespace LMCache.Connectors.Redis.Tests;

/// <summary>rediss:// against a real redis-server with TLS, its certificate signed by a throw-away CA made with openssl.</summary>
[IntegrationTest]
public sealed class TlsTests
{
    [Fact]
    public async Task Rediss_round_trips_with_the_CA_given_and_misses_when_the_certificate_is_not_trusted()
    {
        TestSupport.RequireRedis();
        if (RedisProcess.Find("openssl") is null)
        {
            Assert.Skip("openssl is not installed (needed to make test certificates)");
        }
        var ct = TestContext.Current.CancellationToken;
        using var folder = new TempFolder("lmcache-tls");
        await OpenSslAsync(folder.Path, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lmcache-test-ca", "-keyout", "ca.key", "-out", "ca.crt");
        await OpenSslAsync(folder.Path, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr");
        await File.WriteAllTextAsync(folder.Combine("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n", ct);
        await OpenSslAsync(folder.Path, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt");

        var tlsPort = RedisProcess.FreePort();
        await using var server = await RedisProcess.StartServerAsync(
            ["--tls-port", tlsPort.ToString(CultureInfo.InvariantCulture), "--tls-cert-file", folder.Combine("server.crt"),
             "--tls-key-file", folder.Combine("server.key"), "--tls-ca-cert-file", folder.Combine("ca.crt"), "--tls-auth-clients", "no"],
            cancellationToken: ct);
        using var allocator = TestSupport.Allocator();
        var key = TestChunks.Key(1, "tls");

        foreach (var url in new[]
                 {
                     $"rediss://127.0.0.1:{tlsPort}?ssl_ca_certs={folder.Combine("ca.crt")}",
                     $"rediss://127.0.0.1:{tlsPort}?ssl_cert_reqs=none",
                     $"valkeys://127.0.0.1:{tlsPort}?ssl_ca_certs={folder.Combine("ca.crt")}",
                 })
        {
            await using var connector = await TestSupport.ConnectedAsync(url);
            using (var chunk = TestChunks.Create(allocator, 9))
            {
                await connector.PutAsync(key, chunk, ct);
            }
            using var read = await connector.GetAsync(key, allocator, ct);
            Assert.True(TestChunks.Matches(read!, 9), url);
            Assert.True(await connector.RemoveAsync(key, ct));
        }

        // The system store does not know the throw-away CA: the connection is refused, so every operation fails (a miss).
        await using var untrusted = TestSupport.Connect($"rediss://127.0.0.1:{tlsPort}");
        await Assert.ThrowsAnyAsync<Exception>(async () => await untrusted.ExistsPrefixAsync(new[] { key }, ct));
        Assert.False(untrusted.IsConnected);
    }

    private static async Task OpenSslAsync(string folder, params string[] arguments)
    {
        var info = new ProcessStartInfo(RedisProcess.Find("openssl")!) { WorkingDirectory = folder, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }
        using var process = Process.Start(info)!;
        var error = process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        _ = await process.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        await process.WaitForExitAsync(TestContext.Current.CancellationToken);
        Assert.True(process.ExitCode == 0, "openssl " + string.Join(' ', arguments) + ": " + await error);
    }
}
