using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace LMCache.Core.Configuration;

/// <summary>
/// Conversions of raw configuration values (strings from the environment, typed scalars, lists and maps from YAML)
/// into typed values. Each returns false with a message saying what is allowed; nothing is silently turned into null
/// (the original does that, and a typo then disables a feature without a word).
/// </summary>
public static partial class ConfigConverters
{
    /// <summary>Integer: YAML integers, or decimal text.</summary>
    public static bool TryInt(object? raw, out int value, out string? error)
    {
        value = 0;
        switch (raw)
        {
            case int i: value = i; break;
            case long l when l is >= int.MinValue and <= int.MaxValue: value = (int)l; break;
            case double d when d == Math.Floor(d) && d is >= int.MinValue and <= int.MaxValue: value = (int)d; break;
            case string s when int.TryParse(s.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var parsed): value = parsed; break;
            default:
                error = "expected an integer";
                return false;
        }
        error = null;
        return true;
    }

    /// <summary>Floating point: YAML numbers or invariant-culture text.</summary>
    public static bool TryFloat(object? raw, out double value, out string? error)
    {
        value = 0;
        switch (raw)
        {
            case int i: value = i; break;
            case long l: value = l; break;
            case double d: value = d; break;
            case string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var parsed): value = parsed; break;
            default:
                error = "expected a number";
                return false;
        }
        if (double.IsNaN(value) || double.IsInfinity(value))
        {
            error = "expected a finite number";
            return false;
        }
        error = null;
        return true;
    }

    /// <summary>
    /// Boolean: YAML booleans pass through; text must be <c>true</c>/<c>false</c>/<c>1</c>/<c>0</c> (any case).
    /// The original reads every other text (including <c>yes</c> and <c>on</c>) as false; we reject it instead.
    /// </summary>
    public static bool TryBool(object? raw, out bool value, out string? error)
    {
        value = false;
        error = null;
        switch (raw)
        {
            case bool b: value = b; return true;
            case int or long:
                var number = Convert.ToInt64(raw, CultureInfo.InvariantCulture);
                if (number is 0 or 1)
                {
                    value = number == 1;
                    return true;
                }
                break;
            case string s:
                switch (s.Trim().ToLowerInvariant())
                {
                    case "true" or "1": value = true; return true;
                    case "false" or "0": value = false; return true;
                }
                break;
        }
        error = "expected true, false, 1 or 0";
        return false;
    }

    /// <summary>A string; YAML scalars of other types are rendered invariantly.</summary>
    public static bool TryString(object? raw, out string? value, out string? error)
    {
        error = null;
        value = raw switch
        {
            null => null,
            string s => s,
            bool b => b ? "true" : "false",
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => null,
        };
        if (raw is not null && value is null)
        {
            error = "expected a string";
            return false;
        }
        return true;
    }

    /// <summary>
    /// A list: a YAML sequence, or comma-separated text (items trimmed, empty items dropped); a bare scalar becomes a
    /// one-element list.
    /// </summary>
    public static bool TryList<T>(object? raw, TryConvert<T> item, out IReadOnlyList<T>? value, out string? error)
    {
        value = null;
        error = null;
        if (raw is null)
        {
            return true;
        }
        IEnumerable<object?> items = raw switch
        {
            IEnumerable<object?> sequence when raw is not string => sequence,
            string s => s.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
            _ => [raw],
        };
        var result = new List<T>();
        foreach (var element in items)
        {
            if (!item(element, out var converted, out var itemError))
            {
                error = $"list item '{element}': {itemError}";
                return false;
            }
            result.Add(converted!);
        }
        value = result;
        return true;
    }

    /// <summary>
    /// A map (<c>extra_config</c>): a YAML mapping, or JSON object text as in <c>LMCACHE_EXTRA_CONFIG='{"k": 1}'</c>;
    /// empty text is null.
    /// </summary>
    public static bool TryMap(object? raw, out IReadOnlyDictionary<string, object?>? value, out string? error)
    {
        value = null;
        error = null;
        switch (raw)
        {
            case null:
                return true;
            case IReadOnlyDictionary<string, object?> map:
                value = map;
                return true;
            case string s when s.Trim().Length == 0:
                return true;
            case string s:
                try
                {
                    using var document = JsonDocument.Parse(s);
                    if (document.RootElement.ValueKind != JsonValueKind.Object)
                    {
                        error = "expected a JSON object";
                        return false;
                    }
                    value = (IReadOnlyDictionary<string, object?>)FromJson(document.RootElement)!;
                    return true;
                }
                catch (JsonException ex)
                {
                    error = $"expected a JSON object ({ex.Message})";
                    return false;
                }
            default:
                error = "expected a mapping";
                return false;
        }
    }

    /// <summary>
    /// The <c>local_disk</c> path: <c>file:///path/</c> loses its 7-character scheme prefix (the original's rule);
    /// any other value is used verbatim as a directory.
    /// </summary>
    public static string? NormalizeLocalDisk(string? raw)
    {
        if (raw is null)
        {
            return null;
        }
        return FileUrl().IsMatch(raw) ? raw["file://".Length..] : raw;
    }

    /// <summary>
    /// An environment value: trimmed, and unquoted when wrapped in matching single or double quotes (with the common
    /// backslash escapes), like the original's Python-literal unquoting.
    /// </summary>
    public static string UnquoteEnvironmentValue(string raw)
    {
        var trimmed = raw.Trim();
        if (trimmed.Length >= 2 && (trimmed[0] == '"' || trimmed[0] == '\'') && trimmed[^1] == trimmed[0])
        {
            var inner = trimmed[1..^1];
            return inner.Replace("\\\\", "\u0000", StringComparison.Ordinal)
                .Replace("\\n", "\n", StringComparison.Ordinal)
                .Replace("\\t", "\t", StringComparison.Ordinal)
                .Replace("\\\"", "\"", StringComparison.Ordinal)
                .Replace("\\'", "'", StringComparison.Ordinal)
                .Replace("\u0000", "\\", StringComparison.Ordinal);
        }
        return trimmed;
    }

    /// <summary>GiB (the original's float sizes) to bytes: <c>int(value * 1024**3)</c>, truncating.</summary>
    public static long GibToBytes(double gib) => (long)(gib * 1024 * 1024 * 1024);

    /// <summary>A conversion from a raw value.</summary>
    public delegate bool TryConvert<T>(object? raw, out T? value, out string? error);

    private static object? FromJson(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => element.EnumerateObject().ToDictionary(p => p.Name, p => FromJson(p.Value)) as IReadOnlyDictionary<string, object?>,
        JsonValueKind.Array => element.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.String => element.GetString(),
        JsonValueKind.Number => element.TryGetInt64(out var l) ? (object)l : element.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    [GeneratedRegex("^file://(.*)/$")]
    private static partial Regex FileUrl();
}
