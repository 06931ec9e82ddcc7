using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using LMCache.Core.Memory;

namespace LMCache.Serde.CacheGen;

/// <summary>How a blob's payload is represented (byte 5 of the container).</summary>
internal enum CacheGenMode : byte
{
    /// <summary>Quantized and arithmetic-coded; the chunk's own CDF tables are inline.</summary>
    Coded = 0,
    /// <summary>Quantized and arithmetic-coded with a shared table named by a 16-byte id.</summary>
    SharedTable = 1,
    /// <summary>A lossless copy of the chunk (used when coding would not shrink it, or for non-finite values).</summary>
    Raw = 2,
}

/// <summary>
/// The cachegen container format, apart from the numerics that fill it (<see cref="CacheGenCodec"/>): the header
/// (magic <c>"LMCG"</c>, version byte, mode, dtype, geometry, per-row bin counts), the side information — scales, the
/// stored probability tables (version 1: raw uint16 CDFs; version 2: compact symbol counts, <see cref="SideInfo"/>) and
/// stream lengths —, the stream sections and the trailing checksum. Layout and guarantees: <c>docs/cachegen.md</c>.
/// </summary>
/// <remarks>
/// Writing goes through <see cref="PreparedEncoding.WriteTo"/> (the encoder fills a <see cref="PreparedEncoding"/>);
/// reading through <see cref="TryParse"/>, which validates a blob completely before the decoder touches it. The bytes are
/// those of the former all-in-one codec: the format tests pin them.
/// </remarks>
internal static class CacheGenContainer
{
    /// <summary>The container version written by default: compact side information (<see cref="SideInfo"/>).</summary>
    public const byte Version = 2;
    /// <summary>The first container version (raw uint16 CDFs and stream lengths, raw scales); still read.</summary>
    public const byte Version1 = 1;
    /// <summary>Bytes of the fixed header (magic, version, mode, dtype, reserved, layers, tokens, hidden, data-chunk tokens, Lp).</summary>
    public const int FixedHeaderSize = 28;
    /// <summary>Bytes of the trailing checksum.</summary>
    public const int ChecksumSize = 8;
    /// <summary>Bytes of a shared table's id in <see cref="CacheGenMode.SharedTable"/> blobs.</summary>
    public const int TableIdSize = 16;
    private const uint Magic = 0x47434D4C; // "LMCG"

    /// <summary>The trailing checksum: XXH64 in version 1, XXH3-64 (several times faster on long inputs) in version 2.</summary>
    internal static ulong Checksum(byte version, ReadOnlySpan<byte> content) =>
        version == Version1 ? XxHash64.HashToUInt64(content) : XxHash3.HashToUInt64(content);

