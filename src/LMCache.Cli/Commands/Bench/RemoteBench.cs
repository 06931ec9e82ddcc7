using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using LMCache.Connectors.Redis;
using LMCache.Core.Keys;
using LMCache.Core.Memory;
using LMCache.Storage.Remote;

namespace LMCache.Cli.Commands.Bench;

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
        var url = RemoteConnection.UrlOption();
        var chunkMib = new Option<double>("--chunk-mib") { Description = "Chunk size in MiB (rounded to whole tokens of 128 KiB). Default 4.", DefaultValueFactory = _ => 4 };
        var chunks = new Option<int>("--chunks") { Description = "Chunks per round; 0 = 512 MiB worth (at least 8, at most 128). Default 0." };
        var rounds = new Option<int>("--rounds") { Description = "Rounds; the best is reported. Default 3.", DefaultValueFactory = _ => 3 };
        var clients = new Option<int>("--clients") { Description = "Concurrent puts and concurrent read batches (also redis-benchmark -c). Default 1.", DefaultValueFactory = _ => 1 };
        var batch = new Option<int>("--batch") { Description = "Chunks per pipelined read (one GetPrefix call). Default 8.", DefaultValueFactory = _ => 8 };
        var baseline = new Option<bool>("--baseline") { Description = "Also run redis-benchmark SET/GET of the same value size against the same server." };
        var config = CommonOptions.Config();
        var json = CommonOptions.Json();
        var command = new Command("remote", "Remote tier throughput (store, retrieve, 64-chunk lookup) against a live Redis, Sentinel or Cluster, beside redis-benchmark.")
        {
            url, chunkMib, chunks, rounds, clients, batch, baseline, config, json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var chunkBytes = Math.Max(1, (int)Math.Round(parse.GetValue(chunkMib) * (1 << 20) / BytesPerToken)) * BytesPerToken;
            var count = parse.GetValue(chunks) is > 0 and var c ? c : Math.Clamp((512 << 20) / chunkBytes, 8, 128);
            var settings = new Settings(chunkBytes, count, Math.Max(1, parse.GetValue(rounds)), Math.Max(1, parse.GetValue(clients)), Math.Max(1, parse.GetValue(batch)));
            await using var connector = await RemoteConnection.OpenAsync(parse.GetValue(url), parse.GetValue(config), ct, timeoutSeconds: 120);
            if (connector is null)
            {
                return 2;
            }
            // The baseline runs once per round, interleaved with ours, so both see the same background load; best of rounds each.
            double? bestSet = null, bestGet = null, clientSet = null, clientGet = null;
            // The client baseline overwrites the same keys every round, as our store and redis-benchmark do (fresh keys
            // would make the server fault in new memory on every round and slow the baseline down unfairly).
            var clientPrefix = $"lmcache-bench-client:{Guid.NewGuid():N}:";
            string? baselineError = null;
            Func<MemoryObject[], Task>? baselineRound = parse.GetValue(baseline)
                ? async sources =>
                {
                    var (set, get, error) = await RunRedisBenchmarkAsync(connector, settings, ct);
                    bestSet = set is null ? bestSet : Math.Max(bestSet ?? 0, set.Value);
                    bestGet = get is null ? bestGet : Math.Max(bestGet ?? 0, get.Value);
                    baselineError ??= error;
                    if (connector is RedisConnector redis)
                    {
                        var (rawSet, rawGet) = await RunClientBaselineAsync(redis, settings, sources, clientPrefix, ct);
                        clientSet = Math.Max(clientSet ?? 0, rawSet);
                        clientGet = Math.Max(clientGet ?? 0, rawGet);
                    }
                }
                : null;
            var result = await MeasureAsync(connector, settings, baselineRound, ct);
            if (baselineRound is not null && connector is RedisConnector client)
            {
                var db = await client.GetClientDatabaseAsync(ct);
                await Task.WhenAll(Enumerable.Range(0, settings.Chunks).Select(i => db.KeyDeleteAsync(ClientKey(clientPrefix, i))));   // one by one: a cluster spreads them over slots
            }
            if (baselineRound is not null)
            {
                result["redis_benchmark_set_gbps"] = bestSet;
                result["redis_benchmark_get_gbps"] = bestGet;
                if (baselineError is not null)
                {
                    result["redis_benchmark_error"] = baselineError;
                }
                if (bestSet is > 0 && bestGet is > 0)
                {
                    result["store_vs_redis_benchmark"] = Math.Round((double)result["store_gbps"]! / bestSet.Value, 3);
                    result["retrieve_vs_redis_benchmark"] = Math.Round((double)result["retrieve_gbps"]! / bestGet.Value, 3);
                }
                if (clientSet is > 0 && clientGet is > 0)
                {
                    result["stackexchange_redis_set_gbps"] = Math.Round(clientSet.Value, 3);
                    result["stackexchange_redis_get_gbps"] = Math.Round(clientGet.Value, 3);
                    result["store_vs_stackexchange_redis"] = Math.Round((double)result["store_gbps"]! / clientSet.Value, 3);
                    result["retrieve_vs_stackexchange_redis"] = Math.Round((double)result["retrieve_gbps"]! / clientGet.Value, 3);
                    if (bestSet is > 0 && bestGet is > 0)
                    {
                        result["stackexchange_redis_set_vs_redis_benchmark"] = Math.Round(clientSet.Value / bestSet.Value, 3);
                        result["stackexchange_redis_get_vs_redis_benchmark"] = Math.Round(clientGet.Value / bestGet.Value, 3);
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

    private sealed record Settings(int ChunkBytes, int Chunks, int Rounds, int Clients, int Batch);

    private static async Task<Dictionary<string, object?>> MeasureAsync(IRemoteConnector connector, Settings s, Func<MemoryObject[], Task>? baselineRound, CancellationToken ct)
    {
        var metadata = new MemoryObjectMetadata(KvShape.Kv2Ltd(32, s.ChunkBytes / BytesPerToken, 1024), KvDType.BFloat16, MemoryFormat.KV2LTD);
        var tiny = new MemoryObjectMetadata(KvShape.Kv2Ltd(1, 1, 64), KvDType.BFloat16, MemoryFormat.KV2LTD);
        using var allocator = new NativeSlabAllocator((long)s.ChunkBytes * (s.Chunks + s.Clients * s.Batch + 2) + (16L << 20));
        var scope = new KeyScope("vllm", "lmcache-bench");
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

            var storeSeconds = double.MaxValue;
            var retrieveSeconds = double.MaxValue;
            var verified = 0;
            for (var round = 0; round < s.Rounds; round++)
            {
                storeSeconds = Math.Min(storeSeconds, await StoreRoundAsync(connector, s, keys, sources, ct));
                retrieveSeconds = Math.Min(retrieveSeconds, await RetrieveRoundAsync(connector, s, keys, sources, allocator, round == 0 ? () => Interlocked.Increment(ref verified) : null, ct));
                if (baselineRound is not null)
                {
                    await baselineRound(sources);
                }
            }

            foreach (var key in lookupKeys)
            {
                using var small = allocator.TryAllocate(tiny, out var item) ? item : throw new InvalidOperationException("no memory");
                await connector.PutAsync(key, small, ct);
            }
            var lookups = 0;
            var lookupWatch = Stopwatch.StartNew();
            while (lookupWatch.Elapsed < TimeSpan.FromSeconds(2))
            {
                if (await connector.ExistsPrefixAsync(lookupKeys, ct) != LookupChunks)
                {
                    throw new InvalidOperationException("lookup keys missing");
                }
                lookups++;
            }
            var lookupSeconds = lookupWatch.Elapsed.TotalSeconds;

            var total = (double)s.ChunkBytes * s.Chunks;
            return new Dictionary<string, object?>
            {
                ["remote_url"] = connector.Description,
                ["chunk_bytes"] = s.ChunkBytes,
                ["chunks"] = s.Chunks,
                ["rounds"] = s.Rounds,
                ["clients"] = s.Clients,
                ["read_batch"] = s.Batch,
                ["store_gbps"] = Math.Round(total / storeSeconds / 1e9, 3),
                ["retrieve_gbps"] = Math.Round(total / retrieveSeconds / 1e9, 3),
                ["lookup_chunks_per_s"] = Math.Round(LookupChunks * lookups / lookupSeconds),
                ["lookup_batch_chunks"] = LookupChunks,
                ["lookup_round_trips_per_batch"] = 1,
                ["lookup_batch_ms"] = Math.Round(lookupSeconds * 1000 / lookups, 3),
                ["verified_reads"] = verified,
            };
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
                    if (onVerified is not null && i == 0 && output[i]!.Span.SequenceEqual(sources[start].Span))
                    {
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
    private static async Task<(double SetGbps, double GetGbps)> RunClientBaselineAsync(
        RedisConnector redis, Settings s, MemoryObject[] sources, string prefix, CancellationToken ct)
    {
        var db = await redis.GetClientDatabaseAsync(ct);
        var names = Enumerable.Range(0, s.Chunks).Select(i => ClientKey(prefix, i)).ToArray();
        var next = -1;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, s.Clients).Select(_ => Task.Run(async () =>
        {
            for (var i = Interlocked.Increment(ref next); i < s.Chunks; i = Interlocked.Increment(ref next))
            {
                await db.StringSetAsync(names[i], (ReadOnlyMemory<byte>)sources[i].Memory);
            }
        }, ct)));
        var setSeconds = watch.Elapsed.TotalSeconds;

        var depth = Math.Max(2, (int)(redis.Options.ReadWindowBytes / s.ChunkBytes));   // as many in flight as the connector keeps
        next = -1;
        watch.Restart();
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
        return ((double)s.ChunkBytes * s.Chunks / setSeconds / 1e9, (double)s.ChunkBytes * s.Chunks / watch.Elapsed.TotalSeconds / 1e9);
    }

    private static StackExchange.Redis.RedisKey ClientKey(string prefix, int index) => prefix + index.ToString(CultureInfo.InvariantCulture);

    private static ChunkHash Hash(byte[] run, int index)
    {
        Span<byte> bytes = stackalloc byte[ChunkHash.Size];
        run.CopyTo(bytes);
        BitConverter.TryWriteBytes(bytes[16..], index);
        return new ChunkHash(bytes);
    }

    private static async Task<(double? Set, double? Get, string? Error)> RunRedisBenchmarkAsync(IRemoteConnector connector, Settings s, CancellationToken ct)
    {
        if (connector is not RedisConnector redis)
        {
            return (null, null, "redis-benchmark needs a Redis URL");
        }
        var executable = new[] { "/usr/bin/redis-benchmark", "/usr/local/bin/redis-benchmark" }.FirstOrDefault(File.Exists);
        if (executable is null)
        {
            return (null, null, "redis-benchmark not found (apt-get install redis-tools)");
        }
        var info = new ProcessStartInfo(executable) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        var url = redis.Url;
        if (url.EndPoints[0] is System.Net.Sockets.UnixDomainSocketEndPoint socket)
        {
            info.ArgumentList.Add("-s");
            info.ArgumentList.Add(socket.ToString());
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
            info.ArgumentList.Add("-h");
            info.ArgumentList.Add(host);
            info.ArgumentList.Add("-p");
            info.ArgumentList.Add(port.ToString(CultureInfo.InvariantCulture));
        }
        if (url.Topology == RedisTopology.Cluster)
        {
            info.ArgumentList.Add("--cluster");
        }
        if (url.User is { } user)
        {
            info.ArgumentList.Add("--user");
            info.ArgumentList.Add(user);
        }
        if (url.Password is { } password)
        {
            info.ArgumentList.Add("-a");
            info.ArgumentList.Add(password);
        }
        if (url.Database != 0)
        {
            info.ArgumentList.Add("--dbnum");
            info.ArgumentList.Add(url.Database.ToString(CultureInfo.InvariantCulture));
        }
        var requests = Math.Max(10, s.Chunks);
        foreach (var argument in new[] { "-t", "set,get", "-d", s.ChunkBytes.ToString(CultureInfo.InvariantCulture),
                     "-n", requests.ToString(CultureInfo.InvariantCulture), "-c", s.Clients.ToString(CultureInfo.InvariantCulture), "--csv" })
        {
            info.ArgumentList.Add(argument);
        }
        using var process = Process.Start(info)!;
        var output = await process.StandardOutput.ReadToEndAsync(ct);
        var error = await process.StandardError.ReadToEndAsync(ct);
        await process.WaitForExitAsync(ct);
        double? set = null, get = null;
        foreach (var line in output.Split('\n'))
        {
            var fields = line.Split(',').Select(f => f.Trim().Trim('"')).ToArray();
            if (fields.Length >= 2 && double.TryParse(fields[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var rps))
            {
                var gbps = Math.Round(rps * s.ChunkBytes / 1e9, 3);
                if (fields[0] == "SET")
                {
                    set = gbps;
                }
                else if (fields[0] == "GET")
                {
                    get = gbps;
                }
            }
        }
        return (set, get, set is null || get is null ? $"redis-benchmark exited {process.ExitCode}: {error.Trim()} {output.Trim()}" : null);
    }
}
