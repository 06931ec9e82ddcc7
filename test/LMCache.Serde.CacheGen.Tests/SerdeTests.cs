using System.Buffers.Binary;
using LMCache.Core.Configuration;
using LMCache.Core.Diagnostics;
using LMCache.Core.Memory;
using LMCache.Core.Serde;
using LMCache.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace LMCache.Serde.CacheGen.Tests;

public sealed class SerdeTests : IDisposable
{
    private readonly NativeSlabAllocator _allocator = new(256L << 20);

    public void Dispose()
    {
        Assert.Equal(0, _allocator.OutstandingObjects);
        _allocator.Dispose();
    }

    public static TheoryData<KvDType, int, int, int> Shapes => new()
    {
        { KvDType.BFloat16, 4, 256, 64 },
        { KvDType.BFloat16, 12, 300, 40 },
        { KvDType.Float16, 3, 513, 96 },
        { KvDType.Float32, 2, 1000, 33 },
        { KvDType.BFloat16, 1, 64, 128 },
    };

    private static byte[] Blob(MemoryObject serialized) => serialized.Span.ToArray();

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Round_trip_is_within_half_a_step_and_fast_path_equals_reference(KvDType dtype, int layers, int tokens, int hidden)
    {
        var bytes = KvData.ToBytes(KvData.Values(2 * layers, tokens, hidden, seed: layers * 1000 + tokens), dtype);
        using var chunk = KvData.Chunk(_allocator, dtype, layers, tokens, hidden, bytes);
        var bins = CacheGenBins.Default(layers);

        // The serde's blob, the single-thread fast codec's and the scalar reference codec's are byte-identical.
        var serde = new CacheGenSerde(new CacheGenOptions { Threads = 4 });
        using var serialized = serde.Serialize(chunk, _allocator)!;
        Assert.NotNull(serialized);
        Assert.Equal(MemoryFormat.BinaryBuffer, serialized.Metadata.Format);
        Assert.Equal(KvDType.None, serialized.Metadata.DType);
        Assert.Equal(KvShape.Bytes(serialized.Length), serialized.Metadata.Shape);
        Assert.Equal((byte)CacheGenMode.Coded, serialized.Span[5]);
        Assert.Equal(Blob(serialized), EncodeWith(new CacheGenCodec(1), chunk, dtype, layers, tokens, hidden, bins));
        Assert.Equal(Blob(serialized), EncodeWith(new CacheGenCodec(1, reference: true), chunk, dtype, layers, tokens, hidden, bins));

        using var restored = serde.Deserialize(serialized, _allocator)!;
        Assert.NotNull(restored);
        Assert.Equal(chunk.Metadata, restored.Metadata);

        // The reference decoder produces the same bytes.
        Assert.True(CacheGenContainer.TryParse(serialized.Span, out var parsed, out _));
        using var parsedBlob = parsed!;
        Assert.Equal(CacheGenContainer.Version, parsedBlob.Version);
        var referenceOut = new byte[restored.Length];
        new CacheGenCodec(1, reference: true).Decode(serialized.Memory, parsedBlob, null, referenceOut);
        Assert.Equal(referenceOut, restored.Span.ToArray());

        // A version-1 container of the same chunk (raw CDFs, lengths and scales) is larger and decodes to the same bytes.
        var version1 = EncodeWith(new CacheGenCodec(1, version: CacheGenContainer.Version1), chunk, dtype, layers, tokens, hidden, bins);
        Assert.Equal(CacheGenContainer.Version1, version1[4]);
        Assert.True(version1.Length > serialized.Length, $"v1 {version1.Length} bytes, v2 {serialized.Length} bytes");
        using (var stored1 = KvData.Stored(_allocator, version1))
        using (var restored1 = serde.Deserialize(stored1, _allocator)!)
        {
            Assert.Equal(restored.Span.ToArray(), restored1.Span.ToArray());
        }

        // Element-wise bound against the token's scale m: |y − x| ≤ m/(2M) (+ float32 ulps + half an output ulp).
        var item = dtype.ItemSize();
        for (var row = 0; row < 2 * layers; row++)
        {
            var levels = (bins.RowBins(row) / 2) - 1;
            for (var t = 0; t < tokens; t++)
            {
                var offset = ((row * tokens) + t) * hidden;
                var m = 0f;
                for (var c = 0; c < hidden; c++)
                {
                    m = Math.Max(m, Math.Abs(KvData.Read(bytes, dtype, offset + c)));
                }
                for (var c = 0; c < hidden; c++)
                {
                    var x = KvData.Read(bytes, dtype, offset + c);
                    var y = KvData.Read(restored.Span, dtype, offset + c);
                    var outputUlp = item == 2 ? Math.Abs(y) / (dtype == KvDType.BFloat16 ? 128f : 1024f) + 6e-8f : 0f;
                    Assert.True(Math.Abs(y - x) <= (m / (2 * levels) * 1.0001f) + (m * 1e-6f) + outputUlp, $"row {row} token {t} channel {c}: x={x} y={y} m={m}");
                }
            }
        }
    }

