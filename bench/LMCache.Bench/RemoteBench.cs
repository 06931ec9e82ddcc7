using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using LMCache.Connectors.Redis;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.Remote;

namespace LMCache.Bench;

/// <summary>
/// <c>lmcache bench remote</c>: store, retrieve and lookup throughput of the remote connector against a live server,
/// and with <c>--baseline</c> <c>redis-benchmark</c> SET/GET of the same value size against the same server in the same run.
/// </summary>
internal static class RemoteBench
{
    private const int BytesPerToken = 2 * 32 * 1024 * 2; // [2, 32 layers, T, 1024] bf16: a Llama-8B-like chunk
    private const int LookupChunks = 64;

    public static Command Create()
    {
        var url = BenchOptions.RemoteUrl();
        var chunkMib = new Option<double>("--chunk-mib") { Description = "Chunk size in MiB (rounded to whole tokens of 128 KiB). Default 4.", DefaultValueFactory = _ => 4 };
        var chunks = new Option<int>("--chunks") { Description = "Chunks per round; 0 = 512 MiB worth (at least 8, at most 128). Default 0." };
        var rounds = new Option<int>("--rounds") { Description = "Measured rounds after one warm-up round; medians are reported, and the best round. Default 5.", DefaultValueFactory = _ => 5 };
        var clients = new Option<int>("--clients") { Description = "Concurrent puts and concurrent read batches (also redis-benchmark -c). Default 1.", DefaultValueFactory = _ => 1 };
        var batch = new Option<int>("--batch") { Description = "Chunks per pipelined read (one GetPrefix call). Default 8.", DefaultValueFactory = _ => 8 };
        var baseline = new Option<bool>("--baseline") { Description = "Also run redis-benchmark SET/GET of the same value size against the same server." };
        var config = BenchOptions.Config();
        var json = BenchOptions.Json();
        var command = new Command("remote", "Remote tier throughput (store, retrieve, 64-chunk lookup) against a live Redis, Sentinel or Cluster, beside redis-benchmark.")
        {
            url, chunkMib, chunks, rounds, clients, batch, baseline, config, json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var chunkBytes = Math.Max(1, (int)Math.Round(parse.GetValue(chunkMib) * (1 << 20) / BytesPerToken)) * BytesPerToken;
            var count = parse.GetValue(chunks) is > 0 and var c ? c : Math.Clamp((512 << 20) / chunkBytes, 8, 128);
            var settings = new Settings(chunkBytes, count, Math.Max(1, parse.GetValue(rounds)), Math.Max(1, parse.GetValue(clients)), Math.Max(1, parse.GetValue(batch)));
            await using var connector = await BenchOptions.OpenRemoteAsync(parse.GetValue(url), parse.GetValue(config), ct, timeoutSeconds: 120);
            if (connector is null)
            {
                return 2;
            }
            // The client baseline overwrites the same keys every round, as our store and redis-benchmark do (fresh keys
            // would make the server fault in new memory on every round and slow the baseline down unfairly).
            var clientPrefix = $"lmcache-bench-client:{Guid.NewGuid():N}:";
            var clientKeys = Enumerable.Range(0, settings.Chunks).Select(i => (StackExchange.Redis.RedisKey)(clientPrefix + i.ToString(CultureInfo.InvariantCulture))).ToArray();
            string? baselineError = null;
            Func<MemoryObject[], IReadOnlyList<Contender>>? baselines = null;
            if (parse.GetValue(baseline))
            {
                baselines = sources =>
                {
                    var list = new List<Contender>();
                    if (RedisBenchmarkArguments(connector, settings, out var arguments) is { } reason)
                    {
                        baselineError = reason;
                    }
                    else
                    {
                        list.Add(new Contender(
                            "redis-benchmark",
                            () => RunRedisBenchmarkAsync(arguments, "set", settings, error => baselineError ??= error, ct),
                            () => RunRedisBenchmarkAsync(arguments, "get", settings, error => baselineError ??= error, ct)));
                    }
                    if (connector is RedisConnector redis)
                    {
                        list.Add(new Contender(
                            "StackExchange.Redis",
                            () => ClientSetRoundAsync(redis, settings, sources, clientKeys, ct),
                            () => ClientGetRoundAsync(redis, settings, clientKeys, ct)));
                    }
                    return list;
                };
            }
            var (result, sides) = await MeasureAsync(connector, settings, baselines, ct);
            if (baselines is not null && connector is RedisConnector client)
            {
                var db = await client.GetClientDatabaseAsync(ct);
                await Task.WhenAll(clientKeys.Append(RedisBenchmarkKey).Select(name => db.KeyDeleteAsync(name)));   // one by one: a cluster spreads them over slots
            }
            if (baselines is not null)
            {
                var none = new RoundStatistics([], []);
                var benchmark = sides.GetValueOrDefault("redis-benchmark") ?? none;
                var library = sides.GetValueOrDefault("StackExchange.Redis") ?? none;
                result["redis_benchmark_set_gbps"] = benchmark.Write > 0 ? Math.Round(benchmark.Write, 3) : null;
                result["redis_benchmark_get_gbps"] = benchmark.Read > 0 ? Math.Round(benchmark.Read, 3) : null;
                result["redis_benchmark_set_gbps_best"] = benchmark.Write > 0 ? Math.Round(benchmark.BestWrite, 3) : null;
                result["redis_benchmark_get_gbps_best"] = benchmark.Read > 0 ? Math.Round(benchmark.BestRead, 3) : null;
                if (baselineError is not null)
                {
                    result["redis_benchmark_error"] = baselineError;
                }
                if (benchmark is { Write: > 0, Read: > 0 })
                {
                    result["store_vs_redis_benchmark"] = Math.Round((double)result["store_gbps"]! / benchmark.Write, 3);
                    result["retrieve_vs_redis_benchmark"] = Math.Round((double)result["retrieve_gbps"]! / benchmark.Read, 3);
                }
                if (library is { Write: > 0, Read: > 0 })
                {
                    result["stackexchange_redis_set_gbps"] = Math.Round(library.Write, 3);
                    result["stackexchange_redis_get_gbps"] = Math.Round(library.Read, 3);
                    result["store_vs_stackexchange_redis"] = Math.Round((double)result["store_gbps"]! / library.Write, 3);
                    result["retrieve_vs_stackexchange_redis"] = Math.Round((double)result["retrieve_gbps"]! / library.Read, 3);
                    if (benchmark is { Write: > 0, Read: > 0 })
                    {
                        result["stackexchange_redis_set_vs_redis_benchmark"] = Math.Round(library.Write / benchmark.Write, 3);
                        result["stackexchange_redis_get_vs_redis_benchmark"] = Math.Round(library.Read / benchmark.Read, 3);
                    }
                }
            }
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(result));
            }
            else
            {
                foreach (var (name, value) in result)
                {
                    Console.WriteLine($"{name,-30} {Convert.ToString(value, CultureInfo.InvariantCulture)}");
                }
            }
            return 0;
        });
        return command;
    }

    private const string RedisBenchmarkKey = "key:__rand_int__";   // redis-benchmark's key without -r

    private sealed record Settings(int ChunkBytes, int Chunks, int Rounds, int Clients, int Batch)
    {
        public double TotalBytes => (double)ChunkBytes * Chunks;
    }

    /// <summary>One side of the comparison: a write round and a read round of the same chunks, each returning GB/s.</summary>
    private sealed record Contender(string Name, Func<Task<double>> WriteRoundAsync, Func<Task<double>> ReadRoundAsync);

    /// <summary>One side's rounds in GB/s.</summary>
    private sealed record RoundStatistics(IReadOnlyList<double> Writes, IReadOnlyList<double> Reads)
    {
        public double Write => Writes.Count > 0 && Writes.All(w => w > 0) ? Median(Writes) : 0;
        public double Read => Reads.Count > 0 && Reads.All(r => r > 0) ? Median(Reads) : 0;
        public double BestWrite => Writes.DefaultIfEmpty().Max();
        public double BestRead => Reads.DefaultIfEmpty().Max();
    }

    private static double Median(IReadOnlyList<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>
    /// Our store/retrieve rounds and the baselines' rounds, interleaved so all see the same background load: every
    /// round runs all writers, then all readers, starting one later each round. The rotation matters: a write round
    /// that follows reads on the same connection runs up to a quarter slower (measured with the client alone), so a
    /// fixed order would favour whoever writes after a write. Medians of rounds on every side: on a shared machine single
    /// rounds swing by a third, and the best round rewards whoever has the widest spread rather than the fastest path.
    /// </summary>
    private static async Task<(Dictionary<string, object?> Result, Dictionary<string, RoundStatistics> Rounds)> MeasureAsync(
        IRemoteConnector connector, Settings s, Func<MemoryObject[], IReadOnlyList<Contender>>? baselines, CancellationToken ct)
    {
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(32, s.ChunkBytes / BytesPerToken, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD);
        var tiny = new MemoryObjectMetadata(KvShape.Kv2Ltd(1, 1, 64), KvDType.BFloat16, MemoryFormat.KV2LTD);
        using var allocator = new NativeSlabAllocator((long)s.ChunkBytes * (s.Chunks + s.Clients * s.Batch + 2) + (16L << 20));
        var scope = new KeyScope("vllm", "lmcache-bench", DType: metadata.DType.ToKeyToken());   // the 6-field form every command writes
        var run = Guid.NewGuid().ToByteArray();
        var keys = Enumerable.Range(0, s.Chunks).Select(i => scope.MakeKey(Hash(run, i))).ToArray();
        var lookupKeys = Enumerable.Range(0, LookupChunks).Select(i => scope.MakeKey(Hash(run, 1_000_000 + i))).ToArray();
        var sources = new MemoryObject[s.Chunks];
        for (var i = 0; i < sources.Length; i++)
        {
            if (!allocator.TryAllocate(metadata, out var item))
            {
                throw new InvalidOperationException("benchmark memory could not be allocated");
            }
            Random.Shared.NextBytes(item.Span);
            sources[i] = item;
        }
        try
        {
            // Warm-up: connections, JIT, server memory.
            await connector.PutAsync(keys[0], sources[0], ct);
            using (var warm = await connector.GetAsync(keys[0], allocator, ct))
            {
                if (warm is null || !warm.Span.SequenceEqual(sources[0].Span))
                {
                    throw new InvalidOperationException("warm-up read did not return the stored bytes");
                }
            }

            var verified = 0;
            var verify = true;
            var contenders = new List<Contender>
            {
                new("lmcache",
                    async () => s.TotalBytes / await StoreRoundAsync(connector, s, keys, sources, ct) / 1e9,
                    async () =>
                    {
                        var seconds = await RetrieveRoundAsync(connector, s, keys, sources, allocator, verify ? () => Interlocked.Increment(ref verified) : null, ct);
                        verify = false;
                        return s.TotalBytes / seconds / 1e9;
                    }),
            };
            contenders.AddRange(baselines?.Invoke(sources) ?? []);
            var writes = contenders.Select(_ => new List<double>()).ToArray();
            var reads = contenders.Select(_ => new List<double>()).ToArray();
            // Round -1 warms every side up and is not counted: fresh keys make the server fault in memory, the JIT
            // compiles, and our first retrieve compares every byte.
            for (var round = -1; round < s.Rounds; round++)
            {
                for (var k = 0; k < contenders.Count; k++)
                {
                    var i = (Math.Max(round, 0) + k) % contenders.Count;
                    var gbps = await contenders[i].WriteRoundAsync();
                    if (round >= 0)
                    {
                        writes[i].Add(gbps);
                    }
                }
                for (var k = 0; k < contenders.Count; k++)
                {
                    var i = (Math.Max(round, 0) + k) % contenders.Count;
                    var gbps = await contenders[i].ReadRoundAsync();
                    if (round >= 0)
                    {
                        reads[i].Add(gbps);
                    }
                }
            }

            foreach (var key in lookupKeys)
            {
                using var small = allocator.TryAllocate(tiny, out var item) ? item : throw new InvalidOperationException("no memory");
                await connector.PutAsync(key, small, ct);
            }
            // Server read events per lookup count its round trips (see RedisInfoProbe); best effort: a user without
            // INFO rights (ACL) still gets the rest of the report.
            await using var probe = connector is RedisConnector redis ? await TryOpenProbeAsync(redis, ct) : null;
            var lookups = 0;
            var lookupSeconds = 0.0;
            async Task<int> LookUpForTwoSecondsAsync()
            {
                var watch = Stopwatch.StartNew();
                while (watch.Elapsed < TimeSpan.FromSeconds(2))
                {
                    if (await connector.ExistsPrefixAsync(lookupKeys, ct) != LookupChunks)
                    {
                        throw new InvalidOperationException("lookup keys missing");
                    }
                    lookups++;
                }
                lookupSeconds = watch.Elapsed.TotalSeconds;
                return lookups;
            }
            double? readsPerLookup = null;
            if (probe is null)
            {
                await LookUpForTwoSecondsAsync();
            }
            else
            {
                readsPerLookup = await probe.ReadEventsPerOperationAsync(LookUpForTwoSecondsAsync, ct);
            }

            var sides = contenders.Select((c, i) => (c.Name, Rounds: new RoundStatistics(writes[i], reads[i]))).ToDictionary(e => e.Name, e => e.Rounds);
            var ours = sides[contenders[0].Name];
            var result = new Dictionary<string, object?>
            {
                ["remote_url"] = connector.Description,
                ["chunk_bytes"] = s.ChunkBytes,
                ["chunks"] = s.Chunks,
                ["rounds"] = s.Rounds,
                ["clients"] = s.Clients,
                ["read_batch"] = s.Batch,
                ["statistic"] = $"median of {s.Rounds} rounds after a warm-up round; *_best: the best round",
                ["store_gbps"] = Math.Round(ours.Write, 3),
                ["retrieve_gbps"] = Math.Round(ours.Read, 3),
                ["store_gbps_best"] = Math.Round(ours.BestWrite, 3),
                ["retrieve_gbps_best"] = Math.Round(ours.BestRead, 3),
                ["lookup_chunks_per_s"] = Math.Round(LookupChunks * lookups / lookupSeconds),
                ["lookup_batch_chunks"] = LookupChunks,
                ["lookup_server_reads_per_batch"] = readsPerLookup is { } perLookup ? Math.Round(perLookup, 2) : null,
                ["lookup_batch_ms"] = Math.Round(lookupSeconds * 1000 / lookups, 3),
                ["verified_reads"] = verified,
            };
            return (result, sides);
        }
        finally
        {
            foreach (var item in sources)
            {
                item.Release();
            }
            foreach (var key in keys.Concat(lookupKeys))
            {
                try
                {
                    await connector.RemoveAsync(key, CancellationToken.None);
                }
                catch (Exception)
                {
                    // Best effort clean-up of benchmark keys.
                }
            }
        }
    }

    private static async Task<RedisInfoProbe?> TryOpenProbeAsync(RedisConnector redis, CancellationToken ct)
    {
        try
        {
            return await redis.OpenInfoProbeAsync(ct);
        }
        catch (StackExchange.Redis.RedisException)
        {
            return null;
        }
    }

    private static async Task<double> StoreRoundAsync(IRemoteConnector connector, Settings s, CacheEngineKey[] keys, MemoryObject[] sources, CancellationToken ct)
    {
        var next = -1;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, s.Clients).Select(_ => Task.Run(async () =>
        {
            for (var i = Interlocked.Increment(ref next); i < s.Chunks; i = Interlocked.Increment(ref next))
            {
                await connector.PutAsync(keys[i], sources[i], ct);
            }
        }, ct)));
        return watch.Elapsed.TotalSeconds;
    }

    private static async Task<double> RetrieveRoundAsync(
        IRemoteConnector connector, Settings s, CacheEngineKey[] keys, MemoryObject[] sources, IMemoryAllocator allocator, Action? onVerified, CancellationToken ct)
    {
        var next = -1;
        var failures = 0;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, s.Clients).Select(_ => Task.Run(async () =>
        {
            var output = new MemoryObject?[s.Batch];
            for (var b = Interlocked.Increment(ref next); b * s.Batch < s.Chunks; b = Interlocked.Increment(ref next))
            {
                var start = b * s.Batch;
                var length = Math.Min(s.Batch, s.Chunks - start);
                var got = await connector.GetPrefixAsync(keys.AsMemory(start, length), output, allocator, ct);
                if (got != length)
                {
                    Interlocked.Increment(ref failures);
                }
                for (var i = 0; i < got; i++)
                {
                    if (onVerified is not null)
                    {
                        if (!output[i]!.Span.SequenceEqual(sources[start + i].Span))
                        {
                            throw new InvalidOperationException($"chunk {start + i} came back with other bytes than were stored");
                        }
                        onVerified();
                    }
                    output[i]!.Release();
                    output[i] = null;
                }
            }
        }, ct)));
        var seconds = watch.Elapsed.TotalSeconds;
        return failures > 0
            ? throw new InvalidOperationException($"{failures} read batches missed (is the server evicting? check maxmemory)")
            : seconds;
    }

    /// <summary>
    /// The client library alone: StackExchange.Redis <c>SET</c>s of the same values and <c>GET</c>s into pooled
    /// leases that are dropped unread, with as many in flight as the connector keeps (<c>--clients</c> writers; reads
    /// within the connector's read window). No metadata, checksum, validation or copy into chunk memory: the gap
    /// between this and <c>store_gbps</c>/<c>retrieve_gbps</c> is what our layer costs; the gap between this and
    /// redis-benchmark is the library's.
    /// </summary>
    private static async Task<double> ClientSetRoundAsync(RedisConnector redis, Settings s, MemoryObject[] sources, StackExchange.Redis.RedisKey[] names, CancellationToken ct)
    {
        var db = await redis.GetClientDatabaseAsync(ct);
        var next = -1;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, s.Clients).Select(_ => Task.Run(async () =>
        {
            for (var i = Interlocked.Increment(ref next); i < s.Chunks; i = Interlocked.Increment(ref next))
            {
                await db.StringSetAsync(names[i], (ReadOnlyMemory<byte>)sources[i].Memory);
            }
        }, ct)));
        return s.TotalBytes / watch.Elapsed.TotalSeconds / 1e9;
    }

    private static async Task<double> ClientGetRoundAsync(RedisConnector redis, Settings s, StackExchange.Redis.RedisKey[] names, CancellationToken ct)
    {
        var db = await redis.GetClientDatabaseAsync(ct);
        var depth = Math.Max(2, (int)(redis.Options.ReadWindowBytes / s.ChunkBytes));   // as many in flight as the connector keeps
        var next = -1;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, s.Clients).Select(_ => Task.Run(async () =>
        {
            var inFlight = new Queue<Task<StackExchange.Redis.Lease<byte>?>>();
            while (true)
            {
                while (inFlight.Count < depth && Interlocked.Increment(ref next) is var i && i < s.Chunks)
                {
                    inFlight.Enqueue(db.StringGetLeaseAsync(names[i]));
                }
                if (inFlight.Count == 0)
                {
                    break;
                }
                using var lease = await inFlight.Dequeue();
                if (lease is null || lease.Length != s.ChunkBytes)
                {
                    throw new InvalidOperationException("client baseline read came back short");
                }
            }
        }, ct)));
        return s.TotalBytes / watch.Elapsed.TotalSeconds / 1e9;
    }

    private static ChunkHash Hash(byte[] run, int index)
    {
        Span<byte> bytes = stackalloc byte[ChunkHash.Size];
        run.CopyTo(bytes);
        BitConverter.TryWriteBytes(bytes[16..], index);
        return new ChunkHash(bytes);
    }

    /// <summary>The redis-benchmark arguments that reach the connector's server, or why it cannot run.</summary>
    private static string? RedisBenchmarkArguments(IRemoteConnector connector, Settings s, out List<string> arguments)
    {
        arguments = [];
        if (connector is not RedisConnector redis)
        {
            return "redis-benchmark needs a Redis URL";
        }
        var executable = new[] { "/usr/bin/redis-benchmark", "/usr/local/bin/redis-benchmark" }.FirstOrDefault(File.Exists);
        if (executable is null)
        {
            return "redis-benchmark not found (apt-get install redis-tools)";
        }
        arguments.Add(executable);
        var url = redis.Url;
        if (url.EndPoints[0] is System.Net.Sockets.UnixDomainSocketEndPoint socket)
        {
            arguments.AddRange(["-s", socket.ToString()]);
        }
        else
        {
            var (host, port) = url.Topology == RedisTopology.Sentinel && redis.CurrentMaster is { } master
                ? master switch
                {
                    System.Net.IPEndPoint ip => (ip.Address.ToString(), ip.Port),
                    System.Net.DnsEndPoint dns => (dns.Host, dns.Port),
                    _ => url.FirstHost!.Value,
                }
                : url.FirstHost!.Value;
            arguments.AddRange(["-h", host, "-p", port.ToString(CultureInfo.InvariantCulture)]);
        }
        if (url.Topology == RedisTopology.Cluster)
        {
            arguments.Add("--cluster");
        }
        if (url.User is { } user)
        {
            arguments.AddRange(["--user", user]);
        }
        if (url.Password is { } password)
        {
            arguments.AddRange(["-a", password]);
        }
        if (url.Database != 0)
        {
            arguments.AddRange(["--dbnum", url.Database.ToString(CultureInfo.InvariantCulture)]);
        }
        arguments.AddRange(["-d", s.ChunkBytes.ToString(CultureInfo.InvariantCulture), "-n", Math.Max(10, s.Chunks).ToString(CultureInfo.InvariantCulture),
            "-c", s.Clients.ToString(CultureInfo.InvariantCulture), "--csv"]);
        return null;
    }

    /// <summary>One redis-benchmark test (<c>set</c> or <c>get</c>); GB/s, or 0 after reporting why it failed.</summary>
    private static async Task<double> RunRedisBenchmarkAsync(List<string> arguments, string test, Settings s, Action<string> onError, CancellationToken ct)
    {
        var info = new ProcessStartInfo(arguments[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments.Skip(1).Concat(["-t", test]))
        {
            info.ArgumentList.Add(argument);
        }
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync(ct);
        var error = await process.StandardError.ReadToEndAsync(ct);
        await process.WaitForExitAsync(ct);
        foreach (var line in (await output).Split('\n'))
        {
            var fields = line.Split(',').Select(f => f.Trim().Trim('"')).ToArray();
            if (fields.Length >= 2 && fields[0].Equals(test, StringComparison.OrdinalIgnoreCase)
                && double.TryParse(fields[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var requestsPerSecond))
            {
                return requestsPerSecond * s.ChunkBytes / 1e9;
            }
        }
        onError($"redis-benchmark -t {test} exited {process.ExitCode}: {error.Trim()} {(await output).Trim()}");
        return 0;
    }
}
