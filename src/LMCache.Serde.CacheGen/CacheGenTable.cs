using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace LMCache.Serde.CacheGen;

/// <summary>
/// A probability table set shared across chunks: one 16-bit CDF per (symbol row, channel) for a model geometry
/// (layers, hidden size, bins), profiled from a model's own KV as the CacheGen paper describes. Blobs that use it carry
/// only its <see cref="Id"/>; a reader that does not have the table treats the blob as a miss.
/// </summary>
/// <remarks>
/// Serialized form (little-endian): magic <c>LMCT</c>, version byte 1, 3 reserved zero bytes, int32 layers, int32 hidden,
/// int32 Lp, 2·layers bin bytes (keys then values), uint16 CDF <c>[2·layers, hidden, Lp]</c>, then the XxHash64 of all
/// preceding bytes. The id is the XxHash128 of the same preceding bytes, so a loaded table is checked against the id a
/// blob names.
/// </remarks>
public sealed class CacheGenTable
{
    private const uint Magic = 0x54434D4C; // "LMCT"
    private const byte Version = 1;
    private const int HeaderSize = 20;

    private CacheGenTable(CacheGenBins bins, int hidden, ushort[] cdf, byte[] serialized)
    {
        Bins = bins;
        Hidden = hidden;
        Cdf = cdf;
        Serialized = serialized;
        Id = ComputeId(serialized);
    }

    /// <summary>The table's identity: the XxHash128 of its content (16 bytes).</summary>
    public UInt128 Id { get; }

    /// <summary><see cref="Id"/> as 32 lower-case hex digits (used as the storage name).</summary>
    public string IdText => FormatId(Id);

    /// <summary>Bins the table was profiled with (a blob must use the same bins to use it).</summary>
    public CacheGenBins Bins { get; }

    /// <summary>Channels per layer (<c>kv_heads · head_dim</c>).</summary>
    public int Hidden { get; }

    /// <summary>Entries per CDF (<c>maxBins + 1</c>).</summary>
    public int Lp => Bins.MaxBinCount + 1;

    /// <summary>The CDFs, <c>[2·layers, hidden, Lp]</c>.</summary>
    internal ushort[] Cdf { get; }

    /// <summary>The serialized form (the bytes a table store keeps).</summary>
    public ReadOnlyMemory<byte> Serialized { get; }

    /// <summary>Renders an id as 32 lower-case hex digits.</summary>
    public static string FormatId(UInt128 id) => id.ToString("x32", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Builds a table from accumulated symbol counts <c>[2·layers, hidden, maxBins]</c> over <paramref name="tokens"/> tokens.</summary>
    internal static CacheGenTable FromCounts(CacheGenBins bins, int hidden, ReadOnlySpan<ulong> counts, ulong tokens)
    {
        var maxBins = bins.MaxBinCount;
        var lp = maxBins + 1;
        var rows = 2 * bins.Layers;
        var cdf = new ushort[rows * hidden * lp];
        Span<uint> row = stackalloc uint[maxBins];
        var scale = (ulong)(65535 - maxBins);
        for (var r = 0; r < rows * hidden; r++)
        {
            // Counts can exceed 2^32 over many chunks: build with 64-bit cumulative sums directly.
            var source = counts.Slice(r * maxBins, maxBins);
            var destination = cdf.AsSpan(r * lp, lp);
            ulong cum = 0;
            for (var i = 0; i <= maxBins; i++)
            {
                destination[i] = (ushort)(((UInt128)scale * cum / tokens) + (ulong)i);
                if (i < maxBins)
                {
                    cum += source[i];
                }
            }
        }
        return new CacheGenTable(bins, hidden, cdf, Serialize(bins, hidden, cdf));
    }

    /// <summary>Parses a serialized table; null when it is malformed, fails its checksum or holds an invalid CDF.</summary>
    public static CacheGenTable? TryParse(ReadOnlySpan<byte> data)
    {
        if (data.Length < HeaderSize + 8 + 2
            || BinaryPrimitives.ReadUInt32LittleEndian(data) != Magic
            || data[4] != Version || data[5] != 0 || data[6] != 0 || data[7] != 0)
        {
            return null;
        }
        var layers = BinaryPrimitives.ReadInt32LittleEndian(data[8..]);
        var hidden = BinaryPrimitives.ReadInt32LittleEndian(data[12..]);
        var lp = BinaryPrimitives.ReadInt32LittleEndian(data[16..]);
        if (layers is <= 0 or > 4096 || hidden is <= 0 or > 1 << 20 || lp is < 3 or > CacheGenBins.MaxBins + 1)
        {
            return null;
        }
        var cdfCount = 2L * layers * hidden * lp;
        var expected = HeaderSize + (2L * layers) + (2 * cdfCount) + 8;
        if (expected != data.Length || XxHash64.HashToUInt64(data[..^8]) != BinaryPrimitives.ReadUInt64LittleEndian(data[^8..]))
        {
            return null;
        }
        if (!CacheGenBins.TryFromPacked(data.Slice(HeaderSize, 2 * layers), out var bins) || bins!.MaxBinCount + 1 != lp)
        {
            return null;
        }
        var cdf = MemoryMarshal.Cast<byte, ushort>(data.Slice(HeaderSize + (2 * layers), (int)(2 * cdfCount))).ToArray();
        if (!BitConverter.IsLittleEndian)
        {
            return null;
        }
        for (var r = 0; r < cdf.Length / lp; r++)
        {
            if (!CacheGen.Cdf.IsValid(cdf.AsSpan(r * lp, lp)))
            {
                return null;
            }
        }
        return new CacheGenTable(bins, hidden, cdf, data.ToArray());
    }

    private static byte[] Serialize(CacheGenBins bins, int hidden, ushort[] cdf)
    {
        var layers = bins.Layers;
        var lp = bins.MaxBinCount + 1;
        var data = new byte[HeaderSize + (2 * layers) + (2 * cdf.Length) + 8];
        BinaryPrimitives.WriteUInt32LittleEndian(data, Magic);
        data[4] = Version;
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(8), layers);
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(12), hidden);
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(16), lp);
        bins.WritePacked(data.AsSpan(HeaderSize, 2 * layers));
        MemoryMarshal.AsBytes(cdf.AsSpan()).CopyTo(data.AsSpan(HeaderSize + (2 * layers)));
        BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(data.Length - 8), XxHash64.HashToUInt64(data.AsSpan(0, data.Length - 8)));
        return data;
    }

    private static UInt128 ComputeId(ReadOnlySpan<byte> serialized) => XxHash128.HashToUInt128(serialized[..^8]);
}
