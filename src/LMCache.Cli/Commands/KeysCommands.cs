using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using LMCache.Core.Keys;
using LMCache.Storage.Remote;

namespace LMCache.Cli.Commands;

/// <summary>
/// <c>lmcache keys list|inspect|rm|stats</c>: the remote store's entries, read with SCAN (never KEYS) on every master
/// of a standalone server, a Sentinel-managed master or a cluster.
/// </summary>
internal static class KeysCommands
{
    private static readonly JsonSerializerOptions s_json = new() { WriteIndented = true };

    public static Command Create()
    {
        var group = new Command("keys", "List, inspect, remove and count the entries of a remote store (Redis, Sentinel, Cluster).");
        group.Subcommands.Add(CreateList());
        group.Subcommands.Add(CreateInspect());
        group.Subcommands.Add(CreateRemove());
        group.Subcommands.Add(CreateStats());
        return group;
    }

    private static Command CreateList()
    {
        var url = RemoteConnection.UrlOption();
        var model = new Option<string?>("--model") { Description = "Only entries of this model (the key's second field)." };
        var config = CommonOptions.Config();
        var json = CommonOptions.Json();
        var command = new Command("list", "List entries grouped per model: key, payload size and decoded metadata (half-written or invalid entries are flagged).")
        {
            url, model, config, json,
        };
        command.SetAction(async (parse, ct) =>
        {
            await using var connector = await RemoteConnection.OpenAsync(parse.GetValue(url), parse.GetValue(config), ct);
            if (RemoteConnection.Keyspace(connector) is not { } keyspace)
            {
                return 2;
            }
            var entries = await keyspace.ListAllAsync(parse.GetValue(model), ct);
            var groups = entries.GroupBy(ModelOf).OrderBy(g => g.Key, StringComparer.Ordinal).ToList();
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    remote_url = connector!.Description,
                    models = groups.Select(g => new
                    {
                        model = g.Key,
                        entries = g.Count(),
                        bytes = g.Sum(e => e.PayloadBytes ?? 0),
                        keys = g.OrderBy(e => e.Key, StringComparer.Ordinal).Select(Describe),
                    }),
                }, s_json));
                return 0;
            }
            foreach (var g in groups)
            {
                Console.WriteLine($"model {g.Key}: {g.Count()} entries, {FormatBytes(g.Sum(e => e.PayloadBytes ?? 0))}");
                foreach (var e in g.OrderBy(e => e.Key, StringComparer.Ordinal))
                {
                    var layout = e.Layout is { } m ? $"{m.Format} {m.DType} {m.Shape}" : "-";
                    Console.WriteLine($"  {e.Key}  {e.PayloadBytes?.ToString(CultureInfo.InvariantCulture) ?? "-"} B  {layout}  {Note(e)}");
                }
            }
            if (groups.Count == 0)
            {
                Console.WriteLine("no entries");
            }
            return 0;
        });
        return command;
    }

    private static Command CreateInspect()
    {
        var url = RemoteConnection.UrlOption();
        var keys = new Argument<string[]>("KEY") { Description = "Key strings as listed (without the kv_bytes/metadata suffix).", Arity = ArgumentArity.OneOrMore };
        var config = CommonOptions.Config();
        var json = CommonOptions.Json();
        var command = new Command("inspect", "Read entries completely: sizes, decoded 28-byte metadata, checksum verdict and whether a read would serve them. Exit 1 when any is invalid or missing.")
        {
            url, keys, config, json,
        };
        command.SetAction(async (parse, ct) =>
        {
            await using var connector = await RemoteConnection.OpenAsync(parse.GetValue(url), parse.GetValue(config), ct);
            if (RemoteConnection.Keyspace(connector) is not { } keyspace)
            {
                return 2;
            }
            var reports = new List<RemoteEntry>();
            foreach (var key in parse.GetValue(keys) ?? [])
            {
                reports.Add(await keyspace.InspectAsync(key, ct));
            }
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(reports.Select(r => new
                {
                    key = r.Key,
                    valid = r.IsValid,
                    state = r.State.ToString(),
                    problem = r.Problem,
                    payload_bytes = r.PayloadBytes,
                    metadata_bytes = r.MetadataBytes,
                    length = r.Header?.Length,
                    fmt = r.Header?.FormatCode,
                    dtype_code = r.Header?.DTypeCode,
                    shape = r.Header is { } h ? new[] { h.Shape.D0, h.Shape.D1, h.Shape.D2, h.Shape.D3 } : null,
                    checksum = r.Checksum is { } c ? c.ToString("x16", CultureInfo.InvariantCulture) : null,
                    checksum_matches = r.ChecksumMatches,
                    checksum_covers_key = r.ChecksumCoversKey,
                    unprotected = r.IsUnprotected,
                    serves_as = r.Layout?.ToString(),
                }), s_json));
            }
            else
            {
                foreach (var r in reports)
                {
                    Console.WriteLine(r.Key);
                    Console.WriteLine($"  status:    {(r.IsValid ? "valid (a read serves it)" : "MISS: " + r.Problem)}");
                    Console.WriteLine($"  payload:   {(r.PayloadBytes is { } p ? p.ToString(CultureInfo.InvariantCulture) + " bytes" : "absent")}");
                    Console.WriteLine($"  metadata:  {(r.MetadataBytes is { } mb ? mb.ToString(CultureInfo.InvariantCulture) + " bytes" : "absent")}{(r.Header is { } h ? " — " + DescribeHeader(h, r) : "")}");
                    if (r.ChecksumMatches is { } ok)
                    {
                        Console.WriteLine($"  checksum:  {(ok ? "matches" : "MISMATCH")}");
                    }
                    if (r.Layout is { } om)
                    {
                        Console.WriteLine($"  serves as: {om}");
                    }
                }
            }
            return reports.All(r => r.IsValid) ? 0 : 1;
        });
        return command;
    }

    private static Command CreateRemove()
    {
        var url = RemoteConnection.UrlOption();
        var model = new Option<string?>("--model") { Description = "Remove every entry of this model (including half-written ones)." };
        var keys = new Argument<string[]>("KEY") { Description = "Key strings to remove (both kv_bytes and metadata).", Arity = ArgumentArity.ZeroOrMore };
        var config = CommonOptions.Config();
        var command = new Command("rm", "Remove entries: every entry of --model M, or the KEYs given.") { url, model, keys, config };
        command.SetAction(async (parse, ct) =>
        {
            var byModel = parse.GetValue(model);
            var given = parse.GetValue(keys) ?? [];
            if ((byModel is null) == (given.Length == 0))
            {
                await Console.Error.WriteLineAsync("error: give either --model M or one or more KEYs.");
                return 2;
            }
            await using var connector = await RemoteConnection.OpenAsync(parse.GetValue(url), parse.GetValue(config), ct);
            if (RemoteConnection.Keyspace(connector) is not { } keyspace)
            {
                return 2;
            }
            var targets = byModel is null ? given.ToList() : (await keyspace.ListAllAsync(byModel, ct)).Select(e => e.Key).ToList();
            var removed = 0;
            foreach (var key in targets)
            {
                if (await keyspace.RemoveAsync(key, ct))
                {
                    removed++;
                }
            }
            Console.WriteLine($"removed {removed} of {targets.Count} entries from {connector!.Description}");
            return 0;
        });
        return command;
    }

    private static Command CreateStats()
    {
        var url = RemoteConnection.UrlOption();
        var config = CommonOptions.Config();
        var json = CommonOptions.Json();
        var command = new Command("stats", "Count entries and payload bytes, in total and per model (and half-written or invalid entries).") { url, config, json };
        command.SetAction(async (parse, ct) =>
        {
            await using var connector = await RemoteConnection.OpenAsync(parse.GetValue(url), parse.GetValue(config), ct);
            if (RemoteConnection.Keyspace(connector) is not { } keyspace)
            {
                return 2;
            }
            var stats = await RemoteKeyspaceStatistics.CollectAsync(keyspace, null, ct);
            var perModel = stats.Models
                .Select(m => new { model = m.ModelName, entries = m.Entries, bytes = m.PayloadBytes, invalid = m.Invalid })
                .ToList();
            var total = new
            {
                remote_url = connector!.Description,
                entries = stats.Entries,
                bytes = stats.PayloadBytes,
                invalid_or_half = stats.Invalid,
                with_checksum = stats.WithChecksum,
                original_layout = stats.OriginalLayout,
                models = perModel,
            };
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(total, s_json));
                return 0;
            }
            Console.WriteLine($"{total.remote_url}: {total.entries} entries, {FormatBytes(total.bytes)} ({total.with_checksum} with checksum, {total.original_layout} original layout, {total.invalid_or_half} invalid or half-written)");
            foreach (var m in perModel)
            {
                Console.WriteLine($"  {m.model}: {m.entries} entries, {FormatBytes(m.bytes)}{(m.invalid > 0 ? $", {m.invalid} invalid or half-written" : "")}");
            }
            return 0;
        });
        return command;
    }

    private static string ModelOf(RemoteEntry e) => e.ModelName ?? RemoteKeyspaceStatistics.NotAnLMCacheKey;

    /// <summary>The list's last column: the checksum, or why a read would miss.</summary>
    private static string Note(RemoteEntry e) => e switch
    {
        { IsValid: false } => e.Problem ?? e.State.ToString(),
        _ => ChecksumText(e),
    };

    /// <summary>The checksum and what it protects; entries nothing binds to their key are marked UNPROTECTED.</summary>
    private static string ChecksumText(RemoteEntry e) => e switch
    {
        { Checksum: { } c, ChecksumCoversKey: true } => $"xxh3 {c:x16} (LMCache.NET, bound to the key)",
        { Checksum: { } c } => $"xxh3 {c:x16} UNPROTECTED: payload only, not bound to the key (earlier LMCache.NET)",
        _ => "UNPROTECTED: no checksum (original layout)",
    };

    private static string DescribeHeader(RemoteEntryHeader header, RemoteEntry entry) => $"{header}, {ChecksumText(entry)}";

    private static object Describe(RemoteEntry e) => new
    {
        key = e.Key,
        layer = CacheEngineKey.TryParse(e.Key, out var parsed) ? parsed.LayerId : null,   // the original's layerwise keys
        payload_bytes = e.PayloadBytes,
        state = e.State.ToString(),
        format = e.Layout?.Format.ToString(),
        dtype = e.Layout?.DType.ToString(),
        shape = e.Layout is { } m ? new[] { m.Shape.D0, m.Shape.D1, m.Shape.D2, m.Shape.D3 } : null,
        checksum = e.Checksum is { } c ? c.ToString("x16", CultureInfo.InvariantCulture) : null,
        unprotected = e.IsUnprotected,
        detail = Note(e),
    };

    internal static string FormatBytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.00} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.0} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:0.0} KiB",
        _ => $"{bytes} B",
    };
}
