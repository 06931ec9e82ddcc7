using System.Text;

namespace LMCache.Inference.Generation;

/// <summary>
/// Tracks generated text against stop sequences and releases only text that cannot become part of a stop sequence,
/// so a streamed response never shows a stop string (OpenAI semantics: the stop sequence is not included).
/// </summary>
public sealed class StopMatcher
{
    private readonly string[] _stops;
    private readonly StringBuilder _text = new();
    private int _released;

    /// <summary>Creates a matcher; empty strings are ignored.</summary>
    public StopMatcher(IEnumerable<string>? stops)
    {
        _stops = stops?.Where(s => !string.IsNullOrEmpty(s)).Distinct(StringComparer.Ordinal).ToArray() ?? [];
    }

    /// <summary>All text accepted so far, cut before the stop sequence once one matched.</summary>
    public string Text => _text.ToString();

    /// <summary>True once a stop sequence matched.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Appends decoded text; returns the text that may be released now (possibly empty).</summary>
    public string Append(string delta)
    {
        if (Stopped)
        {
            return "";
        }
        var searchFrom = Math.Max(0, _text.Length - _stops.Select(s => s.Length).DefaultIfEmpty(0).Max());
        _text.Append(delta);
        if (_stops.Length == 0)
        {
            return Release(_text.Length);
        }
        var text = _text.ToString();
        var firstStop = -1;
        foreach (var stop in _stops)
        {
            var at = text.IndexOf(stop, searchFrom, StringComparison.Ordinal);
            if (at >= 0 && (firstStop < 0 || at < firstStop))
            {
                firstStop = at;
            }
        }
        if (firstStop >= 0)
        {
            Stopped = true;
            _text.Length = firstStop;
            return Release(Math.Max(_released, firstStop));
        }
        // Hold back the longest suffix that is a proper prefix of some stop sequence.
        var hold = 0;
        foreach (var stop in _stops)
        {
            for (var k = Math.Min(stop.Length - 1, text.Length); k > hold; k--)
            {
                if (string.CompareOrdinal(text, text.Length - k, stop, 0, k) == 0)
                {
                    hold = k;
                    break;
                }
            }
        }
        return Release(text.Length - hold);
    }

    /// <summary>Releases whatever is still held (generation ended without a stop match).</summary>
    public string Flush() => Release(_text.Length);

    private string Release(int upTo)
    {
        if (upTo <= _released)
        {
            return "";
        }
        var s = _text.ToString(_released, upTo - _released);
        _released = upTo;
        return s;
    }
}
