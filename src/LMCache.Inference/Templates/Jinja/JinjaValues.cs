using System.Globalization;
using System.Text;
using System.Text.Json;

namespace LMCache.Inference.Templates.Jinja;

/// <summary>Jinja's undefined value: prints as nothing, is falsy, and yields itself on attribute access.</summary>
internal sealed class Undefined
{
    public static readonly Undefined Instance = new();

    private Undefined()
    {
    }

    public override string ToString() => "";
}

/// <summary>The mutable object <c>namespace(...)</c> returns.</summary>
internal sealed class JinjaNamespace
{
    public Dictionary<string, object?> Values { get; } = new(StringComparer.Ordinal);
}

/// <summary>A callable value (global function, macro, bound method, <c>loop.cycle</c>).</summary>
internal delegate object? JinjaCallable(List<object?> args, Dictionary<string, object?> kwargs);

/// <summary>Value helpers: Python-compatible truthiness, printing, comparison and JSON.</summary>
internal static class JinjaValues
{
    /// <summary>Converts a JSON element to template values (objects keep their key order).</summary>
    public static object? FromJson(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => element.EnumerateObject().Aggregate(new Dictionary<string, object?>(StringComparer.Ordinal), (d, p) =>
        {
            d[p.Name] = FromJson(p.Value);
            return d;
        }),
        JsonValueKind.Array => element.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.String => element.GetString(),
        JsonValueKind.Number => element.TryGetInt64(out var l) ? l : element.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    public static bool IsTrue(object? value) => value switch
    {
        null => false,
        Undefined => false,
        bool b => b,
        long l => l != 0,
        int i => i != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> list => list.Count > 0,
        Dictionary<string, object?> dict => dict.Count > 0,
        _ => true,
    };

    /// <summary>The text <c>{{ value }}</c> prints (Python's <c>str</c>).</summary>
    public static string ToText(object? value) => value switch
    {
        null => "None",
        Undefined => "",
        string s => s,
        bool b => b ? "True" : "False",
        _ => Repr(value),
    };

    /// <summary>Python's <c>repr</c>.</summary>
    public static string Repr(object? value)
    {
        switch (value)
        {
            case null: return "None";
            case Undefined: return "";
            case bool b: return b ? "True" : "False";
            case long l: return l.ToString(CultureInfo.InvariantCulture);
            case int i: return i.ToString(CultureInfo.InvariantCulture);
            case double d: return FormatFloat(d);
            case string s:
                var quote = s.Contains('\'', StringComparison.Ordinal) && !s.Contains('"', StringComparison.Ordinal) ? '"' : '\'';
                var sb = new StringBuilder().Append(quote);
                foreach (var c in s)
                {
                    switch (c)
                    {
                        case '\\': sb.Append("\\\\"); break;
                        case '\n': sb.Append("\\n"); break;
                        case '\t': sb.Append("\\t"); break;
                        case '\r': sb.Append("\\r"); break;
                        default:
                            if (c == quote)
                            {
                                sb.Append('\\');
                            }
                            sb.Append(c);
                            break;
                    }
                }
                return sb.Append(quote).ToString();
            case List<object?> list: return "[" + string.Join(", ", list.Select(Repr)) + "]";
            case Dictionary<string, object?> dict: return "{" + string.Join(", ", dict.Select(kv => Repr(kv.Key) + ": " + Repr(kv.Value))) + "}";
            case JinjaNamespace: return "<Namespace>";
            default: return value.ToString() ?? "";
        }
    }

    public static string FormatFloat(double d)
    {
        if (double.IsNaN(d))
        {
            return "nan";
        }
        if (double.IsInfinity(d))
        {
            return d > 0 ? "inf" : "-inf";
        }
        var text = d.ToString("R", CultureInfo.InvariantCulture);
        return text.Contains('.', StringComparison.Ordinal) || text.Contains('E', StringComparison.Ordinal) ? text.Replace("E", "e", StringComparison.Ordinal) : text + ".0";
    }

    /// <summary>Python's <c>json.dumps(value, ensure_ascii=False, indent=indent)</c>, as Hugging Face's <c>tojson</c> filter.</summary>
    public static string ToJson(object? value, int? indent = null)
    {
        var sb = new StringBuilder();
        WriteJson(sb, value, indent, 0);
        return sb.ToString();
    }

    private static void WriteJson(StringBuilder sb, object? value, int? indent, int depth)
    {
        switch (value)
        {
            case null:
            case Undefined:
                sb.Append("null");
                return;
            case bool b:
                sb.Append(b ? "true" : "false");
                return;
            case long or int:
                sb.Append(Convert.ToString(value, CultureInfo.InvariantCulture));
                return;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FormatFloat(d));
                return;
            case string s:
                WriteJsonString(sb, s);
                return;
            case List<object?> list:
                if (list.Count == 0)
                {
                    sb.Append("[]");
                    return;
                }
                sb.Append('[');
                for (var i = 0; i < list.Count; i++)
                {
                    if (i > 0)
                    {
                        sb.Append(indent is null ? ", " : ",");
                    }
                    NewLine(sb, indent, depth + 1);
                    WriteJson(sb, list[i], indent, depth + 1);
                }
                NewLine(sb, indent, depth);
                sb.Append(']');
                return;
            case Dictionary<string, object?> dict:
                if (dict.Count == 0)
                {
                    sb.Append("{}");
                    return;
                }
                sb.Append('{');
                var first = true;
                foreach (var (k, v) in dict)
                {
                    if (!first)
                    {
                        sb.Append(indent is null ? ", " : ",");
                    }
                    first = false;
                    NewLine(sb, indent, depth + 1);
                    WriteJsonString(sb, k);
                    sb.Append(": ");
                    WriteJson(sb, v, indent, depth + 1);
                }
                NewLine(sb, indent, depth);
                sb.Append('}');
                return;
            case JinjaNamespace ns:
                WriteJson(sb, ns.Values, indent, depth);
                return;
            default:
                WriteJsonString(sb, value.ToString() ?? "");
                return;
        }
    }

