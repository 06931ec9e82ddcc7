using System.Globalization;

namespace LMCache.Serde.CacheGen;

/// <summary>
/// Quantization bin counts per layer for keys and values. A layer with <c>B</c> bins quantizes each value to one of
/// <c>2·(B/2 − 1) + 1</c> levels (31 for 32 bins, 15 for 16 bins) relative to the token's largest magnitude.
/// </summary>
public sealed class CacheGenBins
{
    /// <summary>Smallest bin count accepted (2 bins would leave a single level and divide by zero on decode).</summary>
    public const int MinBins = 4;

    /// <summary>Largest bin count accepted (the coder's symbol search handles up to 64 symbols).</summary>
    public const int MaxBins = 64;

    private readonly byte[] _key;
    private readonly byte[] _value;

    private CacheGenBins(byte[] key, byte[] value)
    {
        _key = key;
        _value = value;
    }

    /// <summary>Number of layers.</summary>
    public int Layers => _key.Length;

    /// <summary>Key bins of <paramref name="layer"/>.</summary>
    public int KeyBins(int layer) => _key[layer];

    /// <summary>Value bins of <paramref name="layer"/>.</summary>
    public int ValueBins(int layer) => _value[layer];

    /// <summary>Bins of symbol row <paramref name="row"/> (rows 0..L−1 are the key layers, L..2L−1 the value layers).</summary>
    public int RowBins(int row) => row < _key.Length ? _key[row] : _value[row - _key.Length];

    /// <summary>The largest bin count over keys and values; the coder alphabet is <c>0 .. MaxBinCount − 1</c>.</summary>
    public int MaxBinCount => Math.Max(_key.Max(), _value.Max());

    /// <summary>
    /// The original's defaults (<c>CacheGenConfig.from_model_name</c> fallback): with 10 or more layers, keys use 32
    /// bins for layers 0–9 and 16 after, values 32 for layers 0–1 and 16 after; with fewer than 10 layers, 32 bins
    /// everywhere.
    /// </summary>
    public static CacheGenBins Default(int layers)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        var key = new byte[layers];
        var value = new byte[layers];
        for (var l = 0; l < layers; l++)
        {
            key[l] = (byte)(layers < 10 || l < 10 ? 32 : 16);
            value[l] = (byte)(layers < 10 || l < 2 ? 32 : 16);
        }
        return new CacheGenBins(key, value);
    }

    /// <summary>Creates bins from explicit per-layer counts (each in <see cref="MinBins"/>..<see cref="MaxBins"/>).</summary>
    public static CacheGenBins Create(ReadOnlySpan<int> keyBins, ReadOnlySpan<int> valueBins)
    {
        if (keyBins.Length == 0 || keyBins.Length != valueBins.Length)
        {
            throw new ArgumentException("Key and value bins need the same, non-zero number of layers.");
        }
        var key = new byte[keyBins.Length];
        var value = new byte[valueBins.Length];
        for (var l = 0; l < key.Length; l++)
        {
            key[l] = CheckBins(keyBins[l]);
            value[l] = CheckBins(valueBins[l]);
        }
        return new CacheGenBins(key, value);
    }

    /// <summary>Reads bins stored in a container: <paramref name="packed"/> holds L key counts then L value counts.</summary>
    internal static bool TryFromPacked(ReadOnlySpan<byte> packed, out CacheGenBins? bins)
    {
        bins = null;
        if (packed.Length == 0 || packed.Length % 2 != 0)
        {
            return false;
        }
        foreach (var b in packed)
        {
            if (b is < MinBins or > MaxBins)
            {
                return false;
            }
        }
        var layers = packed.Length / 2;
        bins = new CacheGenBins(packed[..layers].ToArray(), packed[layers..].ToArray());
        return true;
    }

    /// <summary>Writes L key counts then L value counts.</summary>
    internal void WritePacked(Span<byte> destination)
    {
        _key.CopyTo(destination);
        _value.CopyTo(destination[_key.Length..]);
    }

    /// <summary>True when both tables hold the same counts.</summary>
    public bool SameAs(CacheGenBins other) => _key.AsSpan().SequenceEqual(other._key) && _value.AsSpan().SequenceEqual(other._value);

    /// <summary>
    /// Expands a bin specification to <paramref name="layers"/> counts. The specification is a comma-separated list of
    /// items, each <c>BINS</c> (one layer) or <c>COUNT*BINS</c> (COUNT layers); the last item's bins repeat for the
    /// remaining layers and items beyond the model's layers are ignored. Example: <c>10*32,16</c> is the original's key
    /// table for any model with 10 or more layers.
    /// </summary>
    /// <exception cref="FormatException">The specification is malformed or a count is outside 4..64.</exception>
    public static int[] ExpandSpec(string spec, int layers)
    {
        var result = new int[layers];
        var items = spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (items.Length == 0)
        {
            throw new FormatException($"'{spec}' names no bin counts; expected e.g. '10*32,16'.");
        }
        var layer = 0;
        var last = 0;
        foreach (var item in items)
        {
            var star = item.IndexOf('*', StringComparison.Ordinal);
            int count;
            int bins;
            if (star < 0)
            {
                count = 1;
                bins = ParseInt(item, spec);
            }
            else
            {
                count = ParseInt(item[..star], spec);
                bins = ParseInt(item[(star + 1)..], spec);
                if (count < 1)
                {
                    throw new FormatException($"'{spec}': a layer count must be at least 1.");
                }
            }
            if (bins is < MinBins or > MaxBins)
            {
                throw new FormatException($"'{spec}': {bins} bins is outside {MinBins}..{MaxBins}.");
            }
            for (var i = 0; i < count && layer < layers; i++)
            {
                result[layer++] = bins;
            }
            last = bins;
        }
        while (layer < layers)
        {
            result[layer++] = last;
        }
        return result;
    }

    /// <summary>Renders as a specification accepted by <see cref="ExpandSpec"/> (run-length form).</summary>
    public override string ToString() => $"key {Render(_key)}; value {Render(_value)}";

    private static string Render(byte[] bins)
    {
        var parts = new List<string>();
        var i = 0;
        while (i < bins.Length)
        {
            var j = i;
            while (j < bins.Length && bins[j] == bins[i])
            {
                j++;
            }
            parts.Add(j - i == 1 ? bins[i].ToString(CultureInfo.InvariantCulture) : $"{j - i}*{bins[i]}");
            i = j;
        }
        return string.Join(',', parts);
    }

    private static int ParseInt(string text, string spec) =>
        int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new FormatException($"'{spec}': '{text}' is not an integer; expected items like '32' or '10*32'.");

    private static byte CheckBins(int bins) =>
        bins is < MinBins or > MaxBins
            ? throw new ArgumentOutOfRangeException(nameof(bins), bins, $"Bins must be within {MinBins}..{MaxBins}.")
            : (byte)bins;
}