    /// <summary>Validates a blob completely (checksum, header, every size and offset, scales, CDFs or counts, stream lengths).</summary>
    public static bool TryParse(ReadOnlySpan<byte> blob, out ParsedBlob? parsed, out string reason)
    {
        parsed = null;
        if (blob.Length < FixedHeaderSize + ChecksumSize)
        {
            reason = blob.Length == 0 ? "empty" : "shorter than the header";
            return false;
        }
        if (BinaryPrimitives.ReadUInt32LittleEndian(blob) != Magic)
        {
            reason = "bad magic";
            return false;
        }
        var version = blob[4];
        if (version is not (Version or Version1))
        {
            reason = $"unsupported version {version}";
            return false;
        }
        if (Checksum(version, blob[..^ChecksumSize]) != BinaryPrimitives.ReadUInt64LittleEndian(blob[^ChecksumSize..]))
        {
            reason = "checksum mismatch (corrupted or truncated)";
            return false;
        }
        var mode = (CacheGenMode)blob[5];
        if (mode is not (CacheGenMode.Coded or CacheGenMode.SharedTable or CacheGenMode.Raw) || blob[7] != 0
            || !KvDTypes.FromWireCode(blob[6], out var dtype) || !CacheGenCodec.IsSupported(dtype))
        {
            reason = "unknown mode, flags or dtype";
            return false;
        }
        var layers = BinaryPrimitives.ReadInt32LittleEndian(blob[8..]);
        var tokens = BinaryPrimitives.ReadInt32LittleEndian(blob[12..]);
        var hidden = BinaryPrimitives.ReadInt32LittleEndian(blob[16..]);
        var dataChunkTokens = BinaryPrimitives.ReadInt32LittleEndian(blob[20..]);
        var lp = BinaryPrimitives.ReadInt32LittleEndian(blob[24..]);
        var item = dtype.ItemSize();
        if (layers <= 0 || tokens <= 0 || hidden <= 0 || dataChunkTokens is <= 0 or > CacheGenCodec.DataChunkTokens
            || (long)layers * tokens * hidden * 2 * item > int.MaxValue)
        {
            reason = "invalid geometry";
            return false;
        }
        var rows = 2 * layers;
        long offset = FixedHeaderSize;
        if (offset + rows > blob.Length - ChecksumSize
            || !CacheGenBins.TryFromPacked(blob.Slice(FixedHeaderSize, rows), out var bins) || bins!.MaxBinCount + 1 != lp)
        {
            reason = "invalid bin table";
            return false;
        }
        offset += rows;
        var end = blob.Length - ChecksumSize;
        if (mode == CacheGenMode.Raw)
        {
            if (offset + ((long)rows * tokens * hidden * item) != end)
            {
                reason = "raw payload size mismatch";
                return false;
            }
            parsed = new ParsedBlob { Version = version, Mode = mode, DType = dtype, Layers = layers, Tokens = tokens, Hidden = hidden, Lp = lp, Bins = bins, DataChunkTokensInBlob = dataChunkTokens, PayloadOffset = (int)offset };
            reason = string.Empty;
            return true;
        }
        UInt128 tableId = default;
        if (mode == CacheGenMode.SharedTable)
        {
            if (offset + TableIdSize > end)
            {
                reason = "truncated table id";
                return false;
            }
            tableId = BinaryPrimitives.ReadUInt128LittleEndian(blob[(int)offset..]);
            offset += TableIdSize;
        }
        var dataChunks = (tokens + dataChunkTokens - 1) / dataChunkTokens;
        var streamCount = dataChunks * rows * hidden;
        var result = new ParsedBlob
        {
            Version = version,
            Mode = mode,
            DType = dtype,
            Layers = layers,
            Tokens = tokens,
            Hidden = hidden,
            Lp = lp,
            Bins = bins,
            DataChunkTokensInBlob = dataChunkTokens,
            TableId = tableId,
            DataChunks = dataChunks,
            CdfOffset = version == Version1 && mode == CacheGenMode.Coded ? (int)(offset + ((long)rows * tokens * item)) : -1,
        };
        result.Scales = ArrayPool<uint>.Shared.Rent(rows * tokens);
        result.StreamStarts = ArrayPool<int>.Shared.Rent(streamCount);
        result.StreamLengths = ArrayPool<int>.Shared.Rent(streamCount);
        result.Cdf = mode == CacheGenMode.Coded ? ArrayPool<ushort>.Shared.Rent(rows * hidden * lp) : null;
        var ok = version == Version1
            ? ParseVersion1(blob, result, offset, end, out reason)
            : ParseVersion2(blob, result, offset, end, out reason);
        if (!ok)
        {
            result.Dispose();
            return false;
        }
        var scales = result.Scales.AsSpan(0, rows * tokens);
        foreach (var bits in scales)
        {
            if (!Quantizer.IsValidScale(dtype, bits))
            {
                result.Dispose();
                reason = "invalid scale";
                return false;
            }
        }
        parsed = result;
        reason = string.Empty;
        return true;
    }

