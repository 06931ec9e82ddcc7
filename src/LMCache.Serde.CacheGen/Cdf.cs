namespace LMCache.Serde.CacheGen;

/// <summary>
/// The 16-bit cumulative frequency tables of the coder: for <c>maxBins</c> symbols (alphabet <c>0 .. maxBins − 1</c>,
/// <c>Lp = maxBins + 1</c> entries), <c>cdf[i] = floor((65535 − maxBins) · cum_i / total) + i</c>, so <c>cdf[0] = 0</c>,
/// <c>cdf[maxBins] = 65535</c> and every symbol has a width of at least 1 out of 65536.
/// </summary>
internal static class Cdf
{
    /// <summary>
    /// Builds one table from symbol counts (<paramref name="counts"/> has <c>maxBins</c> entries, <paramref name="cdf"/>
    /// <c>maxBins + 1</c>). <paramref name="total"/> is the sum of the counts and must be positive.
    /// </summary>
    /// <remarks>
    /// The reference computes the product in unsigned 32 bits, which is exact for totals up to 65535; 64-bit arithmetic
    /// gives the same values there and stays exact for the larger totals of shared (profiled) tables.
    /// </remarks>
    public static void Build(ReadOnlySpan<uint> counts, ulong total, Span<ushort> cdf)
    {
        var maxBins = counts.Length;
        var scale = (ulong)(65535 - maxBins);
        ulong cum = 0;
        for (var i = 0; i <= maxBins; i++)
        {
            cdf[i] = (ushort)((scale * cum / total) + (ulong)i);
            if (i < maxBins)
            {
                cum += counts[i];
            }
        }
    }

    /// <summary>True when <paramref name="cdf"/> is a table the coder can use: starts at 0, strictly increasing, ends at 65535.</summary>
    public static bool IsValid(ReadOnlySpan<ushort> cdf)
    {
        if (cdf.Length < 3 || cdf[0] != 0 || cdf[^1] != 65535)
        {
            return false;
        }
        for (var i = 1; i < cdf.Length; i++)
        {
            if (cdf[i] <= cdf[i - 1])
            {
                return false;
            }
        }
        return true;
    }
}
