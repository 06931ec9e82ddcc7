using System.Buffers;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using LMCache.Core.Memory;
using LMCache.Core.Simd;

namespace LMCache.Serde.CacheGen;
/// <summary>
/// The cachegen numerics: quantizes and arithmetic-codes a <c>KV_2LTD</c> chunk into a
/// <see cref="CacheGenContainer.PreparedEncoding"/>, and decodes a parsed container back (the container's bytes — header,
/// version, stored tables, checksum — are <see cref="CacheGenContainer"/>'s business; layout in <c>docs/cachegen.md</c>). Streams are
/// independent per (symbol row, channel, ≤ 256-token data chunk); work is spread over symbol rows (2·layers of them)
/// on up to <c>maxDegreeOfParallelism</c> threads. Scratch comes from <see cref="ArrayPool{T}.Shared"/>.
/// </summary>
internal sealed class CacheGenCodec
{
    /// <summary>Tokens per data chunk (the reference's <c>CACHEGEN_GPU_MAX_TOKENS_PER_CHUNK</c>).</summary>
    public const int DataChunkTokens = 256;

    private readonly ParallelOptions _parallel;
    private readonly bool _reference;
    private readonly byte _version;

    /// <param name="maxDegreeOfParallelism">Threads used per chunk (1 = the calling thread only).</param>
    /// <param name="reference">Use the plain scalar quantizer and bit-at-a-time coder (tests compare both paths).</param>
    /// <param name="version">Container version to write (<see cref="CacheGenContainer.Version"/>, or <see cref="CacheGenContainer.Version1"/> for compatibility tests).</param>
    /// <param name="simd">The vector path of the fast coder (<see cref="SimdPaths.Current"/> when null), capped at what the CPU has.</param>
    public CacheGenCodec(int maxDegreeOfParallelism, bool reference = false, byte version = CacheGenContainer.Version, SimdPath? simd = null)
    {
        Simd = SimdPaths.Cap(simd ?? SimdPaths.Current);
        if (version is not (CacheGenContainer.Version or CacheGenContainer.Version1))
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
    /// The result knows its exact container size; write it with <see cref="CacheGenContainer.PreparedEncoding.WriteTo"/>, then dispose it.
    /// </summary>
    public CacheGenContainer.PreparedEncoding Prepare(ReadOnlyMemory<byte> chunk, KvDType dtype, int layers, int tokens, int hidden, CacheGenBins bins, CacheGenSharedTables? shared)
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
        var prepared = new CacheGenContainer.PreparedEncoding(dtype, layers, tokens, hidden, bins, chunk, _version);
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

            var headerBytes = CacheGenContainer.FixedHeaderSize + rows;
            var rawSize = headerBytes + rawBytes + CacheGenContainer.ChecksumSize;
            if (nonFinite != 0)
            {
                prepared.SetRaw(rawSize, "non-finite values");
                return prepared;
            }
            long size;
            if (_version == CacheGenContainer.Version1)
            {
                size = headerBytes + (table is null ? (long)rows * hidden * lp * 2 : CacheGenContainer.TableIdSize) + ((long)rows * tokens * item) + CacheGenContainer.ChecksumSize
                    + ((long)dataChunks * rows * hidden * 2);
            }
            else
            {
                prepared.BuildSideInfo(counts, table is null);
                size = headerBytes + (table is null ? 0 : CacheGenContainer.TableIdSize) + 4 + prepared.SideInfo.Written.Length + CacheGenContainer.ChecksumSize;
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

    // ----------------------------------------------------------------------------------------------------------------
    // Decode

    /// <summary>
    /// Decodes a parsed blob into <paramref name="output"/> (<see cref="CacheGenContainer.ParsedBlob.ChunkMetadata"/>'s byte length).
    /// <paramref name="table"/> is required for <see cref="CacheGenMode.SharedTable"/> blobs and must match their geometry.
    /// </summary>
    public void Decode(ReadOnlyMemory<byte> blob, CacheGenContainer.ParsedBlob parsed, CacheGenTable? table, Memory<byte> output)
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
    public static bool Matches(CacheGenTable? table, CacheGenContainer.ParsedBlob parsed) =>
        table is not null && table.Id == parsed.TableId && table.Hidden == parsed.Hidden && table.Bins.SameAs(parsed.Bins);
}
