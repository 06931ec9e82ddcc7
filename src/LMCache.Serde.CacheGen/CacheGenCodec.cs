using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using LMCache.Core.Memory;
using LMCache.Core.Simd;

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
/// Encodes a <c>KV_2LTD</c> chunk into the cachegen container and back (layout in <c>docs/cachegen.md</c>). Streams are
/// independent per (symbol row, channel, ≤ 256-token data chunk); work is spread over symbol rows (2·layers of them)
/// on up to <c>maxDegreeOfParallelism</c> threads. Scratch comes from <see cref="ArrayPool{T}.Shared"/>.
/// </summary>
internal sealed class CacheGenCodec
{
    /// <summary>Tokens per data chunk (the reference's <c>CACHEGEN_GPU_MAX_TOKENS_PER_CHUNK</c>).</summary>
    public const int DataChunkTokens = 256;
    /// <summary>The container version written by default: compact side information (<see cref="SideInfo"/>).</summary>
    public const byte Version = 2;
    /// <summary>The first container version (raw uint16 CDFs and stream lengths, raw scales); still read.</summary>
    public const byte Version1 = 1;
    public const int FixedHeaderSize = 28;
    public const int ChecksumSize = 8;
    public const int TableIdSize = 16;
    private const uint Magic = 0x47434D4C; // "LMCG"

    private readonly ParallelOptions _parallel;
    private readonly bool _reference;
    private readonly byte _version;

