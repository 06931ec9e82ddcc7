using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using LMCache.Core.Keys;
using LMCache.Protocol;
using LMCache.Testing;

namespace LMCache.Server.Tests;

/// <summary>
/// Idle and slow sockets, floods of connections and hostile keys: the server keeps serving working clients, closes
/// what never completes a request, and escapes what it logs.
/// </summary>
[Trait("Category", "Integration")]
public sealed class HostileClientTests
{
    private const int IdleSockets = 1024;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Thousand_idle_sockets_then_a_new_client_is_served_within_the_idle_timeout()
    {
        var idleTimeout = TimeSpan.FromSeconds(4);
        // Per-client limit as high as the global one: the flood comes from the same address as the working client, so
        // only the global limit and the idle timeout stand between them.
        await using var harness = await ServerHarness.StartAsync(o =>
        {
            o.IdleTimeout = idleTimeout;
            o.MaxConnections = IdleSockets;
            o.MaxConnectionsPerClient = IdleSockets;
        });
        var idle = await OpenIdleSocketsAsync(harness.Endpoint, IdleSockets, IPAddress.Loopback);
        try
        {
            await Eventually.TrueAsync(() => harness.Server.GetStatistics().ActiveConnections == IdleSockets,
                "every idle socket accepted, filling every slot", TimeSpan.FromSeconds(20));

            var clock = Stopwatch.StartNew();
            await using var connector = harness.CreateConnector(connections: 1, timeout: idleTimeout);
            Assert.True(await connector.PingAsync(Ct), "a new client must be served while idle sockets hold every slot");
            Assert.True(clock.Elapsed < idleTimeout, $"served after {clock.Elapsed.TotalSeconds:0.00} s, not within the idle timeout of {idleTimeout.TotalSeconds} s");

            // The idle sockets never sent a request: the idle timeout closes every one of them ...
            await Eventually.TrueAsync(() => harness.Server.GetStatistics().ActiveConnections == 1,
                "the idle sockets closed by the idle timeout", idleTimeout * 3);
            // A shed connection's slot is released before its read loop ends and logs why: wait for the log lines.
            await Eventually.TrueAsync(() => harness.Logs.Entries.Any(e => e.EventId == 4012 && e.Message.Contains("timed out waiting for the first request", StringComparison.Ordinal)),
                "an idle socket logged as closed by the idle timeout", TimeSpan.FromSeconds(10));
            await Eventually.TrueAsync(() => harness.Logs.Entries.Any(e => e.EventId == 4012 && e.Message.Contains("to make room for a new connection", StringComparison.Ordinal)),
                "an idle socket logged as shed for the newcomer", TimeSpan.FromSeconds(10));
            // ... while a connection that completed a request may idle between requests past the timeout.
            await Task.Delay(idleTimeout + TimeSpan.FromSeconds(1), Ct);
            Assert.True(await connector.PingAsync(Ct));
            Assert.Equal(1, harness.Server.GetStatistics().ActiveConnections);
        }
        finally
        {
            DisposeAll(idle);
        }
    }

    [Fact]
    public async Task One_flooding_address_holds_at_most_its_share_of_the_slots()
    {
        // No idle timeout: the per-client limit alone keeps room for everybody else.
        await using var harness = await ServerHarness.StartAsync(o =>
        {
            o.IdleTimeout = Timeout.InfiniteTimeSpan;
            o.MaxConnections = IdleSockets;
            o.MaxConnectionsPerClient = 200;
        });
        // Linux routes all of 127.0.0.0/8 to the loopback interface: 127.0.0.2 is another client address.
        var idle = await OpenIdleSocketsAsync(harness.Endpoint, IdleSockets, IPAddress.Parse("127.0.0.2"));
        try
        {
            await Eventually.TrueAsync(() => harness.Server.GetStatistics().TotalConnections == IdleSockets,
                "every idle socket accepted", TimeSpan.FromSeconds(20));
            Assert.Equal(200, harness.Server.GetStatistics().ActiveConnections);

            await using var connector = harness.CreateConnector(connections: 1, timeout: TimeSpan.FromSeconds(5));
            Assert.True(await connector.PingAsync(Ct));
            Assert.Equal(201, harness.Server.GetStatistics().ActiveConnections);
        }
        finally
        {
            DisposeAll(idle);
        }
    }