    /// <summary>Version 1: raw scales, raw uint16 CDFs, then per data chunk raw uint16 lengths and the streams.</summary>
    private static bool ParseVersion1(ReadOnlySpan<byte> blob, ParsedBlob parsed, long offset, long end, out string reason)
    {
        var rows = 2 * parsed.Layers;
        var tokens = parsed.Tokens;
        var hidden = parsed.Hidden;
        var lp = parsed.Lp;
        var item = parsed.DType.ItemSize();
        var scaleCount = rows * tokens;
        if (offset + ((long)scaleCount * item) > end)
        {
            reason = "truncated scales";
            return false;
        }
        var scales = blob.Slice((int)offset, scaleCount * item);
        for (var i = 0; i < scaleCount; i++)
        {
            parsed.Scales[i] = item == 2 ? MemoryMarshal.Read<ushort>(scales[(2 * i)..]) : MemoryMarshal.Read<uint>(scales[(4 * i)..]);
        }
        offset += (long)scaleCount * item;
        if (parsed.Mode == CacheGenMode.Coded)
        {
            var cdfCount = (long)rows * hidden * lp;
            if (offset + (cdfCount * 2) > end)
            {
                reason = "truncated CDF table";
                return false;
            }
            var cdf = MemoryMarshal.Cast<byte, ushort>(blob.Slice((int)offset, (int)(cdfCount * 2)));
            cdf.CopyTo(parsed.Cdf);
            for (var r = 0; r < rows * hidden; r++)
            {
                if (!Cdf.IsValid(cdf.Slice(r * lp, lp)))
                {
                    reason = "invalid CDF table";
                    return false;
                }
            }
            offset += cdfCount * 2;
        }
        for (var d = 0; d < parsed.DataChunks; d++)
        {
            var lengthsOffset = offset;
            offset += (long)rows * hidden * 2;
            if (offset > end)
            {
                reason = "truncated stream lengths";
                return false;
            }
            var lengths = MemoryMarshal.Cast<byte, ushort>(blob.Slice((int)lengthsOffset, rows * hidden * 2));
            for (var i = 0; i < rows * hidden; i++)
            {
                var index = (d * rows * hidden) + i;
                parsed.StreamStarts[index] = (int)Math.Min(offset, int.MaxValue);
                parsed.StreamLengths[index] = lengths[i];
                offset += lengths[i];
            }
            if (offset > end)
            {
                reason = "truncated streams";
                return false;
            }
        }
        if (offset != end)
        {
            reason = "trailing bytes";
            return false;
        }
        reason = string.Empty;
        return true;
    }

    /// <summary>Version 2: int32 side-information length, the side information (<see cref="SideInfo"/>), then the streams.</summary>
    private static bool ParseVersion2(ReadOnlySpan<byte> blob, ParsedBlob parsed, long offset, long end, out string reason)
    {
        var rows = 2 * parsed.Layers;
        var tokens = parsed.Tokens;
        var hidden = parsed.Hidden;
        var lp = parsed.Lp;
        var maxBins = lp - 1;
        if (offset + 4 > end)
        {
            reason = "truncated side information";
            return false;
        }
        var sideLength = BinaryPrimitives.ReadInt32LittleEndian(blob[(int)offset..]);
        offset += 4;
        if (sideLength < 0 || offset + sideLength > end)
        {
            reason = "truncated side information";
            return false;
        }
        var reader = new SideInfo.Reader(blob.Slice((int)offset, sideLength));
        offset += sideLength;
        var width = parsed.DType.ItemSize() * 8;
        for (var row = 0; row < rows; row++)
        {
            if (!SideInfo.ReadSeries(ref reader, parsed.Scales.AsSpan(row * tokens, tokens), width))
            {
                reason = "invalid scales";
                return false;
            }
        }
        if (parsed.Mode == CacheGenMode.Coded)
        {
            Span<uint> counts = stackalloc uint[maxBins];
            for (var row = 0; row < rows; row++)
            {
                var alphabet = SideInfo.Alphabet(parsed.Bins.RowBins(row));
                for (var c = 0; c < hidden; c++)
                {
                    if (!SideInfo.ReadCounts(ref reader, counts, alphabet, (uint)tokens))
                    {
                        reason = "invalid symbol counts";
                        return false;
                    }
                    Cdf.Build(counts, (ulong)tokens, parsed.Cdf.AsSpan(((row * hidden) + c) * lp, lp));
                }
            }
        }
        var lengths = ArrayPool<uint>.Shared.Rent(hidden);
        try
        {
            for (var d = 0; d < parsed.DataChunks; d++)
            {
                for (var row = 0; row < rows; row++)
                {
                    if (!SideInfo.ReadSeries(ref reader, lengths.AsSpan(0, hidden), 16))
                    {
                        reason = "invalid stream lengths";
                        return false;
                    }
                    for (var c = 0; c < hidden; c++)
                    {
                        var index = (((d * rows) + row) * hidden) + c;
                        parsed.StreamStarts[index] = (int)Math.Min(offset, int.MaxValue);
                        parsed.StreamLengths[index] = (int)lengths[c];
                        offset += lengths[c];
                    }
                }
            }
        }
        finally
        {
            ArrayPool<uint>.Shared.Return(lengths);
        }
        if (reader.Overrun || (sideLength * 8L) - reader.Consumed >= 8)
        {
            reason = "side information length mismatch";
            return false;
        }
        if (offset != end)
        {
            reason = offset > end ? "truncated streams" : "trailing bytes";
            return false;
        }
        reason = string.Empty;
        return true;
    }

