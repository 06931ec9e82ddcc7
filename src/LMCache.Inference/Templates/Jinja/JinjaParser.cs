using LMCache.Core.Diagnostics;

namespace LMCache.Inference.Templates.Jinja;

/// <summary>Parses template pieces into a node tree (recursive descent, Jinja's operator precedence).</summary>
internal sealed class JinjaParser
{
    private readonly List<Piece> _pieces;
    private int _index;

    private JinjaParser(List<Piece> pieces)
    {
        _pieces = pieces;
    }

    public static List<Node> Parse(string template)
    {
        var parser = new JinjaParser(JinjaLexer.Split(template));
        var body = parser.ParseBody(out var end, []);
        if (end is not null)
        {
            throw new JinjaException($"unexpected '{{% {end} %}}'.");
        }
        return body;
    }

    /// <summary>Parses nodes until a statement whose keyword is in <paramref name="terminators"/> (returned in <paramref name="terminator"/>).</summary>
    private List<Node> ParseBody(out string? terminator, string[] terminators)
    {
        var nodes = new List<Node>();
        while (_index < _pieces.Count)
        {
            var piece = _pieces[_index++];
            switch (piece.Kind)
            {
                case PieceKind.Text:
                    nodes.Add(new TextNode(piece.Source));
                    break;
                case PieceKind.Output:
                    var stream = new TokenStream(JinjaLexer.Tokenize(piece.Source), piece.Line);
                    nodes.Add(new OutputNode(stream.ParseExpression()));
                    stream.ExpectEnd();
                    break;
                case PieceKind.Statement:
                    var tokens = new TokenStream(JinjaLexer.Tokenize(piece.Source), piece.Line);
                    var keyword = tokens.Peek.Text;
                    if (terminators.Contains(keyword))
                    {
                        terminator = piece.Source;
                        return nodes;
                    }
                    tokens.Next();
                    nodes.Add(ParseStatement(keyword, tokens, piece));
                    break;
            }
        }
        terminator = null;
        if (terminators.Length > 0)
        {
            throw new JinjaException($"missing '{{% {terminators[^1]} %}}'.");
        }
        return nodes;
    }