    private byte[] EncodeWith(CacheGenCodec codec, MemoryObject chunk, KvDType dtype, int layers, int tokens, int hidden, CacheGenBins bins)
    {
        using var prepared = codec.Prepare(chunk.Memory, dtype, layers, tokens, hidden, bins, null);
        var blob = new byte[prepared.Size];
        prepared.WriteTo(blob);
        return blob;
    }

    [Fact]
    public void Every_stream_decodes_alone()
    {
        const int layers = 2, tokens = 300, hidden = 48;
        var dtype = KvDType.BFloat16;
        var bytes = KvData.ToBytes(KvData.Values(2 * layers, tokens, hidden, seed: 21), dtype);
        using var chunk = KvData.Chunk(_allocator, dtype, layers, tokens, hidden, bytes);
        using var serialized = new CacheGenSerde().Serialize(chunk, _allocator)!;
        var blob = Blob(serialized);
        Assert.True(CacheGenContainer.TryParse(blob, out var parsed, out _));
        using var parsedBlob = parsed!;
        var bins = CacheGenBins.Default(layers);
        var lp = parsedBlob.Lp;
        Assert.Equal(2, parsedBlob.DataChunks);
        var streams = 0;
        var expectedStart = parsedBlob.StreamStarts[0];
        for (var d = 0; d < parsedBlob.DataChunks; d++)
        {
            var t0 = d * 256;
            var n = Math.Min(256, tokens - t0);
            for (var row = 0; row < 2 * layers; row++)
            {
                for (var c = 0; c < hidden; c++)
                {
                    // Streams lie back to back in (data chunk, row, channel) order up to the checksum.
                    var index = (((d * 2 * layers) + row) * hidden) + c;
                    var position = parsedBlob.StreamStarts[index];
                    var length = parsedBlob.StreamLengths[index];
                    Assert.Equal(expectedStart, position);
                    expectedStart += length;
                    var alone = blob.AsSpan(position, length).ToArray(); // exactly the stream, nothing after it
                    var cdf = parsedBlob.Cdf.AsSpan((((row * hidden) + c) * lp), lp).ToArray();
                    var decoded = new byte[n];
                    ArithmeticCoder.Decode(alone, cdf, decoded, 1, n);
                    for (var i = 0; i < n; i++)
                    {
                        var symbols = new byte[hidden];
                        var rowBytes = bytes.AsSpan((((row * tokens) + t0 + i) * hidden) * 2, hidden * 2);
                        Quantizer.QuantizeRowReference(dtype, rowBytes, bins.RowBins(row), symbols, out _);
                        Assert.Equal(symbols[c], decoded[i]);
                    }
                    streams++;
                }
            }
        }
        Assert.Equal(blob.Length - CacheGenContainer.ChecksumSize, expectedStart);
        Assert.Equal(2 * 2 * layers * hidden, streams);
    }