    /// <summary>An encoded chunk waiting to be written into a buffer of exactly <see cref="Size"/> bytes.</summary>
    internal sealed class PreparedEncoding : IDisposable
    {
        private readonly ReadOnlyMemory<byte> _chunk;

        private SideInfo.Writer _side;

        public PreparedEncoding(KvDType dtype, int layers, int tokens, int hidden, CacheGenBins bins, ReadOnlyMemory<byte> chunk, byte version)
        {
            Version = version;
            DType = dtype;
            Layers = layers;
            Tokens = tokens;
            Hidden = hidden;
            Bins = bins;
            _chunk = chunk;
        }

        public byte Version { get; }
        public KvDType DType { get; }
        public int Layers { get; }
        public int Tokens { get; }
        public int Hidden { get; }
        public CacheGenBins Bins { get; }
        public CacheGenMode Mode { get; set; }
        public long Size { get; set; }
        public string? RawReason { get; private set; }
        public CacheGenTable? Table { get; set; }
        public uint[] Scales { get; set; } = [];
        public ushort[]? Cdf { get; set; }
        public byte[] Streams { get; set; } = [];
        public ushort[] Lengths { get; set; } = [];
        public int[] SectionBytes { get; set; } = [];

        /// <summary>The packed side information of a version-2 container (empty before <see cref="BuildSideInfo"/>).</summary>
        public SideInfo.Writer SideInfo => _side;

        /// <summary>
        /// Packs scales, (when <paramref name="withCounts"/>) the symbol counts <c>[rows, hidden, maxBins]</c> the CDFs
        /// were built from, and stream lengths (<see cref="CacheGen.SideInfo"/>).
        /// </summary>
        public void BuildSideInfo(ReadOnlySpan<uint> counts, bool withCounts)
        {
            var rows = 2 * Layers;
            var maxBins = Bins.MaxBinCount;
            var width = DType.ItemSize() * 8;
            var dataChunks = (Tokens + CacheGenCodec.DataChunkTokens - 1) / CacheGenCodec.DataChunkTokens;
            _side.Dispose();
            _side = new SideInfo.Writer((rows * Tokens) + (rows * Hidden * 4) + (dataChunks * rows * Hidden));
            for (var row = 0; row < rows; row++)
            {
                CacheGen.SideInfo.WriteSeries(ref _side, Scales.AsSpan(row * Tokens, Tokens), width);
            }
            if (withCounts)
            {
                for (var row = 0; row < rows; row++)
                {
                    var alphabet = CacheGen.SideInfo.Alphabet(Bins.RowBins(row));
                    for (var c = 0; c < Hidden; c++)
                    {
                        CacheGen.SideInfo.WriteCounts(ref _side, counts.Slice(((row * Hidden) + c) * maxBins, maxBins), alphabet, (uint)Tokens);
                    }
                }
            }
            var buffer = ArrayPool<uint>.Shared.Rent(Hidden);
            try
            {
                for (var d = 0; d < dataChunks; d++)
                {
                    for (var row = 0; row < rows; row++)
                    {
                        var source = Lengths.AsSpan(((d * rows) + row) * Hidden, Hidden);
                        for (var c = 0; c < Hidden; c++)
                        {
                            buffer[c] = source[c];
                        }
                        CacheGen.SideInfo.WriteSeries(ref _side, buffer.AsSpan(0, Hidden), 16);
                    }
                }
            }
            finally
            {
                ArrayPool<uint>.Shared.Return(buffer);
            }
            _side.Finish();
        }