    private Node ParseStatement(string keyword, TokenStream tokens, Piece piece)
    {
        switch (keyword)
        {
            case "if":
                {
                    var branches = new List<(Expr, List<Node>)>();
                    var condition = tokens.ParseExpression();
                    tokens.ExpectEnd();
                    List<Node>? elseBody = null;
                    while (true)
                    {
                        var body = ParseBody(out var end, ["elif", "else", "endif"]);
                        branches.Add((condition, body));
                        var endTokens = new TokenStream(JinjaLexer.Tokenize(end!), piece.Line);
                        var word = endTokens.Next().Text;
                        if (word == "elif")
                        {
                            condition = endTokens.ParseExpression();
                            endTokens.ExpectEnd();
                            continue;
                        }
                        if (word == "else")
                        {
                            elseBody = ParseBody(out _, ["endif"]);
                        }
                        break;
                    }
                    return new IfNode(branches, elseBody);
                }
            case "for":
                {
                    var targets = new List<string> { tokens.ExpectName() };
                    while (tokens.TryOperator(","))
                    {
                        targets.Add(tokens.ExpectName());
                    }
                    tokens.ExpectKeyword("in");
                    var iterable = tokens.ParseExpression(allowConditional: false);
                    Expr? filter = null;
                    if (tokens.TryKeyword("if"))
                    {
                        filter = tokens.ParseExpression(allowConditional: false);
                    }
                    tokens.TryKeyword("recursive");
                    tokens.ExpectEnd();
                    var body = ParseBody(out var end, ["else", "endfor"]);
                    List<Node>? elseBody = null;
                    if (end!.StartsWith("else", StringComparison.Ordinal))
                    {
                        elseBody = ParseBody(out _, ["endfor"]);
                    }
                    return new ForNode([.. targets], iterable, filter, body, elseBody);
                }
            case "set":
                {
                    var target = tokens.ParsePrimaryTarget();
                    if (tokens.TryOperator("="))
                    {
                        var value = tokens.ParseExpression();
                        tokens.ExpectEnd();
                        return new SetNode(target, value);
                    }
                    tokens.ExpectEnd();
                    var name = target is NameExpr n ? n.Name : throw new JinjaException($"line {piece.Line}: block set needs a plain name.");
                    return new SetBlockNode(name, ParseBody(out _, ["endset"]));
                }
            case "macro":
                {
                    var name = tokens.ExpectName();
                    var parameters = new List<(string, Expr?)>();
                    tokens.ExpectOperator("(");
                    while (!tokens.TryOperator(")"))
                    {
                        var parameter = tokens.ExpectName();
                        Expr? defaultValue = tokens.TryOperator("=") ? tokens.ParseExpression() : null;
                        parameters.Add((parameter, defaultValue));
                        tokens.TryOperator(",");
                    }
                    tokens.ExpectEnd();
                    return new MacroNode(name, parameters, ParseBody(out _, ["endmacro"]));
                }
            case "call":
                {
                    var call = tokens.ParseExpression();
                    tokens.ExpectEnd();
                    return new CallBlockNode(call, ParseBody(out _, ["endcall"]));
                }
            case "filter":
                {
                    var name = tokens.ExpectName();
                    var args = new List<Expr>();
                    if (tokens.TryOperator("("))
                    {
                        while (!tokens.TryOperator(")"))
                        {
                            args.Add(tokens.ParseExpression());
                            tokens.TryOperator(",");
                        }
                    }
                    tokens.ExpectEnd();
                    return new FilterBlockNode(name, args, ParseBody(out _, ["endfilter"]));
                }
            case "generation":
                tokens.ExpectEnd();
                return new BlockNode(ParseBody(out _, ["endgeneration"]));
            case "break":
                tokens.ExpectEnd();
                return new BreakNode();
            case "continue":
                tokens.ExpectEnd();
                return new ContinueNode();
            default:
                throw new JinjaException($"line {piece.Line}: unsupported statement '{{% {keyword} %}}'.");
        }
    }

    /// <summary>Expression parser over one tag's tokens.</summary>
    private sealed class TokenStream(List<Token> tokens, int line)
    {
        private int _position;

        public Token Peek => tokens[_position];

        public Token Next() => tokens[_position++];

        public void ExpectEnd()
        {
            if (Peek.Kind != TokenKind.End)
            {
                throw Error($"unexpected '{Peek.Text}'");
            }
        }

        public string ExpectName()
        {
            var t = Next();
            return t.Kind == TokenKind.Name ? t.Text : throw Error($"expected a name, got '{t.Text}'");
        }

        public void ExpectKeyword(string keyword)
        {
            if (!TryKeyword(keyword))
            {
                throw Error($"expected '{keyword}', got '{Peek.Text}'");
            }
        }

        public bool TryKeyword(string keyword)
        {
            if (Peek.Kind == TokenKind.Name && Peek.Text == keyword)
            {
                _position++;
                return true;
            }
            return false;
        }

        public void ExpectOperator(string op)
        {
            if (!TryOperator(op))
            {
                throw Error($"expected '{op}', got '{Peek.Text}'");
            }
        }

        public bool TryOperator(string op)
        {
            if (Peek.Kind == TokenKind.Operator && Peek.Text == op)
            {
                _position++;
                return true;
            }
            return false;
        }

        private bool IsOperator(string op) => Peek.Kind == TokenKind.Operator && Peek.Text == op;

        private JinjaException Error(string message) => new($"line {line}: {message}.");

        /// <summary>A set target: a name or name.attr (namespace assignment).</summary>
        public Expr ParsePrimaryTarget()
        {
            Expr target = new NameExpr(ExpectName());
            while (TryOperator("."))
            {
                target = new AttrExpr(target, ExpectName());
            }
            return target;
        }

        public Expr ParseExpression(bool allowConditional = true)
        {
            var expr = ParseOr();
            if (allowConditional)
            {
                while (TryKeyword("if"))
                {
                    var condition = ParseOr();
                    Expr? elseExpr = TryKeyword("else") ? ParseExpression() : null;
                    expr = new ConditionalExpr(condition, expr, elseExpr);
                }
            }
            return expr;
        }