    /// <param name="maxDegreeOfParallelism">Threads used per chunk (1 = the calling thread only).</param>
    /// <param name="reference">Use the plain scalar quantizer and bit-at-a-time coder (tests compare both paths).</param>
    /// <param name="version">Container version to write (<see cref="Version"/>, or <see cref="Version1"/> for compatibility tests).</param>
    /// <param name="simd">The vector path of the fast coder (<see cref="SimdPaths.Current"/> when null), capped at what the CPU has.</param>
    public CacheGenCodec(int maxDegreeOfParallelism, bool reference = false, byte version = Version, SimdPath? simd = null)
    {
        Simd = SimdPaths.Cap(simd ?? SimdPaths.Current);
        if (version is not (Version or Version1))
        {
            throw new ArgumentOutOfRangeException(nameof(version), version, "Only container versions 1 and 2 exist.");
        }
        _parallel = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, maxDegreeOfParallelism) };
        _reference = reference;
        _version = version;
    }

    /// <summary>The vector path the fast decoder and quantizer use (ignored by the reference path).</summary>
    public SimdPath Simd { get; }

    public static bool IsSupported(KvDType dtype) => dtype is KvDType.BFloat16 or KvDType.Float16 or KvDType.Float32;

    private void ForEachRow(int rows, Action<int> body)
    {
        if (_parallel.MaxDegreeOfParallelism == 1 || rows == 1)
        {
            for (var r = 0; r < rows; r++)
            {
                body(r);
            }
        }
        else
        {
            Parallel.For(0, rows, _parallel, body);
        }
    }

    // ----------------------------------------------------------------------------------------------------------------
    // Encode

    /// <summary>
    /// Quantizes and codes <paramref name="chunk"/> (<c>[2, layers, tokens, hidden]</c> of <paramref name="dtype"/>).
    /// The result knows its exact container size; write it with <see cref="PreparedEncoding.WriteTo"/>, then dispose it.
    /// </summary>
    public PreparedEncoding Prepare(ReadOnlyMemory<byte> chunk, KvDType dtype, int layers, int tokens, int hidden, CacheGenBins bins, CacheGenSharedTables? shared)
    {
        if (!IsSupported(dtype) || bins.Layers != layers)
        {
            throw new ArgumentException($"cachegen codes bf16/fp16/fp32 chunks with bins for their layer count (got {dtype}, {layers} layers, bins for {bins.Layers}).");
        }
        var item = dtype.ItemSize();
        var rows = 2 * layers;
        var rawBytes = (long)rows * tokens * hidden * item;
        if (chunk.Length != rawBytes)
        {
            throw new ArgumentException($"The chunk has {chunk.Length} bytes, expected {rawBytes}.", nameof(chunk));
        }
        var prepared = new PreparedEncoding(dtype, layers, tokens, hidden, bins, chunk, _version);
        var table = shared?.ForEncode(bins, hidden);
        var maxBins = bins.MaxBinCount;
        var lp = maxBins + 1;
        var dataChunks = (tokens + DataChunkTokens - 1) / DataChunkTokens;
        var maxStream = ArithmeticCoder.MaxStreamBytes(Math.Min(tokens, DataChunkTokens));
        var regionBytes = hidden * maxStream;

        var symbols = ArrayPool<byte>.Shared.Rent(rows * tokens * hidden);
        var counts = ArrayPool<uint>.Shared.Rent(rows * hidden * maxBins);
        try
        {
            prepared.Scales = ArrayPool<uint>.Shared.Rent(rows * tokens);
            prepared.Cdf = table is null ? ArrayPool<ushort>.Shared.Rent(rows * hidden * lp) : null;
            prepared.Table = table;
            prepared.Streams = ArrayPool<byte>.Shared.Rent(rows * dataChunks * regionBytes);
            prepared.Lengths = ArrayPool<ushort>.Shared.Rent(dataChunks * rows * hidden);
            prepared.SectionBytes = ArrayPool<int>.Shared.Rent(rows * dataChunks);
            var nonFinite = 0;

            ForEachRow(rows, row =>
            {
                var source = chunk.Span;
                var rowSymbols = symbols.AsSpan(row * tokens * hidden, tokens * hidden);
                var rowBins = bins.RowBins(row);
                for (var t = 0; t < tokens; t++)
                {
                    var element = ((row * tokens) + t) * hidden;
                    var ok = _reference
                        ? Quantizer.QuantizeRowReference(dtype, source.Slice(element * item, hidden * item), rowBins, rowSymbols.Slice(t * hidden, hidden), out prepared.Scales[(row * tokens) + t])
                        : Quantizer.QuantizeRow(dtype, source.Slice(element * item, hidden * item), rowBins, rowSymbols.Slice(t * hidden, hidden), out prepared.Scales[(row * tokens) + t]);
                    if (!ok)
                    {
                        Interlocked.Exchange(ref nonFinite, 1);
                        return;
                    }
                }

                var rowCounts = counts.AsSpan(row * hidden * maxBins, hidden * maxBins);
                rowCounts.Clear();
                for (var t = 0; t < tokens; t++)
                {
                    var symbolRow = rowSymbols.Slice(t * hidden, hidden);
                    for (var c = 0; c < hidden; c++)
                    {
                        rowCounts[(c * maxBins) + symbolRow[c]]++;
                    }
                }
                ReadOnlySpan<ushort> cdf;
                if (table is null)
                {
                    var rowCdf = prepared.Cdf.AsSpan(row * hidden * lp, hidden * lp);
                    for (var c = 0; c < hidden; c++)
                    {
                        Cdf.Build(rowCounts.Slice(c * maxBins, maxBins), (ulong)tokens, rowCdf.Slice(c * lp, lp));
                    }
                    cdf = rowCdf;
                }
                else
                {
                    cdf = table.Cdf.AsSpan(row * hidden * lp, hidden * lp);
                }

                for (var d = 0; d < dataChunks; d++)
                {
                    var t0 = d * DataChunkTokens;
                    var n = Math.Min(DataChunkTokens, tokens - t0);
                    var region = prepared.Streams.AsSpan(((row * dataChunks) + d) * regionBytes, regionBytes);
                    var lengths = prepared.Lengths.AsSpan(((d * rows) + row) * hidden, hidden);
                    var position = 0;
                    for (var c = 0; c < hidden; c++)
                    {
                        var input = rowSymbols[((t0 * hidden) + c)..];
                        var length = _reference
                            ? ArithmeticCoder.EncodeReference(input, hidden, n, cdf.Slice(c * lp, lp), region.Slice(position, maxStream))
                            : ArithmeticCoder.Encode(input, hidden, n, cdf.Slice(c * lp, lp), region[position..]);
                        lengths[c] = (ushort)length;
                        position += length;
                    }
                    prepared.SectionBytes[(row * dataChunks) + d] = position;
                }
            });

            var headerBytes = FixedHeaderSize + rows;
            var rawSize = headerBytes + rawBytes + ChecksumSize;
            if (nonFinite != 0)
            {
                prepared.SetRaw(rawSize, "non-finite values");
                return prepared;
            }
            long size;
            if (_version == Version1)
            {
                size = headerBytes + (table is null ? (long)rows * hidden * lp * 2 : TableIdSize) + ((long)rows * tokens * item) + ChecksumSize
                    + ((long)dataChunks * rows * hidden * 2);
            }
            else
            {
                prepared.BuildSideInfo(counts, table is null);
                size = headerBytes + (table is null ? 0 : TableIdSize) + 4 + prepared.SideInfo.Written.Length + ChecksumSize;
            }
            for (var i = 0; i < rows * dataChunks; i++)
            {
                size += prepared.SectionBytes[i];
            }
            if (size >= rawSize)
            {
                prepared.SetRaw(rawSize, $"coded {size} bytes >= raw {rawSize} bytes");
            }
            else
            {
                prepared.Mode = table is null ? CacheGenMode.Coded : CacheGenMode.SharedTable;
                prepared.Size = size;
            }
            if (shared is not null && table is null)
            {
                shared.Observe(bins, hidden, counts.AsSpan(0, rows * hidden * maxBins), tokens);
            }
            return prepared;
        }
        catch
        {
            prepared.Dispose();
            throw;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(symbols);
            ArrayPool<uint>.Shared.Return(counts);
        }
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
            var dataChunks = (Tokens + DataChunkTokens - 1) / DataChunkTokens;
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
            BinaryPrimitives.WriteInt32LittleEndian(destination[20..], DataChunkTokens);
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
                    var chunks = (Tokens + DataChunkTokens - 1) / DataChunkTokens;
                    var region = Hidden * ArithmeticCoder.MaxStreamBytes(Math.Min(Tokens, DataChunkTokens));
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
                var dataChunks = (Tokens + DataChunkTokens - 1) / DataChunkTokens;
                var regionBytes = Hidden * ArithmeticCoder.MaxStreamBytes(Math.Min(Tokens, DataChunkTokens));
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

    // ----------------------------------------------------------------------------------------------------------------
    // Decode

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
            || !KvDTypes.FromWireCode(blob[6], out var dtype) || !IsSupported(dtype))
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
        if (layers <= 0 || tokens <= 0 || hidden <= 0 || dataChunkTokens is <= 0 or > DataChunkTokens
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
            Version = version, Mode = mode, DType = dtype, Layers = layers, Tokens = tokens, Hidden = hidden, Lp = lp, Bins = bins,
            DataChunkTokensInBlob = dataChunkTokens, TableId = tableId, DataChunks = dataChunks,
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

    /// <summary>
    /// Decodes a parsed blob into <paramref name="output"/> (<see cref="ParsedBlob.ChunkMetadata"/>'s byte length).
    /// <paramref name="table"/> is required for <see cref="CacheGenMode.SharedTable"/> blobs and must match their geometry.
    /// </summary>
    public void Decode(ReadOnlyMemory<byte> blob, ParsedBlob parsed, CacheGenTable? table, Memory<byte> output)
    {
        if (parsed.Mode == CacheGenMode.Raw)
        {
            blob.Span.Slice(parsed.PayloadOffset, output.Length).CopyTo(output.Span);
            return;
        }
        if (parsed.Mode == CacheGenMode.SharedTable && !Matches(table, parsed))
        {
            throw new ArgumentException("The shared table does not match the blob.", nameof(table));
        }
        var rows = 2 * parsed.Layers;
        var tokens = parsed.Tokens;
        var hidden = parsed.Hidden;
        var lp = parsed.Lp;
        var item = parsed.DType.ItemSize();
        var dataChunks = parsed.DataChunks;
        var step = parsed.DataChunkTokensInBlob;
        ForEachRow(rows, row =>
        {
            var symbols = ArrayPool<byte>.Shared.Rent(tokens * hidden);
            try
            {
                var span = blob.Span;
                var cdf = parsed.Mode == CacheGenMode.Coded
                    ? parsed.Cdf.AsSpan(row * hidden * lp, hidden * lp)
                    : table!.Cdf.AsSpan(row * hidden * lp, hidden * lp);
                for (var d = 0; d < dataChunks; d++)
                {
                    var t0 = d * step;
                    var n = Math.Min(step, tokens - t0);
                    var first = ((d * rows) + row) * hidden;
                    var starts = parsed.StreamStarts.AsSpan(first, hidden);
                    var lengths = parsed.StreamLengths.AsSpan(first, hidden);
                    var c = _reference || n > ArithmeticCoder.WideMaxCount ? 0 : DecodeLanes(span, starts, lengths, cdf, lp, symbols.AsSpan(t0 * hidden), hidden, n);
                    for (; c < hidden; c++)
                    {
                        var stream = span.Slice(starts[c], lengths[c]);
                        var destination = symbols.AsSpan((t0 * hidden) + c);
                        if (_reference)
                        {
                            ArithmeticCoder.DecodeReference(stream, cdf.Slice(c * lp, lp), destination, hidden, n);
                        }
                        else if (Simd >= SimdPath.Avx2)
                        {
                            ArithmeticCoder.Decode(stream, cdf.Slice(c * lp, lp), destination, hidden, n);
                        }
                        else
                        {
                            ArithmeticCoder.DecodeScalar(stream, cdf.Slice(c * lp, lp), destination, hidden, n);
                        }
                    }
                }
                var rowBins = parsed.Bins.RowBins(row);
                var top = (byte)(2 * (int)Quantizer.Levels(rowBins));
                // A valid stream never holds a symbol above 2M; clamp so that a forged one cannot leave the value range.
                ClampSymbols(symbols.AsSpan(0, tokens * hidden), top);
                var scales = parsed.Scales.AsSpan(row * tokens, tokens);
                var destinationRow = output.Span.Slice(row * tokens * hidden * item, tokens * hidden * item);
                for (var t = 0; t < tokens; t++)
                {
                    var tokenSymbols = symbols.AsSpan(t * hidden, hidden);
                    if (_reference)
                    {
                        Quantizer.DequantizeRowReference(parsed.DType, tokenSymbols, rowBins, scales[t], destinationRow.Slice(t * hidden * item, hidden * item));
                    }
                    else
                    {
                        Quantizer.DequantizeRow(parsed.DType, tokenSymbols, rowBins, scales[t], destinationRow.Slice(t * hidden * item, hidden * item));
                    }
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(symbols);
            }
        });
    }

    /// <summary>
    /// Decodes channels <c>0 .. returned</c> of one (row, data chunk) several streams at a time on <see cref="Simd"/>'s
    /// lane decoder (16 lanes with AVX-512, 8 with AVX2, 4 with Vector128, then narrower ones for the channels left
    /// over); the caller decodes the remaining channels one stream at a time.
    /// </summary>
    private int DecodeLanes(ReadOnlySpan<byte> span, ReadOnlySpan<int> starts, ReadOnlySpan<int> lengths, ReadOnlySpan<ushort> cdf, int lp, Span<byte> symbols, int hidden, int n)
    {
        var c = 0;
        if (Simd >= SimdPath.Avx512 && ArithmeticCoder.WideSupported)
        {
            for (; c + ArithmeticCoder.WideLanes <= hidden; c += ArithmeticCoder.WideLanes)
            {
                ArithmeticCoder.DecodeWide(span, starts[c..], lengths[c..], cdf.Slice(c * lp, ArithmeticCoder.WideLanes * lp), lp, symbols[c..], hidden, n);
            }
        }
        if (Simd >= SimdPath.Avx2 && ArithmeticCoder.Avx2Supported)
        {
            for (; c + ArithmeticCoder.Avx2Lanes <= hidden; c += ArithmeticCoder.Avx2Lanes)
            {
                ArithmeticCoder.DecodeAvx2(span, starts[c..], lengths[c..], cdf.Slice(c * lp, ArithmeticCoder.Avx2Lanes * lp), lp, symbols[c..], hidden, n);
            }
        }
        if (Simd >= SimdPath.Vector128)
        {
            for (; c + ArithmeticCoder.Vector128Lanes <= hidden; c += ArithmeticCoder.Vector128Lanes)
            {
                ArithmeticCoder.DecodeVector128(span, starts[c..], lengths[c..], cdf.Slice(c * lp, ArithmeticCoder.Vector128Lanes * lp), lp, symbols[c..], hidden, n);
            }
        }
        return c;
    }

    private static void ClampSymbols(Span<byte> symbols, byte top)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var limit = Vector256.Create(top);
            ref var start = ref MemoryMarshal.GetReference(symbols);
            for (; i + Vector256<byte>.Count <= symbols.Length; i += Vector256<byte>.Count)
            {
                Vector256.Min(Vector256.LoadUnsafe(ref start, (nuint)i), limit).StoreUnsafe(ref start, (nuint)i);
            }
        }
        for (; i < symbols.Length; i++)
        {
            symbols[i] = Math.Min(symbols[i], top);
        }
    }

    /// <summary>True when <paramref name="table"/> has the blob's geometry and bins.</summary>
    public static bool Matches(CacheGenTable? table, ParsedBlob parsed) =>
        table is not null && table.Id == parsed.TableId && table.Hidden == parsed.Hidden && table.Bins.SameAs(parsed.Bins);
}
