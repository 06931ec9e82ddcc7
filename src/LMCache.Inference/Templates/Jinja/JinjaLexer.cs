using System.Globalization;
using System.Text;

namespace LMCache.Inference.Templates.Jinja;

/// <summary>Kinds of template-level pieces.</summary>
internal enum PieceKind
{
    Text,
    Output,
    Statement,
}

/// <summary>A piece of the template: literal text, an output tag's source or a statement tag's source.</summary>
internal readonly record struct Piece(PieceKind Kind, string Source, int Line);

/// <summary>Expression token kinds.</summary>
internal enum TokenKind
{
    Name,
    String,
    Integer,
    Float,
    Operator,
    End,
}

/// <summary>An expression token.</summary>
internal readonly record struct Token(TokenKind Kind, string Text, object? Value = null);

/// <summary>
/// Splits a template into text and tags, applying <c>-</c>/<c>+</c> whitespace control and the
/// <c>trim_blocks</c>/<c>lstrip_blocks</c> settings Hugging Face renders chat templates with (both on).
/// </summary>
internal static class JinjaLexer
{
    public static List<Piece> Split(string template, bool trimBlocks = true, bool lstripBlocks = true)
    {
        var raw = new List<(PieceKind Kind, string Text, bool StripBefore, bool StripAfter, bool KeepLeft, bool KeepRight, bool IsBlockOrComment, int Line)>();
        var position = 0;
        var line = 1;
        while (position < template.Length)
        {
            var open = FindOpen(template, position);
            if (open < 0)
            {
                raw.Add((PieceKind.Text, template[position..], false, false, false, false, false, line));
                break;
            }
            if (open > position)
            {
                raw.Add((PieceKind.Text, template[position..open], false, false, false, false, false, line));
                line += Count(template, position, open);
            }
            var kindChar = template[open + 1];
            var contentStart = open + 2;
            var stripBefore = false;
            var keepLeft = false;
            if (contentStart < template.Length && template[contentStart] == '-')
            {
                stripBefore = true;
                contentStart++;
            }
            else if (contentStart < template.Length && template[contentStart] == '+')
            {
                keepLeft = true;
                contentStart++;
            }
            var closeSeq = kindChar switch { '{' => "}}", '%' => "%}", _ => "#}" };
            var close = kindChar == '#' ? template.IndexOf(closeSeq, contentStart, StringComparison.Ordinal) : FindClose(template, contentStart, closeSeq);
            if (close < 0)
            {
                throw new JinjaException($"line {line}: unclosed tag '{template.Substring(open, Math.Min(20, template.Length - open))}'.");
            }
            var contentEnd = close;
            var stripAfter = false;
            var keepRight = false;
            if (contentEnd > contentStart && template[contentEnd - 1] == '-')
            {
                stripAfter = true;
                contentEnd--;
            }
            else if (contentEnd > contentStart && template[contentEnd - 1] == '+')
            {
                keepRight = true;
                contentEnd--;
            }
            var content = template[contentStart..contentEnd];
            var kind = kindChar switch { '{' => PieceKind.Output, '%' => PieceKind.Statement, _ => PieceKind.Text };
            if (kindChar == '#')
            {
                raw.Add((PieceKind.Text, "\0comment", stripBefore, stripAfter, keepLeft, keepRight, true, line));
            }
            else
            {
                raw.Add((kind, content.Trim(), stripBefore, stripAfter, keepLeft, keepRight, kind == PieceKind.Statement, line));
            }
            line += Count(template, open, close + 2);
            position = close + 2;
        }

        // Apply whitespace control to the text around each tag.
        var texts = raw.Select(r => r.Kind == PieceKind.Text && r.Text != "\0comment" ? r.Text : null).ToArray();
        for (var i = 0; i < raw.Count; i++)
        {
            var r = raw[i];
            var isTag = r.Kind != PieceKind.Text || r.Text == "\0comment";
            if (!isTag)
            {
                continue;
            }
            if (i > 0 && texts[i - 1] is { } before)
            {
                if (r.StripBefore)
                {
                    texts[i - 1] = before.TrimEnd();
                }
                else if (lstripBlocks && r.IsBlockOrComment && !r.KeepLeft)
                {
                    // Only when the tag is the first non-blank thing on its line in the source.
                    var original = raw[i - 1].Text;
                    var j = original.Length;
                    while (j > 0 && (original[j - 1] == ' ' || original[j - 1] == '\t'))
                    {
                        j--;
                    }
                    var atLineStart = j > 0 ? original[j - 1] == '\n' : i - 1 == 0;
                    if (atLineStart)
                    {
                        texts[i - 1] = before.TrimEnd(' ', '\t');
                    }
                }
            }
            if (i + 1 < raw.Count && texts[i + 1] is { } after)
            {
                if (r.StripAfter)
                {
                    texts[i + 1] = after.TrimStart();
                }
                else if (trimBlocks && r.IsBlockOrComment && !r.KeepRight)
                {
                    if (after.StartsWith("\r\n", StringComparison.Ordinal))
                    {
                        texts[i + 1] = after[2..];
                    }
                    else if (after.StartsWith('\n'))
                    {
                        texts[i + 1] = after[1..];
                    }
                }
            }
        }

        var pieces = new List<Piece>(raw.Count);
        for (var i = 0; i < raw.Count; i++)
        {
            if (texts[i] is { } text)
            {
                if (text.Length > 0)
                {
                    pieces.Add(new Piece(PieceKind.Text, text, raw[i].Line));
                }
            }
            else if (raw[i].Text != "\0comment")
            {
                pieces.Add(new Piece(raw[i].Kind, raw[i].Text, raw[i].Line));
            }
        }
        return pieces;
    }