    [Fact]
    public void Corrupted_truncated_and_empty_blobs_are_misses_with_a_log_line()
    {
        var logger = new FakeLogger<CacheGenSerde>();
        var serde = new CacheGenSerde(logger: logger);
        using var chunk = KvData.Chunk(_allocator, KvDType.BFloat16, 2, 256, 64, seed: 4);
        using var serialized = serde.Serialize(chunk, _allocator)!;
        var blob = Blob(serialized);
        var random = new Random(1);

        var cases = new List<byte[]> { Array.Empty<byte>(), blob[..1], blob[..35], blob[..^1], blob[..(blob.Length / 2)], blob.Concat(new byte[] { 0 }).ToArray() };
        for (var i = 0; i < 200; i++)
        {
            var damaged = (byte[])blob.Clone();
            damaged[random.Next(damaged.Length)] ^= (byte)(1 << random.Next(8));
            cases.Add(damaged);
        }
        var version = (byte[])blob.Clone();
        version[4] = 3;
        cases.Add(version);

        foreach (var bad in cases)
        {
            if (bad.Length == 0)
            {
                // An empty object cannot be allocated from a slab; a zero-length span is what the remote tier would hand over.
                Assert.False(CacheGenContainer.TryParse(bad, out _, out var reason));
                Assert.Equal("empty", reason);
                continue;
            }
            using var stored = KvData.Stored(_allocator, bad);
            Assert.Null(serde.Deserialize(stored, _allocator));
        }
        Assert.Equal(cases.Count - 1, logger.Collector.GetSnapshot().Count(r => r.Id.Id == 6001 && r.Level == LogLevel.Warning));

        // The intact blob still decodes, and a KV-format object handed to cachegen is rejected.
        using (var stored = KvData.Stored(_allocator, blob))
        using (var restored = serde.Deserialize(stored, _allocator))
        {
            Assert.NotNull(restored);
        }
        Assert.Null(serde.Deserialize(chunk, _allocator));
    }

