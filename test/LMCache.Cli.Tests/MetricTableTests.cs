using System.Diagnostics.Metrics;
using LMCache.Connectors.Redis;
using LMCache.Controller;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Engine;
using LMCache.Server;
using LMCache.Serving;

namespace LMCache.Cli.Tests;

/// <summary>
/// <see cref="LMCacheMetrics.Table"/> and the instruments the components really publish agree both ways: every
/// instrument of the exported meters has a row (nothing is silently missing from <c>/metrics</c>), and every row names
/// an instrument that exists (no stale name in the table). Nothing is bound or started: constructing the components
/// creates their instruments.
/// </summary>
public sealed class MetricTableTests
{
    [Fact]
    public async Task Every_instrument_of_the_exported_meters_has_exactly_one_row_and_every_row_an_instrument()
    {
        using var factory = new LMCacheMeterFactory();
        var published = new HashSet<(string Meter, string Instrument)>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, _) =>
            {
                if (instrument.Meter.Scope == factory)
                {
                    lock (published)
                    {
                        published.Add((instrument.Meter.Name, instrument.Name));
                    }
                }
            },
        };
        listener.Start();

        var engine = LMCacheEngine.Create(
            new LMCacheEngineOptions { ChunkSize = 16, MaxLocalCpuSizeGib = 1.0 / 1024 },
            new KeyScope("onnx", "metric-table"), new KvLayout(2, 2, 8, KvDType.BFloat16), new LMCacheEngineServices(MeterFactory: factory));
        await using (engine)
        await using (var controller = new LMCacheController(new ControllerOptions(), meterFactory: factory))
        await using (var server = new LmServer(new LmServerOptions { CapacityBytes = 1 << 20 }, meterFactory: factory))
        await using (var redis = new RedisConnector(RedisUrl.Parse("redis://127.0.0.1:1"), new RedisConnectorOptions(), logger: null, meterFactory: factory))
        using (var serving = new ServingMetrics(factory, () => 0, () => (0, 0)))
        {
            var exported = LMCacheMetrics.Table.Select(m => (m.Meter, m.Instrument)).ToHashSet();
            var meters = LMCacheMetrics.Table.Select(m => m.Meter).ToHashSet();
            var ofExportedMeters = published.Where(p => meters.Contains(p.Meter)).ToHashSet();
            Assert.Empty(ofExportedMeters.Except(exported));   // published but not exported
            Assert.Empty(exported.Except(ofExportedMeters));   // in the table but never published
        }
    }
}