        private Expr ParseOr()
        {
            var left = ParseAnd();
            while (TryKeyword("or"))
            {
                left = new BinaryExpr("or", left, ParseAnd());
            }
            return left;
        }

        private Expr ParseAnd()
        {
            var left = ParseNot();
            while (TryKeyword("and"))
            {
                left = new BinaryExpr("and", left, ParseNot());
            }
            return left;
        }

        private Expr ParseNot()
        {
            if (TryKeyword("not"))
            {
                return new UnaryExpr("not", ParseNot());
            }
            return ParseCompare();
        }

        private Expr ParseCompare()
        {
            var left = ParseMath1();
            var rest = new List<(string, Expr)>();
            while (true)
            {
                if (Peek.Kind == TokenKind.Operator && Peek.Text is "==" or "!=" or "<" or ">" or "<=" or ">=")
                {
                    var op = Next().Text;
                    rest.Add((op, ParseMath1()));
                }
                else if (TryKeyword("in"))
                {
                    rest.Add(("in", ParseMath1()));
                }
                else if (Peek.Kind == TokenKind.Name && Peek.Text == "not" && tokens[_position + 1].Kind == TokenKind.Name && tokens[_position + 1].Text == "in")
                {
                    _position += 2;
                    rest.Add(("notin", ParseMath1()));
                }
                else
                {
                    break;
                }
            }
            return rest.Count == 0 ? left : new CompareExpr(left, rest);
        }

        private Expr ParseMath1()
        {
            var left = ParseConcat();
            while (IsOperator("+") || IsOperator("-"))
            {
                var op = Next().Text;
                left = new BinaryExpr(op, left, ParseConcat());
            }
            return left;
        }

        private Expr ParseConcat()
        {
            var left = ParseMath2();
            while (TryOperator("~"))
            {
                left = new BinaryExpr("~", left, ParseMath2());
            }
            return left;
        }

        private Expr ParseMath2()
        {
            var left = ParsePow();
            while (IsOperator("*") || IsOperator("/") || IsOperator("//") || IsOperator("%"))
            {
                var op = Next().Text;
                left = new BinaryExpr(op, left, ParsePow());
            }
            return left;
        }

        private Expr ParsePow()
        {
            var left = ParseUnary();
            while (TryOperator("**"))
            {
                left = new BinaryExpr("**", left, ParseUnary());
            }
            return left;
        }

        private Expr ParseUnary()
        {
            if (TryOperator("-"))
            {
                return ParseFilters(new UnaryExpr("-", ParseUnary()));
            }
            if (TryOperator("+"))
            {
                return ParseFilters(ParseUnary());
            }
            return ParseFilters(ParsePostfix(ParsePrimary()));
        }

        private Expr ParseFilters(Expr expr)
        {
            while (true)
            {
                if (TryOperator("|"))
                {
                    var name = ExpectName();
                    while (TryOperator("."))
                    {
                        name += "." + ExpectName();
                    }
                    var (args, kwargs) = IsOperator("(") ? ParseCallArguments() : ([], []);
                    expr = new FilterExpr(expr, name, args, kwargs);
                }
                else if (TryKeyword("is"))
                {
                    var negated = TryKeyword("not");
                    var name = ExpectName();
                    var args = new List<Expr>();
                    if (IsOperator("("))
                    {
                        args = ParseCallArguments().Args;
                    }
                    else if (Peek.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float)
                    {
                        args.Add(ParsePrimary());
                    }
                    expr = new TestExpr(expr, name, args, negated);
                }
                else
                {
                    return expr;
                }
            }
        }

        private (List<Expr> Args, List<(string, Expr)> Kwargs) ParseCallArguments()
        {
            ExpectOperator("(");
            var args = new List<Expr>();
            var kwargs = new List<(string, Expr)>();
            while (!TryOperator(")"))
            {
                if (Peek.Kind == TokenKind.Name && tokens[_position + 1].Kind == TokenKind.Operator && tokens[_position + 1].Text == "=")
                {
                    var name = Next().Text;
                    _position++;
                    kwargs.Add((name, ParseExpression()));
                }
                else
                {
                    args.Add(ParseExpression());
                }
                if (!TryOperator(","))
                {
                    ExpectOperator(")");
                    break;
                }
            }
            return (args, kwargs);
        }