    [Fact]
    public void A_forged_blob_with_a_valid_checksum_still_decodes_within_the_token_scale()
    {
        // 16 bins: symbols 0..14 occur, the coder's alphabet is 0..15. Replace every table with one that makes symbol 15
        // (never produced by the quantizer) almost certain, and re-seal the checksum: decoding must not leave [-m, m].
        var options = new CacheGenOptions { KeyBins = "16", ValueBins = "16" };
        var serde = new CacheGenSerde(options);
        var bytes = KvData.ToBytes(KvData.Values(2, 256, 32, seed: 41), KvDType.BFloat16);
        using var chunk = KvData.Chunk(_allocator, KvDType.BFloat16, 1, 256, 32, bytes);
        // Version 1 stores the CDFs themselves, so a forger can write any valid table.
        var blob = EncodeWith(new CacheGenCodec(1, version: CacheGenContainer.Version1), chunk, KvDType.BFloat16, 1, 256, 32, options.BinsFor(1));
        Assert.True(CacheGenContainer.TryParse(blob, out var parsed, out _));
        using var parsedBlob = parsed!;
        Assert.Equal(17, parsedBlob.Lp);
        for (var r = 0; r < 2 * 32; r++)
        {
            for (var i = 0; i < 17; i++)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(blob.AsSpan(parsedBlob.CdfOffset + (((r * 17) + i) * 2)), (ushort)(i < 16 ? i : 65535));
            }
        }
        BinaryPrimitives.WriteUInt64LittleEndian(blob.AsSpan(blob.Length - 8), System.IO.Hashing.XxHash64.HashToUInt64(blob.AsSpan(0, blob.Length - 8)));
        using var stored = KvData.Stored(_allocator, blob);
        using var restored = serde.Deserialize(stored, _allocator)!;
        Assert.NotNull(restored);
        for (var row = 0; row < 2; row++)
        {
            for (var t = 0; t < 256; t++)
            {
                var offset = ((row * 256) + t) * 32;
                var m = 0f;
                for (var c = 0; c < 32; c++)
                {
                    m = Math.Max(m, Math.Abs(KvData.Read(bytes, KvDType.BFloat16, offset + c)));
                }
                for (var c = 0; c < 32; c++)
                {
                    Assert.True(Math.Abs(KvData.Read(restored.Span, KvDType.BFloat16, offset + c)) <= m * 1.004f);
                }
            }
        }
    }

    [Fact]
    public void Forged_side_information_with_a_valid_checksum_is_a_miss()
    {
        var logger = new FakeLogger<CacheGenSerde>();
        var serde = new CacheGenSerde(logger: logger);
        using var chunk = KvData.Chunk(_allocator, KvDType.BFloat16, 2, 256, 64, seed: 8);
        using var serialized = serde.Serialize(chunk, _allocator)!;
        var blob = Blob(serialized);
        var sideOffset = CacheGenContainer.FixedHeaderSize + 4;
        var sideLength = BinaryPrimitives.ReadInt32LittleEndian(blob.AsSpan(sideOffset));
        var cases = new List<byte[]>();
        foreach (var length in new[] { sideLength - 1, sideLength + 1, -1, int.MaxValue })
        {
            var forged = (byte[])blob.Clone();
            BinaryPrimitives.WriteInt32LittleEndian(forged.AsSpan(sideOffset), length);
            cases.Add(forged);
        }
        // All-ones side information: every Rice code escapes, the values overflow or run past the section.
        var ones = (byte[])blob.Clone();
        ones.AsSpan(sideOffset + 4, sideLength).Fill(0xFF);
        cases.Add(ones);
        foreach (var forged in cases)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(forged.AsSpan(forged.Length - 8), CacheGenContainer.Checksum(CacheGenContainer.Version, forged.AsSpan(0, forged.Length - 8)));
            using var stored = KvData.Stored(_allocator, forged);
            Assert.Null(serde.Deserialize(stored, _allocator));
        }
        Assert.Equal(cases.Count, logger.Collector.GetSnapshot().Count(r => r.Id.Id == 6001));
    }

    [Fact]
    public void Non_finite_chunks_and_tiny_tails_are_stored_losslessly()
    {
        var serde = new CacheGenSerde();
        var values = KvData.Values(4, 16, 64, seed: 8);
        values[77] = float.NaN;
        values[78] = float.PositiveInfinity;
        var bytes = KvData.ToBytes(values, KvDType.BFloat16);
        using var chunk = KvData.Chunk(_allocator, KvDType.BFloat16, 2, 16, 64, bytes);
        using var serialized = serde.Serialize(chunk, _allocator)!;
        Assert.Equal((byte)CacheGenMode.Raw, serialized.Span[5]);
        using var restored = serde.Deserialize(serialized, _allocator)!;
        Assert.Equal(bytes, restored.Span.ToArray());

        // One token: the per-chunk tables alone exceed the raw bytes, so the blob is a lossless copy, never larger.
        using var tail = KvData.Chunk(_allocator, KvDType.BFloat16, 2, 1, 64, seed: 9);
        using var tailBlob = serde.Serialize(tail, _allocator)!;
        Assert.Equal((byte)CacheGenMode.Raw, tailBlob.Span[5]);
        Assert.True(tailBlob.Length <= tail.Length + 64);
        using var tailBack = serde.Deserialize(tailBlob, _allocator)!;
        Assert.Equal(tail.Span.ToArray(), tailBack.Span.ToArray());
    }

    [Fact]
    public void Unsupported_chunks_are_not_serialized()
    {
        var serde = new CacheGenSerde();
        Assert.True(_allocator.TryAllocate(new MemoryObjectMetadata(KvShape.Kv2Ltd(2, 4, 8), KvDType.UInt8, MemoryFormat.KV2LTD), out var bytes));
        using (bytes)
        {
            Assert.Null(serde.Serialize(bytes, _allocator));
        }
    }

    [Fact]
    public async Task Shared_tables_shrink_blobs_and_a_reader_without_the_table_misses()
    {
        using var folder = new TempFolder();
        var logger = new FakeLogger<CacheGenSerde>();
        var options = new CacheGenOptions { SharedTables = true, ProfileChunks = 2, TableDirectory = folder.Path, Threads = 2 };
        var writer = new CacheGenSerde(options, logger: logger);
        var sizes = new List<int>();
        var blobs = new List<byte[]>();
        var originals = new List<byte[]>();
        for (var i = 0; i < 4; i++)
        {
            using var chunk = KvData.Chunk(_allocator, KvDType.BFloat16, 2, 256, 64, seed: 100 + i);
            originals.Add(chunk.Span.ToArray());
            using var serialized = writer.Serialize(chunk, _allocator)!;
            sizes.Add(serialized.Length);
            blobs.Add(Blob(serialized));
        }
        Assert.Equal((byte)CacheGenMode.Coded, blobs[0][5]);
        Assert.Equal((byte)CacheGenMode.Coded, blobs[1][5]);
        Assert.Equal((byte)CacheGenMode.SharedTable, blobs[2][5]);
        Assert.Equal((byte)CacheGenMode.SharedTable, blobs[3][5]);
        // The compact per-chunk counts (container version 2) are a few percent of the blob; sharing removes them.
        Assert.True(sizes[2] < sizes[0], $"shared {sizes[2]} vs per-chunk {sizes[0]}");

        // The writer decodes its own blobs, within the error bound of the per-chunk decode (same quantization).
        var perChunk = new CacheGenSerde();
        using (var stored = KvData.Stored(_allocator, blobs[3]))
        using (var viaShared = writer.Deserialize(stored, _allocator)!)
        using (var original = KvData.Chunk(_allocator, KvDType.BFloat16, 2, 256, 64, originals[3]))
        using (var viaOwn = perChunk.Serialize(original, _allocator)!)
        using (var own = perChunk.Deserialize(viaOwn, _allocator)!)
        {
            Assert.Equal(own.Span.ToArray(), viaShared.Span.ToArray());
        }

        // A reader with no table store misses (and says so); the per-chunk blobs still decode there.
        var stranger = new CacheGenSerde(logger: logger);
        using (var stored = KvData.Stored(_allocator, blobs[3]))
        {
            Assert.Null(stranger.Deserialize(stored, _allocator));
        }
        Assert.Contains(logger.Collector.GetSnapshot(), r => r.Id.Id == 6002);
        using (var stored = KvData.Stored(_allocator, blobs[0]))
        using (var restored = stranger.Deserialize(stored, _allocator))
        {
            Assert.NotNull(restored);
        }

        // A reader sharing the table folder misses once, loads the table in the background, then decodes.
        await writer.SharedTables.SavesCompleted;
        var reader = new CacheGenSerde(new CacheGenOptions { TableDirectory = folder.Path });
        Assert.True(CacheGenContainer.TryParse(blobs[3], out var parsed, out _));
        using (var stored = KvData.Stored(_allocator, blobs[3]))
        {
            var first = reader.Deserialize(stored, _allocator);
            first?.Release();
            Assert.NotNull(await reader.SharedTables.LoadAsync(parsed!.TableId, TestContext.Current.CancellationToken));
            using var restored = reader.Deserialize(stored, _allocator);
            Assert.NotNull(restored);
        }

        // A tampered table file is rejected, so blobs stay misses instead of decoding with a wrong table.
        var file = Directory.GetFiles(folder.Path, "*.lmct").Single();
        var tampered = await File.ReadAllBytesAsync(file, TestContext.Current.CancellationToken);
        tampered[40] ^= 1;
        await File.WriteAllBytesAsync(file, tampered, TestContext.Current.CancellationToken);
        var late = new CacheGenSerde(new CacheGenOptions { TableDirectory = folder.Path });
        Assert.Null(await late.SharedTables.LoadAsync(parsed!.TableId, TestContext.Current.CancellationToken));
    }

    [Fact]
    public void Table_serialization_round_trips()
    {
        var bins = CacheGenBins.Default(3);
        var counts = new ulong[6 * 8 * 32];
        var random = new Random(2);
        for (var i = 0; i < counts.Length; i++)
        {
            counts[i] = (ulong)random.Next(0, 1000);
        }
        // every (row, channel) must sum to the token count for a valid table
        var tokens = 0ul;
        for (var r = 0; r < 6 * 8; r++)
        {
            var sum = 0ul;
            for (var s = 0; s < 32; s++)
            {
                sum += counts[(r * 32) + s];
            }
            tokens = Math.Max(tokens, sum);
        }
        for (var r = 0; r < 6 * 8; r++)
        {
            var sum = 0ul;
            for (var s = 0; s < 32; s++)
            {
                sum += counts[(r * 32) + s];
            }
            counts[(r * 32) + 5] += tokens - sum;
        }
        var table = CacheGenTable.FromCounts(bins, 8, counts, tokens);
        var parsed = CacheGenTable.TryParse(table.Serialized.Span);
        Assert.NotNull(parsed);
        Assert.Equal(table.Id, parsed.Id);
        Assert.Equal(table.Cdf, parsed.Cdf);
        Assert.Null(CacheGenTable.TryParse(table.Serialized.Span[..^1]));
    }

    [Fact]
    public void Default_bins_follow_the_original()
    {
        var b32 = CacheGenBins.Default(32);
        Assert.Equal(Enumerable.Repeat(32, 10).Concat(Enumerable.Repeat(16, 22)), Enumerable.Range(0, 32).Select(b32.KeyBins));
        Assert.Equal(Enumerable.Repeat(32, 2).Concat(Enumerable.Repeat(16, 30)), Enumerable.Range(0, 32).Select(b32.ValueBins));
        var b10 = CacheGenBins.Default(10);
        Assert.All(Enumerable.Range(0, 10), l => Assert.Equal(32, b10.KeyBins(l)));
        Assert.Equal(16, b10.ValueBins(2));
        var b4 = CacheGenBins.Default(4);
        Assert.All(Enumerable.Range(0, 4), l => Assert.Equal((32, 32), (b4.KeyBins(l), b4.ValueBins(l))));
        Assert.Equal(32, b32.MaxBinCount);
    }

    [Fact]
    public void Bins_are_configured_in_extra_config()
    {
        var engine = new LMCacheEngineOptions
        {
            RemoteSerde = "cachegen",
            ExtraConfig = new Dictionary<string, object?>
            {
                ["cachegen_key_bins"] = "2*32,16",
                ["cachegen_value_bins"] = new List<object?> { 16, 12 },
                ["cachegen_shared_tables"] = "true",
                ["cachegen_profile_chunks"] = 3,
            },
        };
        var options = CacheGenOptions.FromEngineOptions(engine);
        var bins = options.BinsFor(4);
        Assert.Equal(new[] { 32, 32, 16, 16 }, Enumerable.Range(0, 4).Select(bins.KeyBins));
        Assert.Equal(new[] { 16, 12, 12, 12 }, Enumerable.Range(0, 4).Select(bins.ValueBins));
        Assert.True(options.SharedTables);
        Assert.Equal(3, options.ProfileChunks);

        var registry = CacheGenSerde.Register(new SerdeRegistry());
        var serde = Assert.IsType<CacheGenSerde>(registry.Create("cachegen", engine));
        Assert.True(serde.UsesSharedTables);

        // Configured bins travel in the blob: a default-configured reader decodes it.
        using var chunk = KvData.Chunk(_allocator, KvDType.BFloat16, 4, 256, 32, seed: 12);
        using var serialized = new CacheGenSerde(new CacheGenOptions { KeyBins = options.KeyBins, ValueBins = options.ValueBins }).Serialize(chunk, _allocator)!;
        Assert.True(CacheGenContainer.TryParse(serialized.Span, out var parsed, out _));
        Assert.True(parsed!.Bins.SameAs(bins));
        using var restored = new CacheGenSerde().Deserialize(serialized, _allocator);
        Assert.NotNull(restored);

        engine.ExtraConfig = new Dictionary<string, object?> { ["cachegen_key_bins"] = "32,3" };
        var error = Assert.Throws<LMCacheConfigurationException>(() => CacheGenOptions.FromEngineOptions(engine));
        Assert.Contains("cachegen_key_bins", error.Message, StringComparison.Ordinal);
        engine.ExtraConfig = new Dictionary<string, object?> { ["cachegen_threads"] = 0 };
        Assert.Throws<LMCacheConfigurationException>(() => CacheGenOptions.FromEngineOptions(engine));
    }
}