        public void SetRaw(long size, string reason)
        {
            Mode = CacheGenMode.Raw;
            Size = size;
            RawReason = reason;
        }

        /// <summary>Writes the container into <paramref name="destination"/> (exactly <see cref="Size"/> bytes).</summary>
        public void WriteTo(Span<byte> destination)
        {
            if (destination.Length != Size)
            {
                throw new ArgumentException($"The destination has {destination.Length} bytes, expected {Size}.", nameof(destination));
            }
            var rows = 2 * Layers;
            var lp = Bins.MaxBinCount + 1;
            var item = DType.ItemSize();
            BinaryPrimitives.WriteUInt32LittleEndian(destination, Magic);
            destination[4] = Version;
            destination[5] = (byte)Mode;
            destination[6] = (byte)DType.ToWireCode();
            destination[7] = 0;
            BinaryPrimitives.WriteInt32LittleEndian(destination[8..], Layers);
            BinaryPrimitives.WriteInt32LittleEndian(destination[12..], Tokens);
            BinaryPrimitives.WriteInt32LittleEndian(destination[16..], Hidden);
            BinaryPrimitives.WriteInt32LittleEndian(destination[20..], CacheGenCodec.DataChunkTokens);
            BinaryPrimitives.WriteInt32LittleEndian(destination[24..], lp);
            Bins.WritePacked(destination.Slice(FixedHeaderSize, rows));
            var offset = FixedHeaderSize + rows;
            if (Mode == CacheGenMode.Raw)
            {
                _chunk.Span.CopyTo(destination[offset..]);
                offset += _chunk.Length;
            }
            else
            {
                if (Mode == CacheGenMode.SharedTable)
                {
                    BinaryPrimitives.WriteUInt128LittleEndian(destination[offset..], Table!.Id);
                    offset += TableIdSize;
                }
                if (Version != Version1)
                {
                    var side = _side.Written;
                    BinaryPrimitives.WriteInt32LittleEndian(destination[offset..], side.Length);
                    offset += 4;
                    side.CopyTo(destination[offset..]);
                    offset += side.Length;
                    var chunks = (Tokens + CacheGenCodec.DataChunkTokens - 1) / CacheGenCodec.DataChunkTokens;
                    var region = Hidden * ArithmeticCoder.MaxStreamBytes(Math.Min(Tokens, CacheGenCodec.DataChunkTokens));
                    for (var d = 0; d < chunks; d++)
                    {
                        for (var row = 0; row < rows; row++)
                        {
                            var section = SectionBytes[(row * chunks) + d];
                            Streams.AsSpan(((row * chunks) + d) * region, section).CopyTo(destination[offset..]);
                            offset += section;
                        }
                    }
                    BinaryPrimitives.WriteUInt64LittleEndian(destination[offset..], Checksum(Version, destination[..offset]));
                    return;
                }
                var scaleCount = rows * Tokens;
                if (item == 2)
                {
                    var scales = MemoryMarshal.Cast<byte, ushort>(destination.Slice(offset, scaleCount * 2));
                    for (var i = 0; i < scaleCount; i++)
                    {
                        scales[i] = (ushort)Scales[i];
                    }
                }
                else
                {
                    MemoryMarshal.AsBytes(Scales.AsSpan(0, scaleCount)).CopyTo(destination[offset..]);
                }
                offset += scaleCount * item;
                if (Mode == CacheGenMode.Coded)
                {
                    var cdfBytes = MemoryMarshal.AsBytes(Cdf.AsSpan(0, rows * Hidden * lp));
                    cdfBytes.CopyTo(destination[offset..]);
                    offset += cdfBytes.Length;
                }
                var dataChunks = (Tokens + CacheGenCodec.DataChunkTokens - 1) / CacheGenCodec.DataChunkTokens;
                var regionBytes = Hidden * ArithmeticCoder.MaxStreamBytes(Math.Min(Tokens, CacheGenCodec.DataChunkTokens));
                for (var d = 0; d < dataChunks; d++)
                {
                    var lengthBytes = MemoryMarshal.AsBytes(Lengths.AsSpan(d * rows * Hidden, rows * Hidden));
                    lengthBytes.CopyTo(destination[offset..]);
                    offset += lengthBytes.Length;
                    for (var row = 0; row < rows; row++)
                    {
                        var section = SectionBytes[(row * dataChunks) + d];
                        Streams.AsSpan(((row * dataChunks) + d) * regionBytes, section).CopyTo(destination[offset..]);
                        offset += section;
                    }
                }
            }
            BinaryPrimitives.WriteUInt64LittleEndian(destination[offset..], Checksum(Version, destination[..offset]));
        }

