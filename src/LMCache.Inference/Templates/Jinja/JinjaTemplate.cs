using System.Globalization;
using System.Text;
using static LMCache.Inference.Templates.Jinja.JinjaValues;

namespace LMCache.Inference.Templates.Jinja;

/// <summary>
/// A compiled Jinja template, rendered the way Hugging Face renders chat templates (<c>trim_blocks</c> and
/// <c>lstrip_blocks</c> on, <c>loopcontrols</c> enabled, lists and dicts immutable). Supports the subset real chat
/// templates use: <c>if/elif/else</c>, <c>for</c> (with <c>loop.*</c>, <c>else</c>, inline <c>if</c>, tuple
/// unpacking), <c>set</c> (including block set and <c>namespace</c> attributes), <c>macro</c>/<c>call</c>,
/// <c>filter</c> blocks, <c>break</c>/<c>continue</c>, <c>generation</c>; Python-like expressions with slicing,
/// string methods, tests and the filters in <see cref="JinjaFilters"/>. Not supported: template inheritance
/// (<c>extends</c>/<c>block</c>/<c>include</c>/<c>import</c>), autoescaping, <c>%</c> string formatting.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly List<Node> _nodes;

    private JinjaTemplate(List<Node> nodes)
    {
        _nodes = nodes;
    }

    /// <summary>Parses a template.</summary>
    /// <exception cref="JinjaException">Syntax error or unsupported construct.</exception>
    public static JinjaTemplate Parse(string source) => new(JinjaParser.Parse(source));

    /// <summary>
    /// Renders with <paramref name="variables"/> (values: null, bool, long, double, string,
    /// <c>List&lt;object?&gt;</c>, <c>Dictionary&lt;string, object?&gt;</c>).
    /// </summary>
    /// <exception cref="JinjaException">A runtime error, or the template called <c>raise_exception</c>.</exception>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        var context = new RenderContext();
        foreach (var (k, v) in variables)
        {
            context.Globals[k] = v;
        }
        var sb = new StringBuilder();
        context.RenderNodes(_nodes, sb);
        return sb.ToString();
    }

    private enum Flow
    {
        Normal,
        Break,
        Continue,
    }

    private sealed class RenderContext
    {
        private readonly List<Dictionary<string, object?>> _scopes = [];

        public RenderContext()
        {
            Globals = new Dictionary<string, object?>(StringComparer.Ordinal)
            {
                ["raise_exception"] = (JinjaCallable)((args, _) => throw new JinjaException(args.Count > 0 ? ToText(args[0]) : "raise_exception called")),
                ["range"] = (JinjaCallable)((args, _) =>
                {
                    var ints = args.Select(a => (long)ToDouble(a)).ToArray();
                    var (start, stop, step) = ints.Length switch
                    {
                        1 => (0L, ints[0], 1L),
                        2 => (ints[0], ints[1], 1L),
                        3 => (ints[0], ints[1], ints[2]),
                        _ => throw new JinjaException("range() takes 1 to 3 arguments."),
                    };
                    if (step == 0)
                    {
                        throw new JinjaException("range() step must not be zero.");
                    }
                    var list = new List<object?>();
                    for (var i = start; step > 0 ? i < stop : i > stop; i += step)
                    {
                        list.Add(i);
                    }
                    return list;
                }),
                ["namespace"] = (JinjaCallable)((args, kwargs) =>
                {
                    var ns = new JinjaNamespace();
                    foreach (var a in args.OfType<Dictionary<string, object?>>())
                    {
                        foreach (var (k, v) in a)
                        {
                            ns.Values[k] = v;
                        }
                    }
                    foreach (var (k, v) in kwargs)
                    {
                        ns.Values[k] = v;
                    }
                    return ns;
                }),
                ["dict"] = (JinjaCallable)((args, kwargs) =>
                {
                    var d = new Dictionary<string, object?>(StringComparer.Ordinal);
                    foreach (var (k, v) in kwargs)
                    {
                        d[k] = v;
                    }
                    return d;
                }),
                ["strftime_now"] = (JinjaCallable)((args, _) => StrFTime(DateTime.Now, args.Count > 0 ? ToText(args[0]) : "%Y-%m-%d")),
            };
            _scopes.Add(Globals);
        }

        public Dictionary<string, object?> Globals { get; }

        private Dictionary<string, object?> Top => _scopes[^1];

        public object? Lookup(string name)
        {
            for (var i = _scopes.Count - 1; i >= 0; i--)
            {
                if (_scopes[i].TryGetValue(name, out var v))
                {
                    return v;
                }
            }
            return Undefined.Instance;
        }

        public Flow RenderNodes(List<Node> nodes, StringBuilder sb)
        {
            foreach (var node in nodes)
            {
                var flow = Render(node, sb);
                if (flow != Flow.Normal)
                {
                    return flow;
                }
            }
            return Flow.Normal;
        }

        private Flow Render(Node node, StringBuilder sb)
        {
            switch (node)
            {
                case TextNode t:
                    sb.Append(t.Text);
                    return Flow.Normal;
                case OutputNode o:
                    sb.Append(ToText(Eval(o.Value)));
                    return Flow.Normal;
                case IfNode i:
                    foreach (var (condition, body) in i.Branches)
                    {
                        if (IsTrue(Eval(condition)))
                        {
                            return RenderNodes(body, sb);
                        }
                    }
                    return i.Else is null ? Flow.Normal : RenderNodes(i.Else, sb);
                case ForNode f:
                    return RenderFor(f, sb);
                case SetNode s:
                    Assign(s.Target, Eval(s.Value));
                    return Flow.Normal;
                case SetBlockNode sb2:
                    {
                        var inner = new StringBuilder();
                        RenderNodes(sb2.Body, inner);
                        Top[sb2.Name] = inner.ToString();
                        return Flow.Normal;
                    }
                case MacroNode m:
                    Top[m.Name] = MakeMacro(m);
                    return Flow.Normal;
                case CallBlockNode c:
                    {
                        var caller = (JinjaCallable)((_, _) =>
                        {
                            var inner = new StringBuilder();
                            RenderNodes(c.Body, inner);
                            return inner.ToString();
                        });
                        _scopes.Add(new Dictionary<string, object?>(StringComparer.Ordinal) { ["caller"] = caller });
                        try
                        {
                            sb.Append(ToText(Eval(c.Call)));
                        }
                        finally
                        {
                            _scopes.RemoveAt(_scopes.Count - 1);
                        }
                        return Flow.Normal;
                    }
                case FilterBlockNode fb:
                    {
                        var inner = new StringBuilder();
                        RenderNodes(fb.Body, inner);
                        sb.Append(ToText(JinjaFilters.Apply(fb.Filter, inner.ToString(), [.. fb.Args.Select(Eval)], [])));
                        return Flow.Normal;
                    }
                case BlockNode b:
                    return RenderNodes(b.Body, sb);
                case BreakNode:
                    return Flow.Break;
                case ContinueNode:
                    return Flow.Continue;
                default:
                    throw new JinjaException($"unknown node {node.GetType().Name}.");
            }
        }

        private Flow RenderFor(ForNode f, StringBuilder sb)
        {
            var source = Eval(f.Iterable);
            var items = source is Dictionary<string, object?> dict && f.Targets.Length == 2
                ? dict.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList()
                : Iterate(source);
            if (f.Filter is not null)
            {
                var filtered = new List<object?>();
                foreach (var item in items)
                {
                    _scopes.Add(new Dictionary<string, object?>(StringComparer.Ordinal));
                    try
                    {
                        Bind(f.Targets, item);
                        if (IsTrue(Eval(f.Filter)))
                        {
                            filtered.Add(item);
                        }
                    }
                    finally
                    {
                        _scopes.RemoveAt(_scopes.Count - 1);
                    }
                }
                items = filtered;
            }
            if (items.Count == 0)
            {
                return f.Else is null ? Flow.Normal : RenderNodes(f.Else, sb);
            }
            for (var index = 0; index < items.Count; index++)
            {
                var scope = new Dictionary<string, object?>(StringComparer.Ordinal);
                _scopes.Add(scope);
                try
                {
                    var i = index;
                    scope["loop"] = new Dictionary<string, object?>(StringComparer.Ordinal)
                    {
                        ["index"] = (long)(i + 1),
                        ["index0"] = (long)i,
                        ["revindex"] = (long)(items.Count - i),
                        ["revindex0"] = (long)(items.Count - i - 1),
                        ["first"] = i == 0,
                        ["last"] = i == items.Count - 1,
                        ["length"] = (long)items.Count,
                        ["previtem"] = i > 0 ? items[i - 1] : Undefined.Instance,
                        ["nextitem"] = i < items.Count - 1 ? items[i + 1] : Undefined.Instance,
                        ["depth"] = 1L,
                        ["depth0"] = 0L,
                        ["cycle"] = (JinjaCallable)((args, _) => args.Count == 0 ? Undefined.Instance : args[i % args.Count]),
                    };
                    Bind(f.Targets, items[index]);
                    var flow = RenderNodes(f.Body, sb);
                    if (flow == Flow.Break)
                    {
                        break;
                    }
                }
                finally
                {
                    _scopes.RemoveAt(_scopes.Count - 1);
                }
            }
            return Flow.Normal;
        }

        private void Bind(string[] targets, object? item)
        {
            if (targets.Length == 1)
            {
                Top[targets[0]] = item;
                return;
            }
            var values = Iterate(item);
            if (values.Count != targets.Length)
            {
                throw new JinjaException($"cannot unpack {values.Count} values into {targets.Length} names.");
            }
            for (var i = 0; i < targets.Length; i++)
            {
                Top[targets[i]] = values[i];
            }
        }

        private void Assign(Expr target, object? value)
        {
            switch (target)
            {
                case NameExpr n:
                    Top[n.Name] = value;
                    return;
                case AttrExpr { Target: NameExpr ns } a when Lookup(ns.Name) is JinjaNamespace space:
                    space.Values[a.Name] = value;
                    return;
                default:
                    throw new JinjaException("can only assign to names and namespace attributes.");
            }
        }

        private JinjaCallable MakeMacro(MacroNode m) => (args, kwargs) =>
        {
            var scope = new Dictionary<string, object?>(StringComparer.Ordinal);
            for (var i = 0; i < m.Parameters.Count; i++)
            {
                var (name, defaultValue) = m.Parameters[i];
                scope[name] = i < args.Count ? args[i]
                    : kwargs.TryGetValue(name, out var kw) ? kw
                    : defaultValue is null ? Undefined.Instance : Eval(defaultValue);
            }
            scope["varargs"] = args.Skip(m.Parameters.Count).ToList();
            scope["kwargs"] = kwargs.Where(kv => m.Parameters.All(p => p.Name != kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
            _scopes.Add(scope);
            try
            {
                var sb = new StringBuilder();
                RenderNodes(m.Body, sb);
                return sb.ToString();
            }
            finally
            {
                _scopes.RemoveAt(_scopes.Count - 1);
            }
        };

        public object? Eval(Expr expr)
        {
            switch (expr)
            {
                case LiteralExpr l:
                    return l.Value;
                case NameExpr n:
                    return Lookup(n.Name);
                case AttrExpr a:
                    return GetAttribute(Eval(a.Target), a.Name);
                case ItemExpr i:
                    return GetItem(Eval(i.Target), Eval(i.Key));
                case SliceExpr s:
                    return Slice(Eval(s.Target), s.Start is null ? null : Eval(s.Start), s.Stop is null ? null : Eval(s.Stop), s.Step is null ? null : Eval(s.Step));
                case CallExpr c:
                    {
                        var target = Eval(c.Target);
                        if (target is not JinjaCallable callable)
                        {
                            throw new JinjaException($"{DescribeCall(c.Target)} is not callable.");
                        }
                        return callable([.. c.Args.Select(Eval)], c.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value), StringComparer.Ordinal));
                    }
                case FilterExpr f:
                    return JinjaFilters.Apply(f.Name, Eval(f.Target), [.. f.Args.Select(Eval)], f.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value), StringComparer.Ordinal));
                case TestExpr t:
                    {
                        var result = JinjaFilters.Test(t.Name, Eval(t.Target), [.. t.Args.Select(Eval)]);
                        return t.Negated ? !result : result;
                    }
                case UnaryExpr u:
                    {
                        var v = Eval(u.Operand);
                        return u.Op switch
                        {
                            "not" => !IsTrue(v),
                            "-" => v is long l ? (object)(-l) : -ToDouble(v),
                            _ => throw new JinjaException($"unknown unary operator {u.Op}."),
                        };
                    }
                case BinaryExpr b:
                    return EvalBinary(b);
                case CompareExpr c:
                    {
                        var left = Eval(c.Left);
                        foreach (var (op, rightExpr) in c.Rest)
                        {
                            var right = Eval(rightExpr);
                            var ok = op switch
                            {
                                "==" => AreEqual(left, right),
                                "!=" => !AreEqual(left, right),
                                "<" => JinjaValues.Compare(left, right) < 0,
                                ">" => JinjaValues.Compare(left, right) > 0,
                                "<=" => JinjaValues.Compare(left, right) <= 0,
                                ">=" => JinjaValues.Compare(left, right) >= 0,
                                "in" => Contains(right, left),
                                "notin" => !Contains(right, left),
                                _ => throw new JinjaException($"unknown comparison {op}."),
                            };
                            if (!ok)
                            {
                                return false;
                            }
                            left = right;
                        }
                        return true;
                    }
                case ConditionalExpr c:
                    return IsTrue(Eval(c.Condition)) ? Eval(c.Then) : c.Else is null ? Undefined.Instance : Eval(c.Else);
                case ListExpr l:
                    return l.Items.Select(Eval).ToList();
                case DictExpr d:
                    {
                        var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
                        foreach (var (k, v) in d.Items)
                        {
                            dict[ToText(Eval(k))] = Eval(v);
                        }
                        return dict;
                    }
                default:
                    throw new JinjaException($"unknown expression {expr.GetType().Name}.");
            }
        }

        private static string DescribeCall(Expr target) => target switch
        {
            NameExpr n => $"'{n.Name}'",
            AttrExpr a => $"'{a.Name}'",
            _ => "the value",
        };

        private object? EvalBinary(BinaryExpr b)
        {
            if (b.Op == "and")
            {
                var left = Eval(b.Left);
                return IsTrue(left) ? Eval(b.Right) : left;
            }
            if (b.Op == "or")
            {
                var left = Eval(b.Left);
                return IsTrue(left) ? left : Eval(b.Right);
            }
            var l = Eval(b.Left);
            var r = Eval(b.Right);
            switch (b.Op)
            {
                case "~":
                    return ToText(l) + ToText(r);
                case "+":
                    if (l is string ls && r is string rs)
                    {
                        return ls + rs;
                    }
                    if (l is List<object?> ll && r is List<object?> rl)
                    {
                        return ll.Concat(rl).ToList();
                    }
                    if (l is Undefined || r is Undefined)
                    {
                        throw new JinjaException("cannot add an undefined value.");
                    }
                    return Arithmetic(l, r, (x, y) => x + y, (x, y) => x + y);
                case "-":
                    return Arithmetic(l, r, (x, y) => x - y, (x, y) => x - y);
                case "*":
                    if (l is string s1 && r is long n1)
                    {
                        return string.Concat(Enumerable.Repeat(s1, (int)Math.Max(0, n1)));
                    }
                    if (l is List<object?> list1 && r is long n2)
                    {
                        return Enumerable.Range(0, (int)Math.Max(0, n2)).SelectMany(_ => list1).ToList();
                    }
                    return Arithmetic(l, r, (x, y) => x * y, (x, y) => x * y);
                case "/":
                    return ToDouble(l) / ToDouble(r);
                case "//":
                    return l is long a && r is long c ? (object)(long)Math.Floor((double)a / c) : Math.Floor(ToDouble(l) / ToDouble(r));
                case "%":
                    if (l is long x1 && r is long y1)
                    {
                        return ((x1 % y1) + y1) % y1;
                    }
                    var dx = ToDouble(l);
                    var dy = ToDouble(r);
                    return dx - (dy * Math.Floor(dx / dy));
                case "**":
                    return l is long p && r is long q && q >= 0 ? (object)(long)Math.Pow(p, q) : Math.Pow(ToDouble(l), ToDouble(r));
                default:
                    throw new JinjaException($"unknown operator {b.Op}.");
            }
        }

        private static object Arithmetic(object? l, object? r, Func<long, long, long> integer, Func<double, double, double> floating) =>
            (l is long or bool) && (r is long or bool) ? (object)integer(l is bool lb ? (lb ? 1 : 0) : (long)l, r is bool rb ? (rb ? 1 : 0) : (long)r!) : floating(ToDouble(l), ToDouble(r));

        private static bool Contains(object? container, object? item) => container switch
        {
            string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal) : throw new JinjaException("'in <string>' requires a string."),
            List<object?> list => list.Any(x => AreEqual(x, item)),
            Dictionary<string, object?> dict => item is string key && dict.ContainsKey(key),
            JinjaNamespace ns => item is string k && ns.Values.ContainsKey(k),
            Undefined or null => false,
            _ => throw new JinjaException($"argument of type {Repr(container)} is not iterable."),
        };

        private static object? GetItem(object? target, object? key)
        {
            switch (target)
            {
                case Dictionary<string, object?> dict:
                    return key is string k && dict.TryGetValue(k, out var v) ? v : Undefined.Instance;
                case List<object?> list when key is long or int:
                    {
                        var i = Convert.ToInt32(key, CultureInfo.InvariantCulture);
                        if (i < 0)
                        {
                            i += list.Count;
                        }
                        return i >= 0 && i < list.Count ? list[i] : Undefined.Instance;
                    }
                case string s when key is long or int:
                    {
                        var i = Convert.ToInt32(key, CultureInfo.InvariantCulture);
                        if (i < 0)
                        {
                            i += s.Length;
                        }
                        return i >= 0 && i < s.Length ? s[i].ToString() : Undefined.Instance;
                    }
                case JinjaNamespace ns:
                    return key is string nk && ns.Values.TryGetValue(nk, out var nv) ? nv : Undefined.Instance;
                default:
                    return key is string name ? GetAttribute(target, name) : Undefined.Instance;
            }
        }

        private static object? Slice(object? target, object? start, object? stop, object? step)
        {
            var st = step is null ? 1 : (int)ToDouble(step);
            if (st == 0)
            {
                throw new JinjaException("slice step cannot be zero.");
            }
            int length;
            Func<IEnumerable<int>, object?> build;
            switch (target)
            {
                case List<object?> list:
                    length = list.Count;
                    build = idx => idx.Select(i => list[i]).ToList();
                    break;
                case string s:
                    length = s.Length;
                    build = idx => string.Concat(idx.Select(i => s[i]));
                    break;
                case Undefined or null:
                    return Undefined.Instance;
                default:
                    throw new JinjaException($"{Repr(target)} cannot be sliced.");
            }
            int Normalize(object? v, int fallback, bool isStart)
            {
                if (v is null)
                {
                    return fallback;
                }
                var i = (int)ToDouble(v);
                if (i < 0)
                {
                    i += length;
                }
                return st > 0 ? Math.Clamp(i, 0, length) : Math.Clamp(i, -1, length - 1);
            }
            var from = Normalize(start, st > 0 ? 0 : length - 1, true);
            var to = Normalize(stop, st > 0 ? length : -1, false);
            var indices = new List<int>();
            for (var i = from; st > 0 ? i < to : i > to; i += st)
            {
                indices.Add(i);
            }
            return build(indices);
        }

        private static object? GetAttribute(object? target, string name)
        {
            switch (target)
            {
                case Dictionary<string, object?> dict:
                    if (dict.TryGetValue(name, out var v))
                    {
                        return v;
                    }
                    return (object?)JinjaMethods.Bind(dict, name) ?? Undefined.Instance;
                case JinjaNamespace ns:
                    return ns.Values.TryGetValue(name, out var nv) ? nv : Undefined.Instance;
                case string or List<object?>:
                    return (object?)JinjaMethods.Bind(target, name) ?? Undefined.Instance;
                default:
                    return Undefined.Instance;
            }
        }

        private static string StrFTime(DateTime now, string format)
        {
            var sb = new StringBuilder();
            for (var i = 0; i < format.Length; i++)
            {
                if (format[i] != '%' || i + 1 >= format.Length)
                {
                    sb.Append(format[i]);
                    continue;
                }
                var c = format[++i];
                sb.Append(c switch
                {
                    'Y' => now.ToString("yyyy", CultureInfo.InvariantCulture),
                    'm' => now.ToString("MM", CultureInfo.InvariantCulture),
                    'd' => now.ToString("dd", CultureInfo.InvariantCulture),
                    'H' => now.ToString("HH", CultureInfo.InvariantCulture),
                    'M' => now.ToString("mm", CultureInfo.InvariantCulture),
                    'S' => now.ToString("ss", CultureInfo.InvariantCulture),
                    'b' => now.ToString("MMM", CultureInfo.InvariantCulture),
                    'B' => now.ToString("MMMM", CultureInfo.InvariantCulture),
                    'a' => now.ToString("ddd", CultureInfo.InvariantCulture),
                    'A' => now.ToString("dddd", CultureInfo.InvariantCulture),
                    'y' => now.ToString("yy", CultureInfo.InvariantCulture),
                    'j' => now.DayOfYear.ToString("000", CultureInfo.InvariantCulture),
                    '%' => "%",
                    _ => "%" + c,
                });
            }
            return sb.ToString();
        }
    }
}
