using System.Text.Json.Nodes;
using LMCache.Core.Memory;
using LMCache.Serde.CacheGen;

namespace LMCache.Bench;

/// <summary>
/// <c>lmcache bench serde --entropy</c>: how many bits per value the cachegen symbols of real KV need under richer
/// probability models than the original's static per-(layer, K/V, channel) table, to decide whether a context model in
/// the shared-tables mode could pay. The chunks are quantized with the codec's own quantizer
/// (<see cref="Quantizer.QuantizeRowReference"/>, bit-exact with what the serde codes), then each model's code length is
/// measured in sample (an empirical conditional entropy: tables fitted to the very chunks they code, a lower bound that
/// no stored table reaches) and held out (tables counted on other chunks, as a shared table would be).
/// </summary>
internal static class SerdeEntropy
{
    private delegate int Context(int chunk, int row, int token, int channel);

    /// <summary>Adaptive-model prior weight: the shared table counts as this many tokens before a stream's own.</summary>
    private const double PriorWeight = 64;

    /// <summary>
    /// Measures the models on <paramref name="chunks"/> (<c>KV_2LTD</c> bf16, <paramref name="tokens"/> tokens each).
    /// <paramref name="profileChunks"/> is the shared-tables profile of the bench (the first chunks), and
    /// <paramref name="sharedBlobBytesPerChunk"/> the mean size of the shared-table blobs the serde wrote for the other
    /// chunks. What those blobs spend beside the static model's code length (scales, stream lengths, header, table id,
    /// checksum, coder flush) is taken as the per-chunk overhead of any shared-table mode for the implied ratios:
    /// <c>chunk bytes / (bits · values / 8 + overhead)</c>.
    /// </summary>
    public static JsonObject Measure(byte[][] chunks, int layers, int tokens, int hidden, CacheGenBins bins, int profileChunks, double sharedBlobBytesPerChunk)
    {
        var n = chunks.Length;
        var rows = 2 * layers;
        var symbols = new byte[n][];
        var scales = new float[n][];
        for (var j = 0; j < n; j++)
        {
            symbols[j] = new byte[rows * tokens * hidden];
            scales[j] = new float[rows * tokens];
            for (var row = 0; row < rows; row++)
            {
                for (var t = 0; t < tokens; t++)
                {
                    var offset = ((row * tokens) + t) * hidden;
                    if (!Quantizer.QuantizeRowReference(KvDType.BFloat16, chunks[j].AsSpan(offset * 2, hidden * 2), bins.RowBins(row), symbols[j].AsSpan(offset, hidden), out var scaleBits))
                    {
                        throw new InvalidOperationException("the KV holds a non-finite value; the entropy study needs finite KV");
                    }
                    scales[j][(row * tokens) + t] = Quantizer.ScaleToSingle(KvDType.BFloat16, scaleBits);
                }
            }
        }
        var alphabet = new int[rows];
        for (var row = 0; row < rows; row++)
        {
            alphabet[row] = (2 * ((bins.RowBins(row) / 2) - 1)) + 1;
        }
        var maxAlphabet = alphabet.Max();

        // Log2 range of each row's token scales, for the scale buckets.
        var logLow = new float[rows];
        var logHigh = new float[rows];
        for (var row = 0; row < rows; row++)
        {
            logLow[row] = float.MaxValue;
            for (var j = 0; j < n; j++)
            {
                for (var t = 0; t < tokens; t++)
                {
                    var s = scales[j][(row * tokens) + t];
                    if (s > 0)
                    {
                        logLow[row] = Math.Min(logLow[row], MathF.Log2(s));
                        logHigh[row] = Math.Max(logHigh[row], MathF.Log2(s));
                    }
                }
            }
        }

        int Sym(int j, int row, int t, int c) => symbols[j][(((row * tokens) + t) * hidden) + c];
        int Prev4(int j, int row, int t, int c) => t == 0 ? (maxAlphabet + 3) / 4 : Sym(j, row, t - 1, c) / 4;
        int Left4(int j, int row, int t, int c) => c == 0 ? (maxAlphabet + 3) / 4 : Sym(j, row, t, c - 1) / 4;
        int ScaleBucket(int j, int row, int t)
        {
            var s = scales[j][(row * tokens) + t];
            return s <= 0 ? 0 : Math.Clamp((int)((MathF.Log2(s) - logLow[row]) / (logHigh[row] - logLow[row] + 1e-6f) * 8), 0, 7);
        }
        var q = (maxAlphabet + 3) / 4 + 1; // contexts of a "/4" bucket, with one for "none"
        var models = new (string Name, int Contexts, Context Context)[]
        {
            ("static (layer, K/V, channel): the original's model", 1, (j, row, t, c) => 0),
            ("previous token's symbol, same channel", maxAlphabet + 1, (j, row, t, c) => t == 0 ? maxAlphabet : Sym(j, row, t - 1, c)),
            ("previous token's symbol / 4", q, Prev4),
            ("previous token's symbol in 3 classes (below, at, above the middle +-2)", 4, (j, row, t, c) =>
            {
                if (t == 0)
                {
                    return 3;
                }
                var middle = alphabet[row] / 2;
                var p = Sym(j, row, t - 1, c);
                return p < middle - 2 ? 0 : p > middle + 2 ? 2 : 1;
            }),
            ("neighbouring channel's symbol (c - 1), same token", maxAlphabet + 1, (j, row, t, c) => c == 0 ? maxAlphabet : Sym(j, row, t, c - 1)),
            ("neighbouring channel's symbol / 4", q, Left4),
            ("previous layer's symbol / 4, same channel and token", q, (j, row, t, c) => row % layers == 0 ? q - 1 : Sym(j, row - 1, t, c) / 4),
            ("values: the key's symbol / 4, same layer, channel and token", q, (j, row, t, c) => row < layers ? q - 1 : Sym(j, row - layers, t, c) / 4),
            ("token scale bucket (8, log2 over the row's range)", 8, (j, row, t, c) => ScaleBucket(j, row, t)),
            ("token position / 32", 8, (j, row, t, c) => Math.Min(7, t * 8 / tokens)),
            ("previous token / 4 x neighbouring channel / 4", q * q, (j, row, t, c) => (Prev4(j, row, t, c) * q) + Left4(j, row, t, c)),
            ("previous token / 4 x token scale bucket", q * 8, (j, row, t, c) => (Prev4(j, row, t, c) * 8) + ScaleBucket(j, row, t)),
        };

        var all = Enumerable.Range(0, n).ToArray();
        var profile = Enumerable.Range(0, profileChunks).ToArray();
        var measured = Enumerable.Range(profileChunks, n - profileChunks).ToArray();
        var valuesPerChunk = (double)rows * tokens * hidden;
        var chunkBytes = valuesPerChunk * 2;
        double? overhead = null;
        double ImpliedRatio(double bits) => chunkBytes / ((bits * valuesPerChunk / 8) + overhead!.Value);
        var result = new JsonArray();
        foreach (var (name, contexts, context) in models)
        {
            var inSample = Cost(all, all, contexts, context, Smoothing.None);
            var heldOutCdf = Cost(profile, measured, contexts, context, Smoothing.CacheGenCdf);
            var heldOut = Cost(profile, measured, contexts, context, Smoothing.AddHalf);
            double loo = 0;
            foreach (var k in all)
            {
                loo += Cost(all.Where(x => x != k).ToArray(), [k], contexts, context, Smoothing.AddHalf);
            }
            loo /= n;
            overhead ??= sharedBlobBytesPerChunk - (heldOutCdf * valuesPerChunk / 8);
            result.Add(new JsonObject
            {
                ["model"] = name,
                ["contexts"] = contexts,
                ["table_bytes_once_uint16_cdfs"] = 2L * rows * hidden * contexts * (bins.MaxBinCount + 1),
                ["in_sample"] = Round(inSample),
                ["held_out_profile_cdf"] = Round(heldOutCdf),
                ["held_out_profile_add_half"] = Round(heldOut),
                ["held_out_leave_one_chunk_out"] = Round(loo),
                ["implied_ratio_held_out"] = Round(ImpliedRatio(Math.Min(Math.Min(heldOutCdf, heldOut), loo))),
                ["implied_ratio_in_sample"] = Round(ImpliedRatio(inSample)),
            });
        }

        // Each chunk's own table (what mode 0 codes with), tables free.
        double perChunk = 0;
        long values = 0;
        var histogram = new int[maxAlphabet];
        foreach (var j in all)
        {
            for (var row = 0; row < rows; row++)
            {
                for (var c = 0; c < hidden; c++)
                {
                    Array.Clear(histogram);
                    for (var t = 0; t < tokens; t++)
                    {
                        histogram[Sym(j, row, t, c)]++;
                    }
                    perChunk += Entropy(histogram, tokens) * tokens;
                    values += tokens;
                }
            }
        }
        perChunk /= values;

        // Adaptive: each stream starts from the shared (profiled) table as a prior and learns its own counts as it goes.
        var prior = new double[rows * hidden * maxAlphabet];
        foreach (var j in profile)
        {
            for (var row = 0; row < rows; row++)
            {
                for (var t = 0; t < tokens; t++)
                {
                    for (var c = 0; c < hidden; c++)
                    {
                        prior[(((row * hidden) + c) * maxAlphabet) + Sym(j, row, t, c)]++;
                    }
                }
            }
        }
        double adaptive = 0;
        long adaptiveValues = 0;
        var counts = new double[maxAlphabet];
        foreach (var j in measured)
        {
            for (var row = 0; row < rows; row++)
            {
                for (var c = 0; c < hidden; c++)
                {
                    var b = ((row * hidden) + c) * maxAlphabet;
                    var total = 0.0;
                    for (var i = 0; i < alphabet[row]; i++)
                    {
                        total += prior[b + i] + 0.5;
                    }
                    for (var i = 0; i < alphabet[row]; i++)
                    {
                        counts[i] = PriorWeight * (prior[b + i] + 0.5) / total;
                    }
                    var sum = PriorWeight;
                    for (var t = 0; t < tokens; t++)
                    {
                        var s = Sym(j, row, t, c);
                        adaptive -= Math.Log2(counts[s] / sum);
                        counts[s]++;
                        sum++;
                        adaptiveValues++;
                    }
                }
            }
        }
        adaptive /= adaptiveValues;

        // Mutual information pooled over a row's channels (hundreds of thousands of samples per table: little bias).
        var pooledRow = PooledEntropy(1, (j, row, t, c) => 0);
        var pooledChannel = PooledEntropy(hidden, (j, row, t, c) => c);
        var pooledPrevious = PooledEntropy(maxAlphabet + 1, (j, row, t, c) => t == 0 ? maxAlphabet : Sym(j, row, t - 1, c));
        var pooledLeft = PooledEntropy(maxAlphabet + 1, (j, row, t, c) => c == 0 ? maxAlphabet : Sym(j, row, t, c - 1));

        return new JsonObject
        {
            ["unit"] = "bits per quantized value; in_sample = empirical conditional entropy (tables fitted to the chunks they code: a bound no stored table reaches); held_out_profile_* = tables counted on the bench's profiled chunks coding the others, with the original's CDF formula or add-1/2 counts; held_out_leave_one_chunk_out = tables counted on all other chunks, add-1/2, averaged over chunks",
            ["shared_blob_overhead_bytes_per_chunk"] = Math.Round(overhead!.Value),
            ["bits_per_value_for_ratio_4"] = Round(((chunkBytes / 4) - overhead.Value) * 8 / valuesPerChunk),
            ["per_chunk_tables_entropy"] = Round(perChunk),
            ["per_chunk_tables_implied_ratio_if_tables_were_free"] = Round(ImpliedRatio(perChunk)),
            ["adaptive_static_with_shared_prior"] = Round(adaptive),
            ["adaptive_static_with_shared_prior_implied_ratio"] = Round(ImpliedRatio(adaptive)),
            ["adaptive_prior_weight_tokens"] = PriorWeight,
            ["pooled_mutual_information_bits"] = new JsonObject
            {
                ["channel"] = Round(pooledRow - pooledChannel),
                ["previous_token_symbol"] = Round(pooledRow - pooledPrevious),
                ["neighbouring_channel_symbol"] = Round(pooledRow - pooledLeft),
            },
            ["models"] = result,
        };

        double Cost(int[] train, int[] test, int contexts, Context context, Smoothing smoothing)
        {
            var table = new int[rows * hidden * contexts * maxAlphabet];
            foreach (var j in train)
            {
                for (var row = 0; row < rows; row++)
                {
                    for (var t = 0; t < tokens; t++)
                    {
                        for (var c = 0; c < hidden; c++)
                        {
                            table[(((((row * hidden) + c) * contexts) + context(j, row, t, c)) * maxAlphabet) + Sym(j, row, t, c)]++;
                        }
                    }
                }
            }
            if (smoothing == Smoothing.None)
            {
                double h = 0;
                long total = 0;
                for (var b = 0; b < rows * hidden * contexts; b++)
                {
                    var slice = table.AsSpan(b * maxAlphabet, maxAlphabet);
                    var sum = 0;
                    foreach (var x in slice)
                    {
                        sum += x;
                    }
                    h += Entropy(slice, sum) * sum;
                    total += sum;
                }
                return h / total;
            }
            double bits = 0;
            long count = 0;
            foreach (var j in test)
            {
                for (var row = 0; row < rows; row++)
                {
                    var a = alphabet[row];
                    for (var t = 0; t < tokens; t++)
                    {
                        for (var c = 0; c < hidden; c++)
                        {
                            var b = ((((row * hidden) + c) * contexts) + context(j, row, t, c)) * maxAlphabet;
                            var s = Sym(j, row, t, c);
                            long sum = 0, below = 0;
                            for (var i = 0; i < a; i++)
                            {
                                sum += table[b + i];
                                below += i < s ? table[b + i] : 0;
                            }
                            double p;
                            if (smoothing == Smoothing.AddHalf)
                            {
                                p = (table[b + s] + 0.5) / (sum + (0.5 * a));
                            }
                            else if (sum == 0)
                            {
                                p = 1.0 / a;
                            }
                            else
                            {
                                // cdf[i] = floor((65535 - maxBins) * cum_i / total) + i, widths out of 65536.
                                var scale = 65535L - bins.MaxBinCount;
                                var low = (scale * below / sum) + s;
                                var high = (scale * (below + table[b + s]) / sum) + s + 1;
                                p = (high - low) / 65536.0;
                            }
                            bits -= Math.Log2(p);
                            count++;
                        }
                    }
                }
            }
            return bits / count;
        }

        double PooledEntropy(int contexts, Context context)
        {
            var table = new long[rows * contexts * maxAlphabet];
            foreach (var j in all)
            {
                for (var row = 0; row < rows; row++)
                {
                    for (var t = 0; t < tokens; t++)
                    {
                        for (var c = 0; c < hidden; c++)
                        {
                            table[(((row * contexts) + context(j, row, t, c)) * maxAlphabet) + Sym(j, row, t, c)]++;
                        }
                    }
                }
            }
            double h = 0;
            long total = 0;
            for (var b = 0; b < rows * contexts; b++)
            {
                long sum = 0;
                for (var i = 0; i < maxAlphabet; i++)
                {
                    sum += table[(b * maxAlphabet) + i];
                }
                for (var i = 0; i < maxAlphabet; i++)
                {
                    var x = table[(b * maxAlphabet) + i];
                    if (x > 0)
                    {
                        h -= x * Math.Log2(x / (double)sum);
                    }
                }
                total += sum;
            }
            return h / total;
        }
    }

    private enum Smoothing
    {
        None,
        CacheGenCdf,
        AddHalf,
    }

    private static double Entropy(ReadOnlySpan<int> histogram, long total)
    {
        double h = 0;
        foreach (var x in histogram)
        {
            if (x > 0)
            {
                h -= x / (double)total * Math.Log2(x / (double)total);
            }
        }
        return h;
    }

    private static double Round(double value) => Math.Round(value, 3);
}