        public void Dispose()
        {
            _side.Dispose();
            ReturnArray(Scales);
            if (Cdf is not null)
            {
                ArrayPool<ushort>.Shared.Return(Cdf);
            }
            ReturnArray(Streams);
            ReturnArray(Lengths);
            ReturnArray(SectionBytes);
            Scales = [];
            Cdf = null;
            Streams = [];
            Lengths = [];
            SectionBytes = [];
        }

        private static void ReturnArray<T>(T[] array)
        {
            if (array.Length > 0)
            {
                ArrayPool<T>.Shared.Return(array);
            }
        }
    }

    /// <summary>
    /// The validated structure of a blob, with its side information decoded into pooled arrays (scales, inline CDFs,
    /// stream offsets and lengths); dispose it to return them.
    /// </summary>
    internal sealed class ParsedBlob : IDisposable
    {
        public byte Version { get; init; }
        public CacheGenMode Mode { get; init; }
        public KvDType DType { get; init; }
        public int Layers { get; init; }
        public int Tokens { get; init; }
        public int Hidden { get; init; }
        public int DataChunkTokensInBlob { get; init; }
        public int Lp { get; init; }
        public required CacheGenBins Bins { get; init; }
        public UInt128 TableId { get; init; }
        public int PayloadOffset { get; init; }
        /// <summary>Byte offset of the inline CDFs in a version-1 coded blob (−1 otherwise).</summary>
        public int CdfOffset { get; init; } = -1;
        public int DataChunks { get; init; }
        /// <summary>Scale bits per (row, token).</summary>
        public uint[] Scales { get; set; } = [];
        /// <summary>Inline CDFs <c>[rows, hidden, Lp]</c> (coded mode only).</summary>
        public ushort[]? Cdf { get; set; }
        /// <summary>Start of each stream in the blob, <c>[dataChunks, rows, hidden]</c>.</summary>
        public int[] StreamStarts { get; set; } = [];
        /// <summary>Length of each stream, same order.</summary>
        public int[] StreamLengths { get; set; } = [];

        /// <summary>Metadata of the decoded chunk.</summary>
        public MemoryObjectMetadata ChunkMetadata => new(KvShape.Kv2Ltd(Layers, Tokens, Hidden), DType, MemoryFormat.KV2LTD);

        public void Dispose()
        {
            Return(Scales);
            Return(StreamStarts);
            Return(StreamLengths);
            if (Cdf is not null)
            {
                ArrayPool<ushort>.Shared.Return(Cdf);
            }
            Scales = [];
            StreamStarts = [];
            StreamLengths = [];
            Cdf = null;
        }

        private static void Return<T>(T[] array)
        {
            if (array.Length > 0)
            {
                ArrayPool<T>.Shared.Return(array);
            }
        }
    }

}