    private static void NewLine(StringBuilder sb, int? indent, int depth)
    {
        if (indent is { } n)
        {
            sb.Append('\n').Append(' ', n * depth);
        }
    }

    private static void WriteJsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20)
                    {
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        sb.Append(c);
                    }
                    break;
            }
        }
        sb.Append('"');
    }

    public static bool IsNumber(object? v) => v is long or int or double;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        int i => i,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new JinjaException($"expected a number, got {Repr(v)}."),
    };

    public static bool AreEqual(object? a, object? b)
    {
        if (a is Undefined || b is Undefined)
        {
            return a is Undefined && b is Undefined;
        }
        if (a is null || b is null)
        {
            return a is null && b is null;
        }
        if ((IsNumber(a) || a is bool) && (IsNumber(b) || b is bool))
        {
            return ToDouble(a) == ToDouble(b);
        }
        if (a is string sa && b is string sb)
        {
            return string.Equals(sa, sb, StringComparison.Ordinal);
        }
        if (a is List<object?> la && b is List<object?> lb)
        {
            return la.Count == lb.Count && la.Zip(lb).All(p => AreEqual(p.First, p.Second));
        }
        if (a is Dictionary<string, object?> da && b is Dictionary<string, object?> db)
        {
            return da.Count == db.Count && da.All(kv => db.TryGetValue(kv.Key, out var v) && AreEqual(kv.Value, v));
        }
        return ReferenceEquals(a, b);
    }

    public static int Compare(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b))
        {
            return ToDouble(a).CompareTo(ToDouble(b));
        }
        if (a is string sa && b is string sb)
        {
            return string.CompareOrdinal(sa, sb);
        }
        if (a is List<object?> la && b is List<object?> lb)
        {
            for (var i = 0; i < Math.Min(la.Count, lb.Count); i++)
            {
                var c = Compare(la[i], lb[i]);
                if (c != 0)
                {
                    return c;
                }
            }
            return la.Count.CompareTo(lb.Count);
        }
        throw new JinjaException($"cannot compare {Repr(a)} with {Repr(b)}.");
    }

    /// <summary>Iterates a value as Python would (dicts yield their keys, strings their characters).</summary>
    public static List<object?> Iterate(object? value) => value switch
    {
        List<object?> list => list,
        Dictionary<string, object?> dict => dict.Keys.Cast<object?>().ToList(),
        string s => s.Select(c => (object?)c.ToString()).ToList(),
        Undefined or null => [],
        _ => throw new JinjaException($"{Repr(value)} is not iterable."),
    };
}
