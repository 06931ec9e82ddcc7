using LMCache.Core.Configuration;
using LMCache.Engine;
using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using LMCache.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace LMCache.Serving.Tests;

/// <summary>The tiny-llama model served with a CPU cache on a free 127.0.0.1 port; stopped when the tests end.</summary>
public sealed class ServerFixture : IAsyncLifetime
{
    private LanguageModel? _model;
    private LMCacheEngine? _cache;
    private InferenceEngine? _engine;
    private OpenAiServer? _server;

    public OpenAiServer Server => _server ?? throw NotStarted();

    public LanguageModel Model => _model ?? throw NotStarted();

    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromMinutes(5) };

    private static InvalidOperationException NotStarted() => new("The server fixture has not started.");

    public async ValueTask InitializeAsync()
    {
        _model = LanguageModel.Load(RepositoryFixtures.TinyLlama, intraOpThreads: 2);
        _cache = LMCacheEngine.Create(new LMCacheEngineOptions { ChunkSize = 256, MaxLocalCpuSizeGib = 0.25 }, InferenceEngine.CreateKeyScope(_model), _model.Decoder.Layout);
        _engine = new InferenceEngine(_model, _cache);
        _server = await OpenAiServer.StartAsync(_engine, new OpenAiServerOptions { Host = "127.0.0.1", Port = 0 }, NullLoggerFactory.Instance);
        Http.BaseAddress = _server.Address;
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
        if (_engine is not null)
        {
            await _engine.DisposeAsync();
        }
        if (_cache is not null)
        {
            await _cache.DisposeAsync();
        }
        _model?.Dispose();
    }
}
