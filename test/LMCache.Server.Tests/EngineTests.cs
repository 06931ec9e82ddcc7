using LMCache.Core.Configuration;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Engine.Adapters;
using LMCache.Hosting;
using LMCache.Testing;

namespace LMCache.Server.Tests;

/// <summary>The seed's flow at engine level: one engine stores with <c>remote_url: lm://…</c>, a fresh one hits.</summary>
[Trait("Category", "Integration")]
[IntegrationTest]
public sealed class EngineTests
{
    [Fact]
    public async Task Engine_stores_through_the_server_and_a_fresh_engine_hits()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var harness = await ServerHarness.StartAsync();
        var options = new LMCacheEngineOptions
        {
            ChunkSize = 16,
            MaxLocalCpuSizeGib = 0.0625,
            RemoteUrl = $"lm://127.0.0.1:{harness.Endpoint.Port}",
            RemoteSerde = "naive",
        };
        var layout = new KvLayout(NumLayers: 2, NumKvHeads: 2, HeadDim: 32, DType: KvDType.BFloat16);
        var scope = new KeyScope("vllm", "test/engine-model");
        var tokens = Enumerable.Range(0, 64).Select(i => (i * 7919) % 32000).ToArray();
        var prefill = new HostKvCache(layout, tokens.Length);
        prefill.FillDeterministic(0, tokens.Length, seed: 11);

        await using (var writer = new LMCacheEngineBuilder(options, scope, layout).Build())
        {
            var stored = writer.Store(tokens, prefill);
            Assert.Equal(4, stored.StoredChunks);
            await writer.FlushAsync(ct);
        }
        Assert.Equal(4, harness.Server.GetStatistics().Keys);

        // A different engine (its own, empty CPU tier) finds every chunk on the server.
        await using var reader = new LMCacheEngineBuilder(options, scope, layout).Build();
        Assert.Equal(64, await reader.LookupAsync(tokens, cancellationToken: ct));
        var target = new HostKvCache(layout, tokens.Length);
        var result = await reader.RetrieveAsync(tokens, target, cancellationToken: ct);
        Assert.Equal(64, result.HitTokens);
        Assert.True(target.SameTokens(prefill, 0, tokens.Length));
        Assert.Equal(4, harness.Server.GetStatistics().Hits);
    }
}
