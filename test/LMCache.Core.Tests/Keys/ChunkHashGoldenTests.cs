using System.Text.Json;
using LMCache.Core.Keys;
using LMCache.Testing;

namespace LMCache.Core.Tests.Keys;

/// <summary>
/// Compares <see cref="ChunkedTokenDatabase"/> with test/Golden/chunk_hashes.json, which test/Golden/make_golden.py
/// (python3, standard library only, its own CBOR encoder) produced in another process. Equality proves the hashes are
/// the specified sha256_cbor bytes, and that they do not depend on the process (pitfall 1 of the reference).
/// </summary>
[IntegrationTest]
public sealed class ChunkHashGoldenTests
{
    private static readonly Lazy<GoldenFile> s_golden = new(() =>
    {
        var path = Path.Combine(AppContext.BaseDirectory, "Golden", "chunk_hashes.json");
        return JsonSerializer.Deserialize<GoldenFile>(File.ReadAllText(path), new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!;
    });

    public static TheoryData<string> CaseNames => [.. s_golden.Value.Cases.Select(c => c.Name)];

    public static TheoryData<string> MultiChunkCaseNames => [.. s_golden.Value.Cases.Where(c => c.Chunks.Count >= 2).Select(c => c.Name)];

    [Fact]
    public void The_golden_file_covers_the_interesting_encodings()
    {
        var cases = s_golden.Value.Cases;
        Assert.True(cases.Count >= 10);
        Assert.Contains(cases, c => c.Tokens.Any(t => t is >= 24 and < 256));
        Assert.Contains(cases, c => c.Tokens.Any(t => t is >= 256 and < 65536));
        Assert.Contains(cases, c => c.Tokens.Any(t => t >= 65536));
        Assert.Contains(cases, c => c.Salt is not null);
        Assert.Contains(cases, c => c.ChunkSize == 256 && c.Chunks.Count >= 2);
        Assert.Contains(cases, c => c.SaveUnfullChunk && c.Tokens.Count % c.ChunkSize != 0);
        Assert.Contains(cases, c => !c.SaveUnfullChunk && c.Tokens.Count % c.ChunkSize != 0);
        Assert.Contains(cases, c => c.Seed != "0");
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void Chunk_hashes_match_the_python_golden_vectors(string name)
    {
        var golden = s_golden.Value.Cases.Single(c => c.Name == name);
        var hasher = new Sha256CborChunkHasher(golden.Seed);
        Assert.Equal(golden.NoneHash, hasher.InitialHash.ToString());
        var database = new ChunkedTokenDatabase(golden.ChunkSize, golden.SaveUnfullChunk, hasher);
        var tokens = golden.Tokens.ToArray();

        var chunks = database.GetChunks(tokens, golden.Salt);

        Assert.Equal(golden.Chunks.Count, chunks.Length);
        Assert.Equal(golden.Chunks.Count, database.ChunkCount(tokens.Length));
        for (var i = 0; i < chunks.Length; i++)
        {
            Assert.Equal(golden.Chunks[i].Start, chunks[i].Start);
            Assert.Equal(golden.Chunks[i].End, chunks[i].End);
            Assert.Equal(golden.Chunks[i].Hash, chunks[i].Hash.ToString());
        }
        if (chunks.Length > 0)
        {
            // The exact bytes hashed for the first chunk.
            var first = golden.Chunks[0];
            var buffer = new byte[Sha256CborChunkHasher.MaxEncodedLength(first.End, golden.Salt)];
            var written = Sha256CborChunkHasher.Encode(hasher.InitialHash, tokens.AsSpan(0, first.End), golden.Salt, buffer);
            Assert.Equal(first.Cbor, Convert.ToHexStringLower(buffer.AsSpan(0, written)));
        }
    }

    [Theory]
    [MemberData(nameof(MultiChunkCaseNames))]
    public void Skipping_leading_chunks_keeps_the_chain(string name)
    {
        var golden = s_golden.Value.Cases.Single(c => c.Name == name);
        var database = new ChunkedTokenDatabase(golden.ChunkSize, golden.SaveUnfullChunk, new Sha256CborChunkHasher(golden.Seed));
        var destination = new TokenChunk[golden.Chunks.Count];
        var count = database.GetChunks(golden.Tokens.ToArray(), destination, golden.Salt, skipLeadingTokens: golden.ChunkSize);
        Assert.Equal(golden.Chunks.Count - 1, count);
        for (var i = 0; i < count; i++)
        {
            Assert.Equal(golden.Chunks[i + 1].Start, destination[i].Start);
            Assert.Equal(golden.Chunks[i + 1].Hash, destination[i].Hash.ToString());
        }
    }

    [Fact]
    public async Task The_python_generator_run_now_in_another_process_reproduces_the_golden_file()
    {
        var script = FindUpwards(Path.Combine("test", "Golden", "make_golden.py"));
        if (script is null)
        {
            Assert.Skip("test/Golden/make_golden.py not found above the test assembly (tests run outside the repository)");
        }
        System.Diagnostics.Process process;
        try
        {
            process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("python3", $"\"{script}\"")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            })!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            Assert.Skip($"python3 is not installed ({ex.Message}); scripts/test.sh installs it");
            return;
        }
        using (process)
        {
            var output = process.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
            var error = process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
            await process.WaitForExitAsync(TestContext.Current.CancellationToken);
            Assert.True(process.ExitCode == 0, await error);
            var golden = await File.ReadAllTextAsync(Path.Combine(AppContext.BaseDirectory, "Golden", "chunk_hashes.json"), TestContext.Current.CancellationToken);
            Assert.Equal(golden.ReplaceLineEndings("\n"), (await output).ReplaceLineEndings("\n"));
        }
    }