        private Expr ParsePostfix(Expr expr)
        {
            while (true)
            {
                if (TryOperator("."))
                {
                    var t = Next();
                    expr = t.Kind switch
                    {
                        TokenKind.Name => new AttrExpr(expr, t.Text),
                        TokenKind.Integer => new ItemExpr(expr, new LiteralExpr(t.Value)),
                        _ => throw Error($"expected an attribute name, got '{t.Text}'"),
                    };
                }
                else if (IsOperator("["))
                {
                    Next();
                    Expr? start = null, stop = null, step = null;
                    var isSlice = false;
                    if (!IsOperator(":"))
                    {
                        start = ParseExpression();
                    }
                    if (TryOperator(":"))
                    {
                        isSlice = true;
                        if (!IsOperator(":") && !IsOperator("]"))
                        {
                            stop = ParseExpression();
                        }
                        if (TryOperator(":") && !IsOperator("]"))
                        {
                            step = ParseExpression();
                        }
                    }
                    ExpectOperator("]");
                    expr = isSlice ? new SliceExpr(expr, start, stop, step) : new ItemExpr(expr, start ?? throw Error("empty subscript"));
                }
                else if (IsOperator("("))
                {
                    var (args, kwargs) = ParseCallArguments();
                    expr = new CallExpr(expr, args, kwargs);
                }
                else
                {
                    return expr;
                }
            }
        }

        private Expr ParsePrimary()
        {
            var t = Next();
            switch (t.Kind)
            {
                case TokenKind.String:
                    // Adjacent string literals concatenate, as in Python.
                    var text = (string)t.Value!;
                    while (Peek.Kind == TokenKind.String)
                    {
                        text += (string)Next().Value!;
                    }
                    return new LiteralExpr(text);
                case TokenKind.Integer:
                case TokenKind.Float:
                    return new LiteralExpr(t.Value);
                case TokenKind.Name:
                    return t.Text switch
                    {
                        "true" or "True" => new LiteralExpr(true),
                        "false" or "False" => new LiteralExpr(false),
                        "none" or "None" => new LiteralExpr(null),
                        _ => new NameExpr(t.Text),
                    };
                case TokenKind.Operator when t.Text == "(":
                    {
                        if (TryOperator(")"))
                        {
                            return new ListExpr([]);
                        }
                        var first = ParseExpression();
                        if (IsOperator(","))
                        {
                            var items = new List<Expr> { first };
                            while (TryOperator(","))
                            {
                                if (IsOperator(")"))
                                {
                                    break;
                                }
                                items.Add(ParseExpression());
                            }
                            ExpectOperator(")");
                            return new ListExpr(items);
                        }
                        ExpectOperator(")");
                        return first;
                    }
                case TokenKind.Operator when t.Text == "[":
                    {
                        var items = new List<Expr>();
                        while (!TryOperator("]"))
                        {
                            items.Add(ParseExpression());
                            if (!TryOperator(","))
                            {
                                ExpectOperator("]");
                                break;
                            }
                        }
                        return new ListExpr(items);
                    }
                case TokenKind.Operator when t.Text == "{":
                    {
                        var items = new List<(Expr, Expr)>();
                        while (!TryOperator("}"))
                        {
                            var key = ParseExpression();
                            ExpectOperator(":");
                            items.Add((key, ParseExpression()));
                            if (!TryOperator(","))
                            {
                                ExpectOperator("}");
                                break;
                            }
                        }
                        return new DictExpr(items);
                    }
                default:
                    throw Error($"unexpected '{t.Text}'");
            }
        }
    }
}

/// <summary>A template syntax or rendering error (also what <c>raise_exception</c> throws).</summary>
public sealed class JinjaException : LMCacheException
{
    /// <summary>Creates the exception.</summary>
    public JinjaException(string message) : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public JinjaException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public JinjaException(string message, Exception innerException) : base(message, innerException)
    {
    }
}
