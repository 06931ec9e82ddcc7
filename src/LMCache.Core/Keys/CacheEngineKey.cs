using System.Globalization;
using System.Text;

namespace LMCache.Core.Keys;

/// <summary>
/// The identity of one stored chunk, with LMCache's string form
/// <c>fmt@model_name@world_size@worker_id@chunk_hash[@dtype[@layer_id]][@tag%value...]</c>.
/// </summary>
/// <remarks>
/// We write the 5-field form (no dtype) unless <see cref="DType"/> is set; we read both that and the original's
/// mid-2025 6-field form with a dtype token and <c>@name%value</c> tag suffixes, and the original's layer keys
/// (<c>LayerCacheEngineKey</c>: an all-digit field after the dtype), so keys written by Python LMCache can be listed
/// and inspected. <see cref="ChunkHash"/> is kept as text: ours is 64 hex digits, the original's
/// integer hashes render as <c>format(int, 'x')</c> and may be negative.
/// </remarks>
/// <param name="Format">Engine format string, e.g. <c>vllm</c>.</param>
/// <param name="ModelName">Model identifier; may contain <c>/</c> but not <c>@</c>.</param>
/// <param name="WorldSize">Parallel world size (TP × PP).</param>
/// <param name="WorkerId">Global rank of the worker.</param>
/// <param name="ChunkHash">Lower-case hex hash text.</param>
/// <param name="DType">Optional dtype token of the 6-field form (<c>half</c>, <c>bfloat16</c>, ...).</param>
/// <param name="Tags">Optional tags, rendered <c>name%value</c> and joined by <c>@</c>, in order.</param>
/// <param name="LayerId">
/// The layer of a per-layer key (the original's <c>LayerCacheEngineKey</c>, written by its layerwise mode); null for
/// a whole-chunk key. Only valid together with <see cref="DType"/>, as in the original.
/// </param>
public readonly record struct CacheEngineKey(
    string Format,
    string ModelName,
    int WorldSize,
    int WorkerId,
    string ChunkHash,
    string? DType = null,
    string? Tags = null,
    int? LayerId = null)
{
    /// <summary>The separator between fields.</summary>
    public const char Separator = '@';

    /// <summary>The string form (Python's <c>to_string()</c>).</summary>
    public override string ToString()
    {
        var builder = new StringBuilder(Format.Length + ModelName.Length + ChunkHash.Length + 32);
        builder.Append(Format).Append(Separator)
            .Append(ModelName).Append(Separator)
            .Append(WorldSize.ToString(CultureInfo.InvariantCulture)).Append(Separator)
            .Append(WorkerId.ToString(CultureInfo.InvariantCulture)).Append(Separator)
            .Append(ChunkHash);
        if (DType is not null)
        {
            builder.Append(Separator).Append(DType);
            if (LayerId is { } layer)
            {
                builder.Append(Separator).Append(layer.ToString(CultureInfo.InvariantCulture));
            }
        }
        if (Tags is not null)
        {
            builder.Append(Separator).Append(Tags);
        }
        return builder.ToString();
    }

    /// <summary>The tags as (name, value) pairs, in order.</summary>
    public IEnumerable<KeyValuePair<string, string>> EnumerateTags()
    {
        if (Tags is null)
        {
            yield break;
        }
        foreach (var tag in Tags.Split(Separator))
        {
            var split = tag.IndexOf('%', StringComparison.Ordinal);
            yield return new KeyValuePair<string, string>(tag[..split], tag[(split + 1)..]);
        }
    }

    /// <summary>Parses a key string; see <see cref="TryParse(string, out CacheEngineKey, out string?)"/>.</summary>
    public static bool TryParse(string text, out CacheEngineKey key) => TryParse(text, out key, out _);

    /// <summary>
    /// Parses the 5-field form, the 6-field form with a dtype token, the 7-field layer key (an all-digit layer id
    /// after the dtype), each followed by optional <c>name%value</c> tags.
    /// </summary>
    /// <param name="text">The key string.</param>
    /// <param name="key">The key on success.</param>
    /// <param name="error">Why parsing failed, or null.</param>
    public static bool TryParse(string text, out CacheEngineKey key, out string? error)
    {
        key = default;
        var parts = text.Split(Separator);
        if (parts.Length < 5)
        {
            error = $"expected at least 5 '@'-separated fields (fmt@model@world_size@worker_id@hash), got {parts.Length}";
            return false;
        }
        if (parts[0].Length == 0 || parts[1].Length == 0)
        {
            error = "the format and model name must not be empty";
            return false;
        }
        if (!int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var worldSize) || worldSize < 1)
        {
            error = $"world_size '{parts[2]}' is not a positive integer";
            return false;
        }
        if (!int.TryParse(parts[3], NumberStyles.None, CultureInfo.InvariantCulture, out var workerId))
        {
            error = $"worker_id '{parts[3]}' is not a non-negative integer";
            return false;
        }
        if (!IsHashText(parts[4]))
        {
            error = $"chunk hash '{parts[4]}' is not lower-case hex";
            return false;
        }
        string? dtype = null;
        var next = 5;
        if (parts.Length > 5 && !parts[5].Contains('%', StringComparison.Ordinal))
        {
            if (parts[5].Length == 0)
            {
                error = "empty dtype field";
                return false;
            }
            dtype = parts[5];
            next = 6;
        }
        int? layerId = null;
        if (dtype is not null && parts.Length > 6 && parts[6].Length > 0 && parts[6].All(char.IsAsciiDigit))
        {
            if (!int.TryParse(parts[6], NumberStyles.None, CultureInfo.InvariantCulture, out var layer))
            {
                error = $"layer id '{parts[6]}' is out of range";
                return false;
            }
            layerId = layer;
            next = 7;
        }
        for (var i = next; i < parts.Length; i++)
        {
            var split = parts[i].IndexOf('%', StringComparison.Ordinal);
            if (split <= 0)
            {
                error = $"field {i} '{parts[i]}' is not a name%value tag";
                return false;
            }
        }
        var tags = next < parts.Length ? string.Join(Separator, parts, next, parts.Length - next) : null;
        key = new CacheEngineKey(parts[0], parts[1], worldSize, workerId, parts[4], dtype, tags, layerId);
        error = null;
        return true;
    }

    /// <summary>Parses a key string or throws <see cref="FormatException"/> naming the problem.</summary>
    public static CacheEngineKey Parse(string text) =>
        TryParse(text, out var key, out var error) ? key : throw new FormatException($"Invalid cache key '{text}': {error}.");

    private static bool IsHashText(string text)
    {
        var span = text.AsSpan();
        if (span.Length > 0 && span[0] == '-')
        {
            span = span[1..];
        }
        if (span.IsEmpty)
        {
            return false;
        }
        foreach (var c in span)
        {
            if (!char.IsAsciiDigit(c) && c is not (>= 'a' and <= 'f'))
            {
                return false;
            }
        }
        return true;
    }
}
