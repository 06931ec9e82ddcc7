using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using LMCache.Connectors.Lm;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Server;

namespace LMCache.Bench;

/// <summary>
/// <c>lmcache bench lm</c>: PUT and GET throughput of 32 MiB chunks through our connector against our server on
/// loopback, with one client and with many, beside a plain socket copy of the same bytes in the same run (the
/// physical ceiling), all taking turns pass after pass; then the server's peak resident size under a write load of 4 × its capacity, in a separate
/// process.
/// </summary>
internal static class LmBench
{
    private const double GB = 1e9;

    public static Command Create()
    {
        var json = BenchOptions.Json();
        var chunkMib = new Option<int>("--chunk-mib") { Description = "Chunk size in MiB (32 = one Llama-3.1-8B bf16 chunk of 256 tokens).", DefaultValueFactory = _ => 32 };
        var clients = new Option<int>("--clients") { Description = "Concurrent clients of the multi-client run.", DefaultValueFactory = _ => 16 };
        var rounds = new Option<int>("--rounds") { Description = "Chunks moved per measured pass with one client (the multi-client run moves the same total).", DefaultValueFactory = _ => 32 };
        var passes = new Option<int>("--passes") { Description = "Measured passes (the baseline and each measurement take turns; the best of each is reported; one warm-up pass precedes them).", DefaultValueFactory = _ => 5 };
        var memoryMaxSize = new Option<double>("--memory-max-size")
        {
            Description = "--max-size (GiB) of the server process whose resident size is checked under 4 × that much writing; 0 skips the check.",
            DefaultValueFactory = _ => 1.0,
        };
        var command = new Command("lm", "lm:// server PUT/GET throughput (1 and N clients) beside a plain loopback socket copy, and the server's memory bound.")
        {
            json, chunkMib, clients, rounds, passes, memoryMaxSize,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var settings = new Settings(
                Math.Clamp(parse.GetValue(chunkMib), 1, 1024) << 20,
                Math.Clamp(parse.GetValue(clients), 1, 256),
                Math.Max(4, parse.GetValue(rounds)),
                Math.Max(1, parse.GetValue(passes)),
                Math.Max(0, parse.GetValue(memoryMaxSize)));
            var results = await RunAsync(settings, cancellationToken).ConfigureAwait(false);
            Print(results, parse.GetValue(json));
            return results["errors"]!.GetValue<long>() == 0 ? 0 : 1;
        });
        return command;
    }

    private sealed record Settings(int ChunkBytes, int Clients, int Rounds, int Passes, double MemoryMaxSizeGib);

    private static async Task<JsonObject> RunAsync(Settings settings, CancellationToken cancellationToken)
    {
        var results = new JsonObject
        {
            ["chunk_bytes"] = settings.ChunkBytes,
            ["clients"] = settings.Clients,
            ["processor_count"] = Environment.ProcessorCount,
        };
        // One client and N clients work on the same amount of distinct memory (N source chunks, 2 × N stored keys), and
        // so does the socket baseline (N source chunks), so no path is flattered by a cache-resident working set.
        var keys = 2 * settings.Clients;
        var capacity = Math.Max(1L << 30, 2L * keys * (settings.ChunkBytes + 4096L) + (64L << 20));
        await using var server = new LmServer(new LmServerOptions { Host = "127.0.0.1", Port = 0, CapacityBytes = capacity, MaxPayloadBytes = settings.ChunkBytes });
        var endpoint = await server.StartAsync(cancellationToken).ConfigureAwait(false);
        await using var loopbackPair = await LoopbackPair.CreateAsync(settings.ChunkBytes, settings.Clients, cancellationToken).ConfigureAwait(false);
        var loopbackPairs = new LoopbackPair[settings.Clients];
        for (var i = 0; i < loopbackPairs.Length; i++)
        {
            loopbackPairs[i] = await LoopbackPair.CreateAsync(settings.ChunkBytes, 1, cancellationToken).ConfigureAwait(false);
        }
        await using var single = await ClientSet.CreateAsync(endpoint, 1, keys, settings.Clients, settings.ChunkBytes, 0, cancellationToken).ConfigureAwait(false);
        await using var many = await ClientSet.CreateAsync(endpoint, settings.Clients, 2, 1, settings.ChunkBytes, 1, cancellationToken).ConfigureAwait(false);
        var manyPerClient = Math.Max(2, settings.Rounds / settings.Clients);

        // The machine may get busier or quieter during the run, so the baseline and every measurement take turns,
        // pass after pass, and each reports its best pass: all of them see the same conditions.
        var measurements = new (string Name, Func<Task<double>> Measure)[]
        {
            ("loopback_tcp_gbps", () => loopbackPair.MeasureAsync(settings.Rounds, cancellationToken)),
            ("put_gbps", () => single.PutAsync(settings.Rounds, cancellationToken)),
            ("get_gbps", () => single.GetAsync(settings.Rounds, cancellationToken)),
            ("put_gbps_clients", () => many.PutAsync(manyPerClient, cancellationToken)),
            ("get_gbps_clients", () => many.GetAsync(manyPerClient, cancellationToken)),
            ("loopback_tcp_gbps_clients", async () =>
            {
                // N plain socket pairs at once, the same total bytes: the ceiling for N concurrent streams on this box.
                var stopwatch = Stopwatch.StartNew();
                await Task.WhenAll(loopbackPairs.Select(pair => Task.Run(() => pair.MeasureAsync(manyPerClient, cancellationToken), cancellationToken))).ConfigureAwait(false);
                return (double)settings.ChunkBytes * manyPerClient * loopbackPairs.Length / stopwatch.Elapsed.TotalSeconds / GB;
            }),
        };
        if (settings.Clients == 1)
        {
            measurements = measurements[..3];
        }
        Progress($"{settings.Passes} passes of: loopback socket copy, then 1 client, then {settings.Clients} clients; each moves {settings.Rounds} × {settings.ChunkBytes >> 20} MiB per direction");
        var best = new double[measurements.Length];
        for (var pass = -1; pass < settings.Passes; pass++)   // pass -1 warms up
        {
            for (var m = 0; m < measurements.Length; m++)
            {
                var value = await measurements[m].Measure().ConfigureAwait(false);
                if (pass >= 0)
                {
                    best[m] = Math.Max(best[m], value);
                }
            }
        }
        for (var m = 0; m < measurements.Length; m++)
        {
            results[measurements[m].Name] = Round(best[m]);
        }
        long errors = single.Errors + many.Errors;
        var loopback = best[0];
        results["put_vs_loopback"] = Round(best[1] / loopback);
        results["get_vs_loopback"] = Round(best[2] / loopback);
        if (settings.Clients > 1)
        {
            results["put_clients_vs_single"] = Round(results["put_gbps_clients"]!.GetValue<double>() / results["put_gbps"]!.GetValue<double>());
            results["get_clients_vs_single"] = Round(results["get_gbps_clients"]!.GetValue<double>() / results["get_gbps"]!.GetValue<double>());
            results["loopback_clients_vs_single"] = Round(best[5] / loopback);
            results["put_clients_vs_loopback_clients"] = Round(best[3] / best[5]);
            results["get_clients_vs_loopback_clients"] = Round(best[4] / best[5]);
        }
        foreach (var pair in loopbackPairs)
        {
            await pair.DisposeAsync().ConfigureAwait(false);
        }
        if (settings.MemoryMaxSizeGib > 0)
        {
            errors += await MeasureServerMemoryAsync(settings, results, cancellationToken).ConfigureAwait(false);
        }
        results["errors"] = errors;
        return results;
    }

    /// <summary>
    /// The ceiling: a plain socket copy of the same bytes. One long-lived connection (so TCP windows have grown, as on
    /// the connector's pooled connections), a sender writing whole chunks from the same number of distinct native
    /// source chunks as the clients use, a receiver reading each into one native chunk.
    /// </summary>
    private sealed class LoopbackPair : IAsyncDisposable
    {
        private readonly Socket _sender;
        private readonly Socket _receiver;
        private readonly NetworkStream _sendStream;
        private readonly NetworkStream _receiveStream;
        private readonly NativeSlabAllocator _allocator;
        private readonly MemoryObject[] _sources;
        private readonly MemoryObject _target;

        private LoopbackPair(Socket sender, Socket receiver, NativeSlabAllocator allocator, MemoryObject[] sources, MemoryObject target)
        {
            _sender = sender;
            _receiver = receiver;
            _sendStream = new NetworkStream(sender, ownsSocket: false);
            _receiveStream = new NetworkStream(receiver, ownsSocket: false);
            _allocator = allocator;
            _sources = sources;
            _target = target;
        }

        public static async Task<LoopbackPair> CreateAsync(int chunkBytes, int sourceCount, CancellationToken cancellationToken)
        {
            using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            listener.Listen(1);
            var sender = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            var acceptTask = listener.AcceptAsync(cancellationToken);
            await sender.ConnectAsync(listener.LocalEndPoint!, cancellationToken).ConfigureAwait(false);
            var receiver = await acceptTask.ConfigureAwait(false);
            receiver.NoDelay = true;
            var allocator = new NativeSlabAllocator((sourceCount + 1) * (chunkBytes + 4096L));
            var metadata = MemoryObjectMetadata.Opaque(chunkBytes);
            var sources = new MemoryObject[sourceCount];
            for (var i = 0; i < sourceCount; i++)
            {
                allocator.TryAllocate(metadata, out var source);
                new Random(i).NextBytes(source!.Span);
                sources[i] = source;
            }
            allocator.TryAllocate(metadata, out var target);
            return new LoopbackPair(sender, receiver, allocator, sources, target!);
        }

        public async Task<double> MeasureAsync(int rounds, CancellationToken cancellationToken)
        {
            var stopwatch = Stopwatch.StartNew();
            var receiving = Task.Run(async () =>
            {
                for (var i = 0; i < rounds; i++)
                {
                    await _receiveStream.ReadExactlyAsync(_target.Memory, cancellationToken).ConfigureAwait(false);
                }
            }, cancellationToken);
            for (var i = 0; i < rounds; i++)
            {
                await _sendStream.WriteAsync(_sources[i % _sources.Length].Memory, cancellationToken).ConfigureAwait(false);
            }
            await receiving.ConfigureAwait(false);
            return (double)_target.Length * rounds / stopwatch.Elapsed.TotalSeconds / GB;
        }

        public async ValueTask DisposeAsync()
        {
            await _sendStream.DisposeAsync().ConfigureAwait(false);
            await _receiveStream.DisposeAsync().ConfigureAwait(false);
            _sender.Dispose();
            _receiver.Dispose();
            foreach (var source in _sources)
            {
                source.Release();
            }
            _target.Release();
            _allocator.Dispose();
        }
    }

    /// <summary>Runs a separate server process, writes 4 × its capacity and reads its peak resident size.</summary>
    private static async Task<long> MeasureServerMemoryAsync(Settings settings, JsonObject results, CancellationToken cancellationToken)
    {
        var capacity = (long)(settings.MemoryMaxSizeGib * LmServerOptions.GiB);
        var (fileName, prefix) = SelfCommand();
        var start = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in prefix.Concat([LmMemoryServer.Name, "--max-size", settings.MemoryMaxSizeGib.ToString(CultureInfo.InvariantCulture)]))
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start) ?? throw new InvalidOperationException("could not start the server process");
        try
        {
            _ = process.StandardError.ReadToEndAsync(cancellationToken);
            var line = await process.StandardOutput.ReadLineAsync(cancellationToken).ConfigureAwait(false) ?? throw new InvalidOperationException("the server process exited before listening");
            var url = line[(line.IndexOf("lm://", StringComparison.Ordinal) + 5)..].Split(',')[0];
            var port = int.Parse(url[(url.LastIndexOf(':') + 1)..], CultureInfo.InvariantCulture);
            var idleRss = ReadStatus(process.Id, "VmRSS");
            var chunks = (int)Math.Ceiling(4.0 * capacity / settings.ChunkBytes);
            Progress($"memory: writing {chunks} × {settings.ChunkBytes >> 20} MiB (4 × --max-size {settings.MemoryMaxSizeGib} GiB) into a server process");
            await using (var connector = new LmConnector(new LmConnectorOptions { Host = "127.0.0.1", Port = port, Connections = 1, OperationTimeout = TimeSpan.FromMinutes(2) }))
            using (var allocator = new NativeSlabAllocator(settings.ChunkBytes + 4096L))
            {
                allocator.TryAllocate(MemoryObjectMetadata.Opaque(settings.ChunkBytes), out var block);
                using (block)
                {
                    Random.Shared.NextBytes(block!.Span);
                    for (var i = 0; i < chunks; i++)
                    {
                        await connector.PutAsync(ClientSet.Key(999, i), block, cancellationToken).ConfigureAwait(false);
                    }
                    await connector.PingAsync(cancellationToken).ConfigureAwait(false);
                }
            }
            var peak = ReadStatus(process.Id, "VmHWM");
            results["memory_max_size_bytes"] = capacity;
            results["memory_written_bytes"] = (long)chunks * settings.ChunkBytes;
            results["memory_server_idle_rss_bytes"] = idleRss;
            results["memory_server_peak_rss_bytes"] = peak;
            results["memory_peak_vs_max_size"] = Round((double)peak / capacity);
            return peak > 0 && peak < capacity * 1.1 ? 0 : 1;
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    /// <summary>How to start this same executable again: the apphost, or <c>dotnet lmcache-bench.dll</c>.</summary>
    private static (string FileName, string[] Prefix) SelfCommand()
    {
        var processPath = Environment.ProcessPath ?? "dotnet";
        return Path.GetFileNameWithoutExtension(processPath) == "dotnet"
            ? (processPath, [typeof(LmBench).Assembly.Location])
            : (processPath, []);
    }

    private static long ReadStatus(int pid, string field)
    {
        if (!OperatingSystem.IsLinux())
        {
            return 0;
        }
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
            {
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            }
        }
        return 0;
    }

    private static async Task<double> BestOfAsync(int passes, Func<Task<double>> measure)
    {
        await measure().ConfigureAwait(false);   // warm-up
        var best = 0.0;
        for (var i = 0; i < passes; i++)
        {
            best = Math.Max(best, await measure().ConfigureAwait(false));
        }
        return best;
    }

    private static double Round(double value) => Math.Round(value, 3);

    private static void Progress(string text) => Console.Error.WriteLine($"bench: {text}");

    private static void Print(JsonObject results, bool json)
    {
        if (json)
        {
            Console.WriteLine(results.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return;
        }
        var width = results.Max(p => p.Key.Length);
        foreach (var (name, value) in results)
        {
            Console.WriteLine($"{name.PadRight(width)}  {value}");
        }
    }

    /// <summary>Clients, each with its own connector (one connection, like one engine worker) and its own chunk.</summary>
    private sealed class ClientSet : IAsyncDisposable
    {
        private readonly LmConnector[] _connectors;
        private readonly MemoryObject[][] _sources;
        private readonly NativeSlabAllocator _allocator;
        private readonly int _keysPerClient;
        private long _errors;

        private ClientSet(LmConnector[] connectors, MemoryObject[][] sources, NativeSlabAllocator allocator, int keysPerClient)
        {
            _connectors = connectors;
            _sources = sources;
            _allocator = allocator;
            _keysPerClient = keysPerClient;
        }

        public long Errors => Interlocked.Read(ref _errors);

        private int _group;

        public static CacheEngineKey Key(int client, int index) =>
            new("vllm", "bench/lm", 1, 0, Convert.ToHexStringLower(BitConverter.GetBytes(((long)client << 32) | (uint)index)).PadLeft(64, '0'));

        public static async Task<ClientSet> CreateAsync(
            IPEndPoint endpoint, int clients, int keysPerClient, int sourcesPerClient, int chunkBytes, int group, CancellationToken cancellationToken)
        {
            // Sources plus one receive block per client.
            var allocator = new NativeSlabAllocator((long)clients * (sourcesPerClient + 1) * (chunkBytes + 4096L));
            var metadata = new MemoryObjectMetadata(new KvShape(chunkBytes / 2, 0, 0, 0), KvDType.BFloat16, MemoryFormat.KV2LTD);
            var connectors = new LmConnector[clients];
            var sources = new MemoryObject[clients][];
            for (var c = 0; c < clients; c++)
            {
                connectors[c] = new LmConnector(new LmConnectorOptions { Host = endpoint.Address.ToString(), Port = endpoint.Port, Connections = 1, OperationTimeout = TimeSpan.FromMinutes(2) });
                sources[c] = new MemoryObject[sourcesPerClient];
                for (var i = 0; i < sourcesPerClient; i++)
                {
                    if (!allocator.TryAllocate(metadata, out var source))
                    {
                        throw new InvalidOperationException("bench allocator too small");
                    }
                    new Random((c * 1000) + i).NextBytes(source.Span);
                    sources[c][i] = source;
                }
                for (var k = 0; k < keysPerClient; k++)
                {
                    await connectors[c].PutAsync(Key((group << 16) + c, k), sources[c][k % sourcesPerClient], cancellationToken).ConfigureAwait(false);
                }
            }
            var set = new ClientSet(connectors, sources, allocator, keysPerClient) { _group = group };
            // Check once, outside the timed loops, that what comes back is what went in.
            for (var c = 0; c < clients; c++)
            {
                using var read = await connectors[c].GetAsync(Key((group << 16) + c, 0), allocator, cancellationToken).ConfigureAwait(false);
                if (read is null || !read.Span.SequenceEqual(sources[c][0].Span))
                {
                    set._errors++;
                    await Console.Error.WriteLineAsync($"bench: client {c} read back wrong bytes").ConfigureAwait(false);
                }
            }
            return set;
        }

        public async Task<double> PutAsync(int perClient, CancellationToken cancellationToken)
        {
            var stopwatch = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, _connectors.Length).Select(c => Task.Run(async () =>
            {
                for (var i = 0; i < perClient; i++)
                {
                    await _connectors[c].PutAsync(Key((_group << 16) + c, i % _keysPerClient), _sources[c][i % _sources[c].Length], cancellationToken).ConfigureAwait(false);
                }
                // PUT has no reply: a HEALTH behind them returns once the server has consumed every byte.
                await _connectors[c].PingAsync(cancellationToken).ConfigureAwait(false);
            }, cancellationToken))).ConfigureAwait(false);
            return (double)_sources[0][0].Length * perClient * _connectors.Length / stopwatch.Elapsed.TotalSeconds / GB;
        }

        public async Task<double> GetAsync(int perClient, CancellationToken cancellationToken)
        {
            var stopwatch = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, _connectors.Length).Select(c => Task.Run(async () =>
            {
                for (var i = 0; i < perClient; i++)
                {
                    using var read = await _connectors[c].GetAsync(Key((_group << 16) + c, i % _keysPerClient), _allocator, cancellationToken).ConfigureAwait(false);
                    if (read is null)
                    {
                        Interlocked.Increment(ref _errors);
                    }
                }
            }, cancellationToken))).ConfigureAwait(false);
            return (double)_sources[0][0].Length * perClient * _connectors.Length / stopwatch.Elapsed.TotalSeconds / GB;
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var connector in _connectors)
            {
                await connector.DisposeAsync().ConfigureAwait(false);
            }
            foreach (var source in _sources.SelectMany(s => s))
            {
                source.Release();
            }
            _allocator.Dispose();
        }
    }
}