    [Fact]
    public async Task A_quiet_server_keeps_a_connection_that_is_silent_past_the_idle_timeout_as_the_originals_engines_need()
    {
        // The original's client connects when the engine starts, may send its first request much later, and never
        // reconnects: a server far from its limits must not close it.
        var idleTimeout = TimeSpan.FromMilliseconds(500);
        await using var harness = await ServerHarness.StartAsync(o => o.IdleTimeout = idleTimeout);
        using var client = new TcpClient();
        await client.ConnectAsync(harness.Endpoint, Ct);
        await Task.Delay(idleTimeout * 4, Ct);
        var header = new byte[LmRequestHeader.Size];
        LmRequestHeader.Health().WriteTo(header);
        await client.GetStream().WriteAsync(header, Ct);
        var reply = new byte[LmReplyHeader.Size];
        await client.GetStream().ReadExactlyAsync(reply, Ct);
        Assert.Equal(LmReplyCode.Success, LmReplyHeader.Read(reply).Code);
        Assert.Equal(0, harness.Server.GetStatistics().ConnectionErrors);
    }

    [Fact]
    public async Task A_half_sent_header_is_closed_after_the_idle_timeout_even_after_earlier_requests()
    {
        var idleTimeout = TimeSpan.FromSeconds(1);
        await using var harness = await ServerHarness.StartAsync(o => o.IdleTimeout = idleTimeout);
        using var client = new TcpClient();
        await client.ConnectAsync(harness.Endpoint, Ct);
        var stream = client.GetStream();
        var header = new byte[LmRequestHeader.Size];
        LmRequestHeader.Health().WriteTo(header);
        await stream.WriteAsync(header, Ct);
        var reply = new byte[LmReplyHeader.Size];
        await stream.ReadExactlyAsync(reply, Ct);
        Assert.Equal(LmReplyCode.Success, LmReplyHeader.Read(reply).Code);

        // Idle between requests for longer than the timeout: still open.
        await Task.Delay(idleTimeout * 2, Ct);
        Assert.Equal(1, harness.Server.GetStatistics().ActiveConnections);

        // Then half a header, and nothing more: closed once the timeout has passed since its first byte.
        var clock = Stopwatch.StartNew();
        await stream.WriteAsync(header.AsMemory(0, 90), Ct);
        Assert.Equal(0, await stream.ReadAsync(new byte[1], Ct));
        Assert.InRange(clock.Elapsed, idleTimeout * 0.9, idleTimeout * 10);
        await Eventually.TrueAsync(() => harness.Logs.Entries.Any(e => e.EventId == 4012
            && e.Message.Contains("timed out waiting for the rest of a request header", StringComparison.Ordinal)), "the timeout logged");
    }

    [Fact]
    public async Task Control_characters_of_a_key_are_escaped_in_the_log()
    {
        await using var harness = await ServerHarness.StartAsync();
        using var client = new TcpClient();
        await client.ConnectAsync(harness.Endpoint, Ct);
        // Not a cache key (no '@' fields), so the server logs it while closing the connection.
        const string hostileKey = "evil\u001b[2J\u001b[31mkey\0with\r\nforged: line";
        Assert.False(CacheEngineKey.TryParse(hostileKey, out _, out _));
        var header = new byte[LmRequestHeader.Size];
        LmRequestHeader.Get(hostileKey).WriteTo(header);
        await client.GetStream().WriteAsync(header, Ct);
        Assert.Equal(0, await client.GetStream().ReadAsync(new byte[1], Ct));

        await Eventually.TrueAsync(() => harness.Logs.Entries.Any(e => e.EventId == 4012), "the bad key logged");
        var line = harness.Logs.Entries.Single(e => e.EventId == 4012).Message;
        Assert.Contains(@"evil\u001B[2J\u001B[31mkey\u0000with\r\nforged: line", line, StringComparison.Ordinal);
        Assert.DoesNotContain(line, c => c < ' ' || c is >= '\u007F' and <= '\u009F');
    }

    private static async Task<List<Socket>> OpenIdleSocketsAsync(IPEndPoint server, int count, IPAddress from)
    {
        var sockets = new List<Socket>(count);
        try
        {
            for (var i = 0; i < count; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                sockets.Add(socket);
                socket.Bind(new IPEndPoint(from, 0));
                await socket.ConnectAsync(server, Ct);
            }
        }
        catch
        {
            DisposeAll(sockets);
            throw;
        }
        return sockets;
    }

    private static void DisposeAll(List<Socket> sockets)
    {
        foreach (var socket in sockets)
        {
            socket.Dispose();
        }
    }
}
