using LMCache.Core.Configuration;
using LMCache.Hosting;
using LMCache.Inference.Models;
using LMCache.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Serving.Tests;

/// <summary>
/// The tiny-llama model served with a CPU cache on a free 127.0.0.1 port, built by <see cref="LMCacheHost"/> — the
/// composition root <c>lmcache serve</c> ships — and stopped when the tests end.
/// </summary>
public sealed class ServerFixture : IAsyncLifetime
{
    private LMCacheHost? _host;

    public OpenAiServer Server => _host?.Server ?? throw NotStarted();

    public LanguageModel Model => _host?.Model ?? throw NotStarted();

    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromMinutes(5) };

    private static InvalidOperationException NotStarted() => new("The server fixture has not started.");

    public async ValueTask InitializeAsync()
    {
        _host = await LMCacheHost.StartAsync(new LMCacheHostOptions
        {
            ModelFolder = RepositoryFixtures.TinyLlama,
            IntraOpThreads = 2,
            Cache = new LMCacheEngineOptions { ChunkSize = 256, MaxLocalCpuSizeGib = 0.25 },
            Server = new OpenAiServerOptions { Host = "127.0.0.1", Port = 0 },
        }, NullLoggerFactory.Instance);
        Http.BaseAddress = _host.Server!.Address;
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        if (_host is not null)
        {
            await _host.DisposeAsync();
        }
    }
}
