using System.Collections;
using System.Globalization;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;

namespace LMCache.Serde.CacheGen;

/// <summary>
/// Settings of the cachegen serde, read from <c>extra_config</c> (<see cref="FromEngineOptions"/>). The original has no
/// such keys: its bins come from the model name and its tables are always per chunk.
/// </summary>
public sealed class CacheGenOptions
{
    /// <summary><c>extra_config.cachegen_key_bins</c>: key bins per layer as a spec (<see cref="CacheGenBins.ExpandSpec"/>, e.g. <c>10*32,16</c>). Defaults to null: the original's table (<see cref="CacheGenBins.Default"/>).</summary>
    public string? KeyBins { get; set; }

    /// <summary><c>extra_config.cachegen_value_bins</c>: value bins per layer as a spec (e.g. <c>2*32,16</c>). Defaults to null: the original's table.</summary>
    public string? ValueBins { get; set; }

    /// <summary><c>extra_config.cachegen_shared_tables</c>: profile one table per model geometry and store blobs that reference it instead of carrying their own. Defaults to false (the original's per-chunk tables).</summary>
    public bool SharedTables { get; set; }

    /// <summary><c>extra_config.cachegen_profile_chunks</c>: chunks profiled before the shared table is published. Defaults to 8.</summary>
    public int ProfileChunks { get; set; } = 8;

    /// <summary><c>extra_config.cachegen_table_dir</c>: folder where shared tables are persisted (shared by every reader). Defaults to null: tables live in this process only unless the host wires an <see cref="ICacheGenTableStore"/>.</summary>
    public string? TableDirectory { get; set; }

    /// <summary><c>extra_config.cachegen_threads</c>: threads used to encode or decode one chunk. Defaults to the processor count.</summary>
    public int Threads { get; set; } = Environment.ProcessorCount;

    /// <summary>The bins used for a chunk of <paramref name="layers"/> layers.</summary>
    /// <exception cref="FormatException">A spec is malformed.</exception>
    public CacheGenBins BinsFor(int layers)
    {
        if (KeyBins is null && ValueBins is null)
        {
            return CacheGenBins.Default(layers);
        }
        var defaults = CacheGenBins.Default(layers);
        var key = KeyBins is null ? Enumerable.Range(0, layers).Select(defaults.KeyBins).ToArray() : CacheGenBins.ExpandSpec(KeyBins, layers);
        var value = ValueBins is null ? Enumerable.Range(0, layers).Select(defaults.ValueBins).ToArray() : CacheGenBins.ExpandSpec(ValueBins, layers);
        return CacheGenBins.Create(key, value);
    }

    /// <summary>Reads the <c>cachegen_*</c> keys of <c>extra_config</c>; a malformed value is a start-up error naming the key.</summary>
    /// <exception cref="LMCacheConfigurationException">A key has a value outside what is allowed.</exception>
    public static CacheGenOptions FromEngineOptions(LMCacheEngineOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var result = new CacheGenOptions
        {
            KeyBins = BinSpec(options, "cachegen_key_bins"),
            ValueBins = BinSpec(options, "cachegen_value_bins"),
            SharedTables = options.GetExtraBool("cachegen_shared_tables", false),
            TableDirectory = options.GetExtraString("cachegen_table_dir"),
        };
        result.ProfileChunks = PositiveInt(options, "cachegen_profile_chunks", result.ProfileChunks);
        result.Threads = PositiveInt(options, "cachegen_threads", result.Threads);
        return result;
    }

    private static int PositiveInt(LMCacheEngineOptions options, string key, int fallback)
    {
        var raw = options.GetExtra(key);
        if (raw is null)
        {
            return fallback;
        }
        if (!ConfigConverters.TryInt(raw, out var value, out _) || value < 1)
        {
            throw new LMCacheConfigurationException($"extra_config.{key} = '{raw}': expected a positive integer.");
        }
        return value;
    }

    private static string? BinSpec(LMCacheEngineOptions options, string key)
    {
        var raw = options.GetExtra(key);
        string? spec = raw switch
        {
            null => null,
            string text => text,
            IEnumerable list => string.Join(',', list.Cast<object?>().Select(o => Convert.ToString(o, CultureInfo.InvariantCulture))),
            _ => Convert.ToString(raw, CultureInfo.InvariantCulture),
        };
        if (spec is null)
        {
            return null;
        }
        try
        {
            CacheGenBins.ExpandSpec(spec, 1);
        }
        catch (FormatException ex)
        {
            throw new LMCacheConfigurationException($"extra_config.{key} = '{spec}': {ex.Message} Allowed: comma-separated BINS or COUNT*BINS items, bins within {CacheGenBins.MinBins}..{CacheGenBins.MaxBins} (e.g. '10*32,16').");
        }
        return spec;
    }
}
