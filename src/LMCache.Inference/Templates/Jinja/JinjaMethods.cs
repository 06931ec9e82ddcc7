using static LMCache.Inference.Templates.Jinja.JinjaValues;

namespace LMCache.Inference.Templates.Jinja;

/// <summary>
/// Python methods templates call on values: str (strip, lstrip, rstrip, startswith, endswith, split, rsplit, upper,
/// lower, title, capitalize, replace, find, count, join, splitlines, format-free), dict (items, keys, values, get)
/// and list (index, count). Mutating methods (<c>append</c>, <c>update</c>) are refused, as in Hugging Face's
/// immutable sandbox.
/// </summary>
internal static class JinjaMethods
{
    public static JinjaCallable? Bind(object? target, string name) => target switch
    {
        string s => BindString(s, name),
        Dictionary<string, object?> d => BindDict(d, name),
        List<object?> l => BindList(l, name),
        _ => null,
    };

    private static JinjaCallable? BindString(string s, string name) => name switch
    {
        "strip" => (a, _) => a.Count > 0 && a[0] is string c ? s.Trim(c.ToCharArray()) : s.Trim(),
        "lstrip" => (a, _) => a.Count > 0 && a[0] is string c ? s.TrimStart(c.ToCharArray()) : s.TrimStart(),
        "rstrip" => (a, _) => a.Count > 0 && a[0] is string c ? s.TrimEnd(c.ToCharArray()) : s.TrimEnd(),
        "startswith" => (a, _) => a[0] is List<object?> options ? options.Any(o => s.StartsWith(ToText(o), StringComparison.Ordinal)) : s.StartsWith(ToText(a[0]), StringComparison.Ordinal),
        "endswith" => (a, _) => a[0] is List<object?> options ? options.Any(o => s.EndsWith(ToText(o), StringComparison.Ordinal)) : s.EndsWith(ToText(a[0]), StringComparison.Ordinal),
        "split" => (a, kw) => Split(s, a.Count > 0 ? a[0] : kw.GetValueOrDefault("sep"), a.Count > 1 ? (int)ToDouble(a[1]) : kw.TryGetValue("maxsplit", out var m) ? (int)ToDouble(m) : -1, fromRight: false),
        "rsplit" => (a, kw) => Split(s, a.Count > 0 ? a[0] : kw.GetValueOrDefault("sep"), a.Count > 1 ? (int)ToDouble(a[1]) : kw.TryGetValue("maxsplit", out var m) ? (int)ToDouble(m) : -1, fromRight: true),
        "splitlines" => (_, _) => s.Split('\n').Select(x => (object?)x.TrimEnd('\r')).ToList(),
        "upper" => (_, _) => s.ToUpperInvariant(),
        "lower" => (_, _) => s.ToLowerInvariant(),
        "title" => (_, _) => JinjaFilters.Apply("title", s, [], []),
        "capitalize" => (_, _) => JinjaFilters.Apply("capitalize", s, [], []),
        "replace" => (a, _) =>
        {
            var old = ToText(a[0]);
            if (old.Length == 0)
            {
                return s;
            }
            var count = a.Count > 2 ? (int)ToDouble(a[2]) : -1;
            if (count < 0)
            {
                return s.Replace(old, ToText(a[1]), StringComparison.Ordinal);
            }
            var result = s;
            var start = 0;
            for (var i = 0; i < count; i++)
            {
                var at = result.IndexOf(old, start, StringComparison.Ordinal);
                if (at < 0)
                {
                    break;
                }
                result = string.Concat(result.AsSpan(0, at), ToText(a[1]), result.AsSpan(at + old.Length));
                start = at + ToText(a[1]).Length;
            }
            return result;
        }
        ,
        "find" => (a, _) => (long)s.IndexOf(ToText(a[0]), StringComparison.Ordinal),
        "count" => (a, _) =>
        {
            var sub = ToText(a[0]);
            if (sub.Length == 0)
            {
                return (long)(s.Length + 1);
            }
            long n = 0;
            for (var i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal))
            {
                n++;
            }
            return n;
        }
        ,
        "join" => (a, _) => string.Join(s, Iterate(a[0]).Select(ToText)),
        "isdigit" => (_, _) => s.Length > 0 && s.All(char.IsDigit),
        "isspace" => (_, _) => s.Length > 0 && s.All(char.IsWhiteSpace),
        _ => null,
    };

    private static List<object?> Split(string s, object? separator, int maxSplit, bool fromRight)
    {
        if (separator is null or Undefined)
        {
            var parts = s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Select(x => (object?)x).ToList();
            if (maxSplit >= 0 && parts.Count > maxSplit + 1)
            {
                // Python keeps the remainder intact; rebuild it from the original text.
                var words = 0;
                var i = 0;
                while (words < maxSplit)
                {
                    while (i < s.Length && char.IsWhiteSpace(s[i]))
                    {
                        i++;
                    }
                    while (i < s.Length && !char.IsWhiteSpace(s[i]))
                    {
                        i++;
                    }
                    words++;
                }
                return [.. parts.Take(maxSplit), s[i..].TrimStart()];
            }
            return parts;
        }
        var sep = ToText(separator);
        if (sep.Length == 0)
        {
            throw new JinjaException("empty separator.");
        }
        if (maxSplit < 0)
        {
            return s.Split(sep).Select(x => (object?)x).ToList();
        }
        if (!fromRight)
        {
            return s.Split(sep, maxSplit + 1).Select(x => (object?)x).ToList();
        }
        var result = new List<object?>();
        var rest = s;
        for (var i = 0; i < maxSplit; i++)
        {
            var at = rest.LastIndexOf(sep, StringComparison.Ordinal);
            if (at < 0)
            {
                break;
            }
            result.Insert(0, rest[(at + sep.Length)..]);
            rest = rest[..at];
        }
        result.Insert(0, rest);
        return result;
    }

    private static JinjaCallable? BindDict(Dictionary<string, object?> d, string name) => name switch
    {
        "items" => (_, _) => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList(),
        "keys" => (_, _) => d.Keys.Select(k => (object?)k).ToList(),
        "values" => (_, _) => d.Values.ToList(),
        "get" => (a, _) => a.Count > 0 && a[0] is string k && d.TryGetValue(k, out var v) ? v : a.Count > 1 ? a[1] : null,
        _ => null,
    };

    private static JinjaCallable? BindList(List<object?> l, string name) => name switch
    {
        "index" => (a, _) =>
        {
            var i = l.FindIndex(x => AreEqual(x, a[0]));
            return i >= 0 ? (long)i : throw new JinjaException($"{Repr(a[0])} is not in list.");
        }
        ,
        "count" => (a, _) => (long)l.Count(x => AreEqual(x, a[0])),
        "append" or "extend" or "pop" or "insert" or "remove" or "clear" or "sort" or "reverse" =>
            (_, _) => throw new JinjaException($"lists are immutable in chat templates ('{name}' is not allowed)."),
        _ => null,
    };
}