    private static int Count(string s, int from, int to)
    {
        var n = 0;
        for (var i = from; i < to && i < s.Length; i++)
        {
            if (s[i] == '\n')
            {
                n++;
            }
        }
        return n;
    }

    private static int FindOpen(string s, int from)
    {
        for (var i = from; i < s.Length - 1; i++)
        {
            if (s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#'))
            {
                return i;
            }
        }
        return -1;
    }

    private static int FindClose(string s, int from, string close)
    {
        char quote = '\0';
        for (var i = from; i < s.Length - 1; i++)
        {
            var c = s[i];
            if (quote != '\0')
            {
                if (c == '\\')
                {
                    i++;
                }
                else if (c == quote)
                {
                    quote = '\0';
                }
                continue;
            }
            if (c == '\'' || c == '"')
            {
                quote = c;
                continue;
            }
            if (c == close[0] && s[i + 1] == close[1])
            {
                return i;
            }
        }
        return -1;
    }

    private static readonly string[] s_operators =
    [
        "**", "//", "==", "!=", "<=", ">=",
        "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "=",
    ];

    /// <summary>Tokenizes the source of a tag.</summary>
    public static List<Token> Tokenize(string source)
    {
        var tokens = new List<Token>();
        var i = 0;
        while (i < source.Length)
        {
            var c = source[i];
            if (char.IsWhiteSpace(c))
            {
                i++;
                continue;
            }
            if (char.IsLetter(c) || c == '_')
            {
                var start = i;
                while (i < source.Length && (char.IsLetterOrDigit(source[i]) || source[i] == '_'))
                {
                    i++;
                }
                tokens.Add(new Token(TokenKind.Name, source[start..i]));
                continue;
            }
            if (char.IsDigit(c))
            {
                var start = i;
                var isFloat = false;
                while (i < source.Length && (char.IsDigit(source[i]) || source[i] == '_' || (source[i] == '.' && !isFloat && i + 1 < source.Length && char.IsDigit(source[i + 1]))))
                {
                    isFloat |= source[i] == '.';
                    i++;
                }
                if (i < source.Length && (source[i] == 'e' || source[i] == 'E'))
                {
                    isFloat = true;
                    i++;
                    if (i < source.Length && (source[i] == '+' || source[i] == '-'))
                    {
                        i++;
                    }
                    while (i < source.Length && char.IsDigit(source[i]))
                    {
                        i++;
                    }
                }
                var text = source[start..i].Replace("_", "", StringComparison.Ordinal);
                tokens.Add(isFloat
                    ? new Token(TokenKind.Float, text, double.Parse(text, CultureInfo.InvariantCulture))
                    : new Token(TokenKind.Integer, text, long.Parse(text, CultureInfo.InvariantCulture)));
                continue;
            }
            if (c == '\'' || c == '"')
            {
                var sb = new StringBuilder();
                i++;
                while (true)
                {
                    if (i >= source.Length)
                    {
                        throw new JinjaException($"unterminated string in '{source}'.");
                    }
                    var ch = source[i];
                    if (ch == c)
                    {
                        i++;
                        break;
                    }
                    if (ch == '\\' && i + 1 < source.Length)
                    {
                        var e = source[i + 1];
                        i += 2;
                        switch (e)
                        {
                            case 'n': sb.Append('\n'); break;
                            case 't': sb.Append('\t'); break;
                            case 'r': sb.Append('\r'); break;
                            case '\\': sb.Append('\\'); break;
                            case '\'': sb.Append('\''); break;
                            case '"': sb.Append('"'); break;
                            case 'u' when i + 4 <= source.Length:
                                sb.Append((char)int.Parse(source.AsSpan(i, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                                i += 4;
                                break;
                            default: sb.Append('\\').Append(e); break;
                        }
                        continue;
                    }
                    sb.Append(ch);
                    i++;
                }
                tokens.Add(new Token(TokenKind.String, sb.ToString(), sb.ToString()));
                continue;
            }
            var matched = false;
            foreach (var op in s_operators)
            {
                if (string.CompareOrdinal(source, i, op, 0, op.Length) == 0)
                {
                    tokens.Add(new Token(TokenKind.Operator, op));
                    i += op.Length;
                    matched = true;
                    break;
                }
            }
            if (!matched)
            {
                throw new JinjaException($"unexpected character '{c}' in '{source}'.");
            }
        }
        tokens.Add(new Token(TokenKind.End, ""));
        return tokens;
    }
}
