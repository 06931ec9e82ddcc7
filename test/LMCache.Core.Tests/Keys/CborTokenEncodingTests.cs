using LMCache.Core.Keys;

namespace LMCache.Core.Tests.Keys;

/// <summary>The branch-free token encoder must produce exactly the canonical CBOR of the plain head writer.</summary>
public sealed class CborTokenEncodingTests
{
    public static TheoryData<int> Boundaries => [0, 1, 23, 24, 25, 255, 256, 257, 65535, 65536, 65537, 128_255, int.MaxValue, -1, -24, -25, -256, -257, -65536, -65537, int.MinValue];

    [Theory]
    [MemberData(nameof(Boundaries))]
    public void Each_token_is_encoded_in_shortest_form(int token)
    {
        var expected = new byte[9];
        var expectedLength = token >= 0
            ? Sha256CborChunkHasher.WriteHead(expected, 0, (ulong)token)
            : Sha256CborChunkHasher.WriteHead(expected, 1, (ulong)(-1L - token));
        var encoded = Encode([token]);
        // 0x82, 0x58 0x20, 32 hash bytes, 0x81 (array of one), then the token.
        Assert.Equal(expected[..expectedLength], encoded[36..]);
    }

    [Theory]
    [InlineData(true)]    // mostly groups with a negative id: the scalar path
    [InlineData(false)]   // non-negative ids only: the vectorized path where the CPU has it, the scalar tail after it
    public void Random_sequences_match_the_reference_writer(bool withNegatives)
    {
        var random = new Random(withNegatives ? 5 : 6);
        for (var round = 0; round < 300; round++)
        {
            var tokens = new int[random.Next(0, 300)];
            for (var i = 0; i < tokens.Length; i++)
            {
                tokens[i] = random.Next(withNegatives ? 5 : 4) switch
                {
                    0 => random.Next(0, 24),
                    1 => random.Next(0, 300),
                    2 => random.Next(0, 70_000),
                    3 => random.Next(),
                    _ => -random.Next(),
                };
            }
            var reference = new List<byte>();
            var head = new byte[9];
            var length = Sha256CborChunkHasher.WriteHead(head, 4, (ulong)tokens.Length);
            reference.AddRange(head[..length]);
            foreach (var token in tokens)
            {
                length = token >= 0 ? Sha256CborChunkHasher.WriteHead(head, 0, (ulong)token) : Sha256CborChunkHasher.WriteHead(head, 1, (ulong)(-1L - token));
                reference.AddRange(head[..length]);
            }
            Assert.Equal(reference.ToArray(), Encode(tokens)[35..]);
        }
    }

    [Fact]
    public void The_reference_documents_worked_example_encodes_as_published()
    {
        // lmcache-reference.md §3.3: tokens [1, 500, 70000] → 83 01 19 01 F4 1A 00 01 11 70.
        Assert.Equal(Convert.FromHexString("8301190" + "1F41A00011170"), Encode([1, 500, 70000])[35..]);
    }

    private static byte[] Encode(int[] tokens)
    {
        var buffer = new byte[Sha256CborChunkHasher.MaxEncodedLength(tokens.Length, null)];
        var length = Sha256CborChunkHasher.Encode(default, tokens, null, buffer);
        return buffer[..length];
    }
}
