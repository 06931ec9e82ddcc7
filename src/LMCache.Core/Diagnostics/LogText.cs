using System.Globalization;
using System.Text;

namespace LMCache.Core.Diagnostics;

/// <summary>
/// A string that came from outside (a cache key, a client's model name, a peer's error text) on its way into a log
/// line. Its <see cref="ToString"/> escapes every character that could forge or corrupt a log line or a terminal:
/// C0 controls (NUL, ESC, CR, LF, TAB, ...), DEL, C1 controls (U+0080–U+009F), the Unicode line and paragraph
/// separators and the bidirectional overrides; the backslash is doubled so the escaping is unambiguous.
/// </summary>
/// <remarks>
/// Use it as the parameter type of a <c>[LoggerMessage]</c> method instead of <see cref="string"/>: call sites pass
/// strings unchanged (implicit conversion), and the escaping runs only when the message is actually formatted, so a
/// disabled level costs nothing. Escapes are <c>\n</c>, <c>\r</c>, <c>\t</c>, <c>\\</c> and <c>\uXXXX</c> (as in
/// JSON), e.g. a key holding ESC logs as <c>key\u001B[31m</c>.
/// </remarks>
public readonly struct LogText : IEquatable<LogText>
{
    private readonly string? _value;

    /// <summary>Wraps <paramref name="value"/> (null logs as an empty string).</summary>
    public LogText(string? value) => _value = value;

    /// <summary>The raw, unescaped value.</summary>
    public string Value => _value ?? "";

    /// <summary>Wraps a string for logging.</summary>
    public static implicit operator LogText(string? value) => new(value);

    /// <summary>Wraps a string for logging (the named form of the implicit conversion).</summary>
    public static LogText FromString(string? value) => new(value);

    /// <summary>The value with control and line-breaking characters escaped (see <see cref="LogText"/>).</summary>
    public override string ToString() => Escape(_value);

    /// <summary>
    /// <paramref name="value"/> with control and line-breaking characters escaped; the same instance when nothing needs
    /// escaping (no allocation on the common path).
    /// </summary>
    public static string Escape(string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            return "";
        }
        var first = IndexOfUnsafe(value);
        if (first < 0)
        {
            return value;
        }
        var builder = new StringBuilder(value.Length + 16);
        builder.Append(value, 0, first);
        for (var i = first; i < value.Length; i++)
        {
            var c = value[i];
            if (!NeedsEscape(c))
            {
                builder.Append(c);
                continue;
            }
            switch (c)
            {
                case '\n':
                    builder.Append("\\n");
                    break;
                case '\r':
                    builder.Append("\\r");
                    break;
                case '\t':
                    builder.Append("\\t");
                    break;
                case '\\':
                    builder.Append("\\\\");
                    break;
                default:
                    builder.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
                    break;
            }
        }
        return builder.ToString();
    }

    /// <inheritdoc />
    public bool Equals(LogText other) => string.Equals(_value, other._value, StringComparison.Ordinal);

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is LogText other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => _value is null ? 0 : StringComparer.Ordinal.GetHashCode(_value);

    /// <summary>Ordinal equality of the raw values.</summary>
    public static bool operator ==(LogText left, LogText right) => left.Equals(right);

    /// <summary>Ordinal inequality of the raw values.</summary>
    public static bool operator !=(LogText left, LogText right) => !left.Equals(right);

    private static int IndexOfUnsafe(string value)
    {
        for (var i = 0; i < value.Length; i++)
        {
            if (NeedsEscape(value[i]))
            {
                return i;
            }
        }
        return -1;
    }

    private static bool NeedsEscape(char c) =>
        c < 0x20                        // C0 controls: NUL, ESC, CR, LF, TAB, ...
        || c is >= '\u007F' and <= '\u009F'   // DEL and the C1 controls (CSI U+009B starts terminal sequences too)
        || c is '\\' or '\u2028' or '\u2029'  // our escape character; Unicode line and paragraph separators
        || c is >= '\u202A' and <= '\u202E'   // bidirectional embeddings and overrides
        || c is >= '\u2066' and <= '\u2069';  // bidirectional isolates
}
