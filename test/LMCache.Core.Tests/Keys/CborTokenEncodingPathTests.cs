using LMCache.Core.Keys;
using LMCache.Core.Simd;

namespace LMCache.Core.Tests.Keys;

/// <summary>
/// Every vector path of the token encoder writes exactly the scalar encoder's bytes, on every machine (a path this CPU
/// lacks is the only skip, and says so). The golden chunk hashes then hold on every path.
/// </summary>
public sealed class CborTokenEncodingPathTests
{
    public static TheoryData<SimdPath> Paths => new(SimdPaths.All);

    [Theory]
    [MemberData(nameof(Paths))]
    public void Each_path_writes_the_scalar_encoders_bytes(SimdPath path)
    {
        if (!SimdPaths.IsSupported(path))
        {
            Assert.Skip($"This CPU has no {SimdPaths.Name(path)} (it has {string.Join(", ", SimdPaths.CpuFeatures())}): that path cannot run here.");
        }
        // Values on and around every size boundary, so each group mixes the four lengths in every order.
        int[] boundaries = [0, 1, 23, 24, 25, 255, 256, 257, 65535, 65536, 65537, 128_255, int.MaxValue];
        var random = new Random(11 + (int)path);
        for (var round = 0; round < 2000; round++)
        {
            var tokens = new int[random.Next(0, 90)];
            for (var i = 0; i < tokens.Length; i++)
            {
                tokens[i] = random.Next(8) switch
                {
                    0 => boundaries[random.Next(boundaries.Length)],
                    1 => random.Next(0, 24),
                    2 => random.Next(0, 300),
                    3 => random.Next(0, 70_000),
                    4 => random.Next(),
                    5 when round % 3 == 0 => -random.Next(1, 70_000),   // a negative id: the vector loop stops, the scalar one goes on
                    _ => random.Next(0, 4096),
                };
            }
            var extraKey = round % 5 == 0 ? "tenant-ä" : null;
            var expected = Encode(tokens, extraKey, SimdPath.Scalar);
            var actual = Encode(tokens, extraKey, path);
            Assert.True(expected.AsSpan().SequenceEqual(actual), $"{path}, round {round}: tokens [{string.Join(", ", tokens)}]");
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void A_full_chunk_of_a_real_vocabulary_matches_on_each_path(SimdPath path)
    {
        if (!SimdPaths.IsSupported(path))
        {
            Assert.Skip($"This CPU has no {SimdPaths.Name(path)}: that path cannot run here.");
        }
        var random = new Random(3);
        var tokens = Enumerable.Range(0, 256).Select(_ => random.Next(0, 128_256)).ToArray();
        Assert.Equal(Encode(tokens, null, SimdPath.Scalar), Encode(tokens, null, path));
    }

    private static byte[] Encode(int[] tokens, string? extraKey, SimdPath path)
    {
        var buffer = new byte[Sha256CborChunkHasher.MaxEncodedLength(tokens.Length, extraKey)];
        var previous = new ChunkHash(Enumerable.Range(0, ChunkHash.Size).Select(i => (byte)(i * 7)).ToArray());
        var length = Sha256CborChunkHasher.Encode(previous, tokens, extraKey, buffer, path);
        return buffer[..length];
    }
}
