using System.Globalization;
using static LMCache.Inference.Templates.Jinja.JinjaValues;

namespace LMCache.Inference.Templates.Jinja;

/// <summary>
/// Filters and tests. Filters: trim, tojson (indent), length/count, upper, lower, title, capitalize, default/d,
/// string, int, float, abs, round, first, last, join, list, items, dictsort, reverse, sort (attribute, reverse),
/// unique, map (attribute or filter), select/reject (test), selectattr/rejectattr, sum, min, max, replace, indent,
/// safe, escape/e, striptags-free wordcount, batch-free center. Tests: defined, undefined, none, string, number,
/// integer, float, boolean, true, false, mapping, iterable, sequence, callable, odd, even, divisibleby, eq/equalto/==,
/// ne, lt, gt, le, ge, in, lower, upper, sameas.
/// </summary>
internal static class JinjaFilters
{
    public static object? Apply(string name, object? value, List<object?> args, Dictionary<string, object?> kwargs)
    {
        object? Arg(int index, string key, object? fallback) =>
            index < args.Count ? args[index] : kwargs.TryGetValue(key, out var v) ? v : fallback;

        switch (name)
        {
            case "trim":
                return args.Count > 0 ? ToText(value).Trim(ToText(args[0]).ToCharArray()) : ToText(value).Trim();
            case "tojson":
                var indent = Arg(0, "indent", null);
                return ToJson(value, indent is null ? null : (int)ToDouble(indent));
            case "length":
            case "count":
                return value switch
                {
                    string s => (long)s.Length,
                    List<object?> l => (long)l.Count,
                    Dictionary<string, object?> d => (long)d.Count,
                    Undefined or null => 0L,
                    _ => throw new JinjaException($"object of type {Repr(value)} has no length."),
                };
            case "upper":
                return ToText(value).ToUpperInvariant();
            case "lower":
                return ToText(value).ToLowerInvariant();
            case "title":
                return CultureInfo.InvariantCulture.TextInfo.ToTitleCase(ToText(value).ToLowerInvariant());
            case "capitalize":
                var text = ToText(value);
                return text.Length == 0 ? text : char.ToUpperInvariant(text[0]) + text[1..].ToLowerInvariant();
            case "default":
            case "d":
                var fallback = Arg(0, "default_value", "");
                var boolean = IsTrue(Arg(1, "boolean", false));
                return value is Undefined || (boolean && !IsTrue(value)) ? fallback : value;
            case "string":
                return ToText(value);
            case "int":
                return value switch
                {
                    long l => l,
                    double d => (long)d,
                    bool b => b ? 1L : 0L,
                    string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var p) => p,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var pd) => (long)pd,
                    _ => Arg(0, "default", 0L),
                };
            case "float":
                return value switch
                {
                    long or double or bool => ToDouble(value),
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var p) => p,
                    _ => Arg(0, "default", 0.0),
                };
            case "abs":
                return value is long al ? (object)Math.Abs(al) : Math.Abs(ToDouble(value));
            case "round":
                var precision = (int)ToDouble(Arg(0, "precision", 0L));
                return Math.Round(ToDouble(value), precision, MidpointRounding.ToEven);
            case "first":
                return Iterate(value) is { Count: > 0 } f ? f[0] : Undefined.Instance;
            case "last":
                return Iterate(value) is { Count: > 0 } la ? la[^1] : Undefined.Instance;
            case "join":
                var separator = ToText(Arg(0, "d", ""));
                var attribute = Arg(1, "attribute", null);
                return string.Join(separator, Iterate(value).Select(x => ToText(attribute is null ? x : Attr(x, ToText(attribute)))));
            case "list":
                return Iterate(value).ToList();
            case "items":
                return value is Dictionary<string, object?> dict
                    ? dict.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList()
                    : value is Undefined or null ? [] : throw new JinjaException("items filter needs a mapping.");
            case "dictsort":
                return value is Dictionary<string, object?> sortable
                    ? sortable.OrderBy(kv => kv.Key, StringComparer.OrdinalIgnoreCase).Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList()
                    : throw new JinjaException("dictsort filter needs a mapping.");
            case "reverse":
                return value is string rs ? new string(rs.Reverse().ToArray()) : Iterate(value).AsEnumerable().Reverse().ToList();
            case "sort":
                {
                    var reverse = IsTrue(Arg(0, "reverse", false));
                    var attr = Arg(2, "attribute", null);
                    var list = Iterate(value).ToList();
                    Comparison<object?> comparison = attr is null ? JinjaValues.Compare : (a, b) => JinjaValues.Compare(Attr(a, ToText(attr)), Attr(b, ToText(attr)));
                    var sorted = list.Order(Comparer<object?>.Create(comparison)).ToList();
                    if (reverse)
                    {
                        sorted.Reverse();
                    }
                    return sorted;
                }
            case "unique":
                {
                    var result = new List<object?>();
                    foreach (var item in Iterate(value))
                    {
                        if (!result.Any(x => AreEqual(x, item)))
                        {
                            result.Add(item);
                        }
                    }
                    return result;
                }
            case "map":
                if (kwargs.TryGetValue("attribute", out var mapAttr))
                {
                    var mapDefault = kwargs.TryGetValue("default", out var md) ? md : Undefined.Instance;
                    return Iterate(value).Select(x => Attr(x, ToText(mapAttr)) is Undefined ? mapDefault : Attr(x, ToText(mapAttr))).ToList();
                }
                if (args.Count > 0)
                {
                    var filterName = ToText(args[0]);
                    return Iterate(value).Select(x => Apply(filterName, x, args.Skip(1).ToList(), [])).ToList();
                }
                throw new JinjaException("map needs an attribute or a filter name.");
            case "select":
            case "reject":
                {
                    var keep = name == "select";
                    return Iterate(value).Where(x => (args.Count == 0 ? IsTrue(x) : Test(ToText(args[0]), x, args.Skip(1).ToList())) == keep).ToList();
                }
            case "selectattr":
            case "rejectattr":
                {
                    var keep = name == "selectattr";
                    var attr = ToText(args[0]);
                    return Iterate(value).Where(x =>
                    {
                        var a = Attr(x, attr);
                        return (args.Count < 2 ? IsTrue(a) : Test(ToText(args[1]), a, args.Skip(2).ToList())) == keep;
                    }).ToList();
                }
            case "sum":
                {
                    var attr = Arg(0, "attribute", null);
                    var items = Iterate(value).Select(x => attr is null ? x : Attr(x, ToText(attr))).ToList();
                    return items.All(x => x is long) ? (object)items.Sum(x => (long)x!) : items.Sum(ToDouble);
                }
            case "min":
                return Iterate(value).Order(Comparer<object?>.Create(JinjaValues.Compare)).FirstOrDefault();
            case "max":
                return Iterate(value).Order(Comparer<object?>.Create(JinjaValues.Compare)).LastOrDefault();
            case "replace":
                {
                    var s = ToText(value);
                    var old = ToText(args[0]);
                    var replacement = ToText(args[1]);
                    return old.Length == 0 ? s : s.Replace(old, replacement, StringComparison.Ordinal);
                }
            case "indent":
                {
                    var width = Arg(0, "width", 4L);
                    var prefix = width is string ws ? ws : new string(' ', (int)ToDouble(width));
                    var indentFirst = IsTrue(Arg(1, "first", false));
                    var blank = IsTrue(Arg(2, "blank", false));
                    var lines = ToText(value).Split('\n');
                    for (var i = 0; i < lines.Length; i++)
                    {
                        if ((i > 0 || indentFirst) && (blank || lines[i].Length > 0))
                        {
                            lines[i] = prefix + lines[i];
                        }
                    }
                    return string.Join('\n', lines);
                }
            case "safe":
                return value;
            case "escape":
            case "e":
                return ToText(value).Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal)
                    .Replace(">", "&gt;", StringComparison.Ordinal).Replace("\"", "&#34;", StringComparison.Ordinal).Replace("'", "&#39;", StringComparison.Ordinal);
            case "wordcount":
                return (long)ToText(value).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;
            case "center":
                {
                    var s = ToText(value);
                    var width = (int)ToDouble(Arg(0, "width", 80L));
                    if (s.Length >= width)
                    {
                        return s;
                    }
                    var left = (width - s.Length) / 2;
                    return new string(' ', left) + s + new string(' ', width - s.Length - left);
                }
            default:
                throw new JinjaException($"unknown filter '{name}'.");
        }
    }

    private static object? Attr(object? item, string attribute)
    {
        object? current = item;
        foreach (var part in attribute.Split('.'))
        {
            current = current switch
            {
                Dictionary<string, object?> d => d.TryGetValue(part, out var v) ? v : Undefined.Instance,
                List<object?> l when int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i) => i < l.Count ? l[i] : Undefined.Instance,
                JinjaNamespace ns => ns.Values.TryGetValue(part, out var nv) ? nv : Undefined.Instance,
                _ => Undefined.Instance,
            };
        }
        return current;
    }

    public static bool Test(string name, object? value, List<object?> args) => name switch
    {
        "defined" => value is not Undefined,
        "undefined" => value is Undefined,
        "none" => value is null,
        "string" => value is string,
        "number" => value is long or double,
        "integer" => value is long,
        "float" => value is double,
        "boolean" => value is bool,
        "true" => value is true,
        "false" => value is false,
        "mapping" => value is Dictionary<string, object?> or JinjaNamespace,
        "iterable" => value is List<object?> or Dictionary<string, object?> or string,
        "sequence" => value is List<object?> or Dictionary<string, object?> or string,
        "callable" => value is JinjaCallable,
        "odd" => (long)ToDouble(value) % 2 != 0,
        "even" => (long)ToDouble(value) % 2 == 0,
        "divisibleby" => (long)ToDouble(value) % (long)ToDouble(args[0]) == 0,
        "eq" or "equalto" or "==" => AreEqual(value, args[0]),
        "ne" or "!=" => !AreEqual(value, args[0]),
        "lt" or "lessthan" or "<" => JinjaValues.Compare(value, args[0]) < 0,
        "gt" or "greaterthan" or ">" => JinjaValues.Compare(value, args[0]) > 0,
        "le" or "<=" => JinjaValues.Compare(value, args[0]) <= 0,
        "ge" or ">=" => JinjaValues.Compare(value, args[0]) >= 0,
        "in" => args[0] switch
        {
            List<object?> l => l.Any(x => AreEqual(x, value)),
            string s => value is string sub && s.Contains(sub, StringComparison.Ordinal),
            Dictionary<string, object?> d => value is string k && d.ContainsKey(k),
            _ => false,
        },
        "lower" => value is string ls && ls == ls.ToLowerInvariant(),
        "upper" => value is string us && us == us.ToUpperInvariant(),
        "sameas" => ReferenceEquals(value, args[0]) || (value is null && args[0] is null) || (value is bool b && args[0] is bool c && b == c),
        _ => throw new JinjaException($"unknown test '{name}'."),
    };
}
