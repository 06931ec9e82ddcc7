using System.Collections.Frozen;
using System.Globalization;
using System.Text;

namespace LMCache.Core.Keys;

/// <summary>
/// The identity of one stored chunk, with LMCache's string form
/// <c>fmt@model_name@world_size@worker_id@chunk_hash[@dtype[@layer_id]][@tag%value...]</c>.
/// </summary>
/// <remarks>
/// <para>What we write (<see cref="KeyScope.MakeKey"/>) is the original's mid/late-2025 6-field form with a dtype token,
/// and the hash spelled as the original spells it (<see cref="Keys.ChunkHash.ToKeyText"/>: lower-case hex without
/// leading zeros). What we read is every form the original or we have ever written: the 5-field form (no dtype), the
/// 6-field form, tags (<c>@name%value</c>), the original's layer keys (<c>LayerCacheEngineKey</c>: an all-digit field
/// after the dtype), and the original's 2026 form without the format field
/// (<c>model@world_size@worker_id@hash@dtype[@layer_id][@tags]</c>, <see cref="Format"/> empty).</para>
/// <para><see cref="ChunkHash"/> is kept as the text that was written, so a key round-trips byte for byte (Redis and
/// disk names are that text). Two spellings of one hash value (<c>0ab</c> and <c>ab</c>, <c>-0</c> and <c>0</c>) are
/// therefore different keys; <see cref="ToCanonical"/> maps every spelling to one key — the identity the original
/// server indexes by (it parses the hash with <c>int(text, 16)</c>).</para>
/// </remarks>
/// <param name="Format">
/// Engine format string, e.g. <c>vllm</c>; empty for the original's 2026 form, which has no format field (such a key
/// always has a <see cref="DType"/>).
/// </param>
/// <param name="ModelName">Model identifier; may contain <c>/</c> but not <c>@</c>.</param>
/// <param name="WorldSize">Parallel world size (TP × PP).</param>
/// <param name="WorkerId">Global rank of the worker.</param>
/// <param name="ChunkHash">Lower-case hex hash text, optionally with a leading <c>-</c> (the original's negative ints).</param>
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
        if (Format.Length != 0)
        {
            builder.Append(Format).Append(Separator);
        }
        builder.Append(ModelName).Append(Separator)
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

    /// <summary>
    /// This key with its hash in the canonical spelling (<see cref="CanonicalHashText"/>): every spelling of one hash
    /// value gives the same key. The original server indexes entries by the parsed integer hash, so keys that differ
    /// only in leading zeros name one entry there; ours matches keys through this.
    /// </summary>
    public CacheEngineKey ToCanonical()
    {
        var canonical = CanonicalHashText(ChunkHash);
        return ReferenceEquals(canonical, ChunkHash) ? this : this with { ChunkHash = canonical };
    }

    /// <summary>
    /// The canonical spelling of hash text: Python's <c>f"{int(text, 16):x}"</c> — leading zeros removed,
    /// <c>"0"</c> for zero (also for <c>"-0"</c>), a leading <c>-</c> kept for negative values. Returns
    /// <paramref name="hash"/> itself when it is already canonical.
    /// </summary>
    public static string CanonicalHashText(string hash)
    {
        ArgumentNullException.ThrowIfNull(hash);
        var negative = hash.StartsWith('-');
        var digits = negative ? 1 : 0;
        var start = digits;
        while (start < hash.Length - 1 && hash[start] == '0')
        {
            start++;
        }
        if (start == hash.Length - 1 && hash[start] == '0')
        {
            return hash.Length == 1 ? hash : "0";
        }
        return start == digits ? hash : (negative ? "-" : "") + hash[start..];
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
    /// after the dtype), each followed by optional <c>name%value</c> tags, and the original's 2026 form without the
    /// format field (<c>model@world_size@worker_id@hash@dtype[@layer_id][@tags]</c>). The two families are told apart
    /// by the fifth field: a hash in the older forms, a dtype token (never valid hex) in the 2026 form.
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
        if (IsNewestForm(parts))
        {
            return TryParseNewest(parts, out key, out error);
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
        if (!TryJoinTags(parts, next, out var tags, out error))
        {
            return false;
        }
        key = new CacheEngineKey(parts[0], parts[1], worldSize, workerId, parts[4], dtype, tags, layerId);
        return true;
    }

    /// <summary>Parses a key string or throws <see cref="FormatException"/> naming the problem.</summary>
    public static CacheEngineKey Parse(string text) =>
        TryParse(text, out var key, out var error) ? key : throw new FormatException($"Invalid cache key '{text}': {error}.");

    /// <summary>
    /// The dtype tokens of the original's <c>TORCH_DTYPE_TO_STR_DTYPE</c> (mid-2025 and newest tables together). None is
    /// hex text, so a key whose fifth field is one of them cannot be of an older form, where that field is the hash.
    /// </summary>
    private static readonly FrozenSet<string> s_originalDTypeTokens = FrozenSet.ToFrozenSet(
    [
        "half", "bfloat16", "float", "double", "fp8", "fp8_e4m3", "fp8_e5m2", "int8", "uint8", "int16", "int32", "int64",
        "bool", "fp8_e4m3fn", "fp8_e4m3fnuz", "fp8_e5m2fnuz",
    ], StringComparer.Ordinal);

    /// <summary>
    /// The original's 2026 form, <c>model@world_size@worker_id@hash@dtype...</c>: the fifth field one of the original's
    /// dtype tokens (never hex, so never the hash of an older form), the second a number and the fourth a hash.
    /// </summary>
    private static bool IsNewestForm(string[] parts) =>
        s_originalDTypeTokens.Contains(parts[4]) && parts[1].Length > 0 && parts[1].All(char.IsAsciiDigit) && IsHashText(parts[3]);

    private static bool TryParseNewest(string[] parts, out CacheEngineKey key, out string? error)
    {
        key = default;
        if (parts[0].Length == 0)
        {
            error = "the model name must not be empty";
            return false;
        }
        if (!int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var worldSize) || worldSize < 1)
        {
            error = $"world_size '{parts[1]}' is not a positive integer";
            return false;
        }
        if (!int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var workerId))
        {
            error = $"worker_id '{parts[2]}' is not a non-negative integer";
            return false;
        }
        var next = 5;
        int? layerId = null;
        if (parts.Length > 5 && parts[5].Length > 0 && parts[5].All(char.IsAsciiDigit))
        {
            if (!int.TryParse(parts[5], NumberStyles.None, CultureInfo.InvariantCulture, out var layer))
            {
                error = $"layer id '{parts[5]}' is out of range";
                return false;
            }
            layerId = layer;
            next = 6;
        }
        if (!TryJoinTags(parts, next, out var tags, out error))
        {
            return false;
        }
        key = new CacheEngineKey(string.Empty, parts[0], worldSize, workerId, parts[3], parts[4], tags, layerId);
        return true;
    }

    private static bool TryJoinTags(string[] parts, int next, out string? tags, out string? error)
    {
        tags = null;
        for (var i = next; i < parts.Length; i++)
        {
            if (parts[i].IndexOf('%', StringComparison.Ordinal) <= 0)
            {
                error = $"field {i} '{parts[i]}' is not a name%value tag";
                return false;
            }
        }
        tags = next < parts.Length ? string.Join(Separator, parts, next, parts.Length - next) : null;
        error = null;
        return true;
    }

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
