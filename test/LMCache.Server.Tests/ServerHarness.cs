using System.Collections.Concurrent;
using System.Net;
using LMCache.Connectors.Lm;
using Microsoft.Extensions.Logging;

namespace LMCache.Server.Tests;

/// <summary>An in-process server on 127.0.0.1, port 0, with its log lines captured.</summary>
internal sealed class ServerHarness : IAsyncDisposable
{
    private ServerHarness(LmServer server, IPEndPoint endpoint, CapturingLoggerProvider logs)
    {
        Server = server;
        Endpoint = endpoint;
        Logs = logs;
    }

    public LmServer Server { get; }

    public IPEndPoint Endpoint { get; }

    public CapturingLoggerProvider Logs { get; }

    public string Url => $"lm://127.0.0.1:{Endpoint.Port}";

    public static async Task<ServerHarness> StartAsync(Action<LmServerOptions>? configure = null)
    {
        var options = new LmServerOptions { Host = "127.0.0.1", Port = 0, CapacityBytes = 64L << 20 };
        configure?.Invoke(options);
        var logs = new CapturingLoggerProvider();
        var server = new LmServer(options, LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug)));
        var endpoint = await server.StartAsync(TestContext.Current.CancellationToken);
        return new ServerHarness(server, endpoint, logs);
    }

    public LmConnector CreateConnector(int connections = 4, string query = "", TimeSpan? timeout = null)
    {
        var parsed = LmConnectorOptions.Parse($"{Url}?connections={connections}{query}");
        return new LmConnector(new LmConnectorOptions
        {
            Host = parsed.Host,
            Port = parsed.Port,
            Connections = parsed.Connections,
            AuthToken = parsed.AuthToken,
            UseTls = parsed.UseTls,
            TlsCaFile = parsed.TlsCaFile,
            ConfirmPuts = parsed.ConfirmPuts,
            OperationTimeout = timeout ?? TimeSpan.FromSeconds(30),
        });
    }

    public async ValueTask DisposeAsync() => await Server.DisposeAsync();
}

/// <summary>Keeps every log line (level, event id, message) for assertions.</summary>
internal sealed class CapturingLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<(LogLevel Level, int EventId, string Message)> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    public void Dispose()
    {
    }

    public int Count(int eventId) => Entries.Count(e => e.EventId == eventId);

    private sealed class Logger(CapturingLoggerProvider owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner.Entries.Enqueue((logLevel, eventId.Id, formatter(state, exception)));
    }
}
