using LMCache.Core.Configuration;
using LMCache.Engine;
using LMCache.Hosting;
using LMCache.Inference.Generation;
using LMCache.Storage.Remote;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>
/// The remote tier on the inference path: chunks come back from a remote into a fresh engine, and a remote that
/// fails or hangs is a miss — the request is recomputed and its output is still the reference.
/// (The remote store is the shared in-memory fault-injecting connector, added to the engine builder beside the built-in
/// Redis and lm:// connectors.)
/// </summary>
[IntegrationTest]
public sealed class RemoteTierTests : IClassFixture<TinyLlamaModel>
{
    private readonly TinyLlamaModel _fixture;

    public RemoteTierTests(TinyLlamaModel fixture) => _fixture = fixture;

    private sealed class Factory(IRemoteConnector connector) : IRemoteConnectorFactory
    {
        public IReadOnlyList<string> Schemes => ["fault"];

        public IRemoteConnector Create(string url, RemoteConnectorContext context) => connector;
    }

    private LMCacheEngine CreateCache(FaultInjectingConnector connector) =>
        CreateCache(_fixture, "fault://remote", new Factory(connector), blockingTimeoutSecs: 1);

    private Task<(GenerationResult Result, float[] Logits)> RunAsync(LMCacheEngine cache, int[] ids) => RunAsync(_fixture, cache, ids);

    /// <summary>A cache engine with a fresh CPU tier (no disk) over the remote at <paramref name="remoteUrl"/>.</summary>
    internal static LMCacheEngine CreateCache(TinyLlamaModel fixture, string remoteUrl, IRemoteConnectorFactory factory, int blockingTimeoutSecs) =>
        new LMCacheEngineBuilder(
            new LMCacheEngineOptions { ChunkSize = 256, MaxLocalCpuSizeGib = 0.25, RemoteUrl = remoteUrl, BlockingTimeoutSecs = blockingTimeoutSecs },
            InferenceEngine.CreateKeyScope(fixture.Model), fixture.Model.Decoder.Layout)
            .AddRemoteConnector(factory)
            .Build();

    /// <summary>One greedy 16-token request through a fresh inference engine; waits until its stores were handed to the cache.</summary>
    internal static async Task<(GenerationResult Result, float[] Logits)> RunAsync(TinyLlamaModel fixture, LMCacheEngine cache, int[] ids)
    {
        await using var engine = new InferenceEngine(fixture.Model, cache);
        float[]? logits = null;
        var result = await engine.GenerateToEndAsync(new GenerationRequest { PromptTokens = ids, MaxTokens = 16, IgnoreEos = true, PromptLogitsObserver = l => logits = l },
            TestContext.Current.CancellationToken);
        await engine.WhenIdleAsync(TestContext.Current.CancellationToken);
        return (result, logits!);
    }

    [Fact]
    public async Task Warm_from_remote_matches_the_reference_and_a_failing_remote_is_only_a_miss()
    {
        var prompt = TinyLlama.Reference.Prompt("long");
        var connector = new FaultInjectingConnector();
        await using (var cache = CreateCache(connector))
        {
            await RunAsync(cache, prompt.InputIds);
            await cache.FlushAsync(TestContext.Current.CancellationToken);
        }

        // A fresh engine (empty CPU tier) reads every chunk from the remote, walking it once: one batched read, no
        // existence check before it (the request's keys are computed once and the retrieve sizes the KV itself).
        await using (var cache = CreateCache(connector))
        {
            var (exists, gets) = (connector.ExistsCalls, connector.GetCalls);
            var (warm, logits) = await RunAsync(cache, prompt.InputIds);
            Assert.Equal(0, connector.ExistsCalls - exists);
            Assert.Equal(1, connector.GetCalls - gets);
            Assert.Equal(prompt.Greedy16, warm.TokenIds);
            ColdInferenceTests.AssertClose(prompt.LastLogits, logits, "warm (remote)");
            Assert.Equal(prompt.InputIds.Length / 256 * 256, warm.Completed.Stats.CachedTokens);
            Assert.Equal(prompt.InputIds.Length / 256, warm.Completed.Stats.Tiers.Remote);
        }

        foreach (var fault in new[] { ConnectorFault.Throw, ConnectorFault.Hang })
        {
            connector.ReadFault = fault;
            await using var cache = CreateCache(connector);
            var (result, logits) = await RunAsync(cache, prompt.InputIds);
            Assert.Equal(prompt.Greedy16, result.TokenIds);
            ColdInferenceTests.AssertClose(prompt.LastLogits, logits, $"remote {fault}");
            Assert.Equal(0, result.Completed.Stats.CachedTokens);
        }
    }
}