    [Fact]
    public void The_worked_CBOR_example_of_the_reference()
    {
        // Tokens [1, 500, 70000] → array part 83 01 19 01 F4 1A 00 01 11 70 (reference, section 3.3).
        var buffer = new byte[64];
        var written = Sha256CborChunkHasher.Encode(default, [1, 500, 70000], null, buffer);
        Assert.Equal(0x82, buffer[0]);
        Assert.Equal(new byte[] { 0x58, 0x20 }, buffer[1..3]);
        Assert.Equal(new byte[32], buffer[3..35]);
        Assert.Equal(Convert.FromHexString("83011901F41A00011170"), buffer[35..written]);

        // With a salt: outer array of 3, then a one-element array holding the text.
        written = Sha256CborChunkHasher.Encode(default, [1], "ab", buffer);
        Assert.Equal(0x83, buffer[0]);
        Assert.Equal(Convert.FromHexString("8101" + "81626162"), buffer[35..written]);
    }

    [Theory]
    [InlineData(0, "00")]
    [InlineData(23, "17")]
    [InlineData(24, "1818")]
    [InlineData(255, "18FF")]
    [InlineData(256, "190100")]
    [InlineData(65535, "19FFFF")]
    [InlineData(65536, "1A00010000")]
    [InlineData(int.MaxValue, "1A7FFFFFFF")]
    [InlineData(-1, "20")]
    [InlineData(-25, "3818")]
    public void Token_ids_use_the_shortest_CBOR_integer(int token, string hex)
    {
        var buffer = new byte[64];
        var written = Sha256CborChunkHasher.Encode(default, [token], null, buffer);
        Assert.Equal(0x81, buffer[35]);
        Assert.Equal(Convert.FromHexString(hex), buffer[36..written]);
    }

    [Theory]
    [InlineData(23, "97")]
    [InlineData(24, "9818")]
    [InlineData(255, "98FF")]
    [InlineData(256, "990100")]
    [InlineData(65536, "9A00010000")]
    public void Token_array_headers_use_the_shortest_form(int count, string hex)
    {
        var tokens = new int[count];
        var buffer = new byte[Sha256CborChunkHasher.MaxEncodedLength(count, null)];
        Sha256CborChunkHasher.Encode(default, tokens, null, buffer);
        var header = Convert.FromHexString(hex);
        Assert.Equal(header, buffer[35..(35 + header.Length)]);
    }

