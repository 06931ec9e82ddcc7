using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace LMCache.Bench;

/// <summary>Collects a benchmark's results and prints them as one JSON object (<c>--json</c>) or as aligned text.</summary>
internal sealed class BenchOutput
{
    private readonly JsonObject _values = [];
    private readonly List<(string Name, string Text)> _lines = [];

    /// <summary>Records a number (rounded to 4 significant decimals for text, full precision in JSON).</summary>
    public void Add(string name, double value, string? unit = null)
    {
        _values[name] = Math.Round(value, 6);
        _lines.Add((name, value.ToString(value >= 100 ? "0" : "0.####", CultureInfo.InvariantCulture) + (unit is null ? "" : " " + unit)));
    }

    /// <summary>Records an integer.</summary>
    public void Add(string name, long value, string? unit = null)
    {
        _values[name] = value;
        _lines.Add((name, value.ToString(CultureInfo.InvariantCulture) + (unit is null ? "" : " " + unit)));
    }

    /// <summary>Records a string.</summary>
    public void Add(string name, string value)
    {
        _values[name] = value;
        _lines.Add((name, value));
    }

    /// <summary>Prints the results.</summary>
    public void Print(bool json)
    {
        if (json)
        {
            Console.WriteLine(_values.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return;
        }
        var width = _lines.Max(l => l.Name.Length);
        foreach (var (name, text) in _lines)
        {
            Console.WriteLine($"{name.PadRight(width)}  {text}");
        }
    }

    /// <summary>Prints a progress line to stderr (never mixed into the JSON on stdout).</summary>
    public static void Progress(string text) => Console.Error.WriteLine($"bench: {text}");
}