    [Fact]
    public void Different_salts_give_disjoint_keys_and_the_same_salt_the_same_keys()
    {
        var database = new ChunkedTokenDatabase(16, saveUnfullChunk: false, new Sha256CborChunkHasher());
        var tokens = Enumerable.Range(1000, 160).ToArray();
        var unsalted = database.GetChunks(tokens).Select(c => c.Hash).ToList();
        var tenantA = database.GetChunks(tokens, "tenant-a").Select(c => c.Hash).ToList();
        var tenantAAgain = database.GetChunks(tokens, "tenant-a").Select(c => c.Hash).ToList();
        var tenantB = database.GetChunks(tokens, "tenant-b").Select(c => c.Hash).ToList();

        Assert.Equal(10, tenantA.Count);
        Assert.Equal(tenantA, tenantAAgain);                 // positive control: same salt, same keys
        Assert.Empty(tenantA.Intersect(tenantB));           // every chunk differs, not only the first
        Assert.Empty(tenantA.Intersect(unsalted));
        Assert.Empty(tenantB.Intersect(unsalted));
        Assert.Equal(30, tenantA.Concat(tenantB).Concat(unsalted).Distinct().Count());
    }

    [Fact]
    public void Prompts_sharing_a_prefix_share_exactly_the_prefix_chunks()
    {
        var database = new ChunkedTokenDatabase(8, saveUnfullChunk: false, new Sha256CborChunkHasher());
        var a = Enumerable.Range(0, 64).ToArray();
        var b = a.ToArray();
        b[35] = 9999;   // chunk 4 (tokens 32..39) differs
        var chunksA = database.GetChunks(a);
        var chunksB = database.GetChunks(b);
        for (var i = 0; i < 8; i++)
        {
            Assert.Equal(i < 4, chunksA[i].Hash == chunksB[i].Hash);
        }
    }

    [Fact]
    public void Seeds_change_every_hash_and_the_default_seed_is_0()
    {
        var tokens = Enumerable.Range(0, 32).ToArray();
        var zero = new ChunkedTokenDatabase(8, false, new Sha256CborChunkHasher("0")).GetChunks(tokens);
        var implicitZero = new ChunkedTokenDatabase(8, false, new Sha256CborChunkHasher()).GetChunks(tokens);
        var other = new ChunkedTokenDatabase(8, false, new Sha256CborChunkHasher("1")).GetChunks(tokens);
        Assert.Equal(zero, implicitZero);
        Assert.All(zero.Zip(other), pair => Assert.NotEqual(pair.First.Hash, pair.Second.Hash));
    }

    [Fact]
    public void Chunking_rules_for_partial_tails_and_bad_arguments()
    {
        var dropped = new ChunkedTokenDatabase(4, saveUnfullChunk: false, new Sha256CborChunkHasher());
        var kept = new ChunkedTokenDatabase(4, saveUnfullChunk: true, new Sha256CborChunkHasher());
        Assert.Equal(8, dropped.KeyedTokenCount(10));
        Assert.Equal(10, kept.KeyedTokenCount(10));
        Assert.Equal(2, dropped.ChunkCount(10));
        Assert.Equal(3, kept.ChunkCount(10));
        Assert.Empty(dropped.GetChunks([1, 2, 3]));
        Assert.Empty(kept.GetChunks([]));
        var tail = Assert.Single(kept.GetChunks([1, 2, 3]));
        Assert.Equal((0, 3, 3), (tail.Start, tail.End, tail.Length));
        // The full chunks of a longer prompt hash the same whether or not its tail is kept.
        var tokens = Enumerable.Range(0, 10).ToArray();
        Assert.Equal(dropped.GetChunks(tokens), kept.GetChunks(tokens)[..2]);
        Assert.Throws<ArgumentException>(() => dropped.GetChunks(tokens, new TokenChunk[3], null, skipLeadingTokens: 3));
        Assert.Throws<ArgumentException>(() => dropped.GetChunks(tokens, new TokenChunk[3], null, skipLeadingTokens: -4));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ChunkedTokenDatabase(0, false, new Sha256CborChunkHasher()));
        Assert.Equal(0, dropped.GetChunks(tokens, new TokenChunk[3], null, skipLeadingTokens: 8));
    }

    private static string? FindUpwards(string relative)
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            var candidate = Path.Combine(directory.FullName, relative);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    private sealed record GoldenFile(string Generator, string Scheme, List<GoldenCase> Cases);

    private sealed record GoldenCase(
        string Name, string Seed, string NoneHash, int ChunkSize, bool SaveUnfullChunk, string? Salt, List<int> Tokens, List<GoldenChunk> Chunks);

    private sealed record GoldenChunk(int Start, int End, string Hash, string? Cbor);
}
