using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Security.Cryptography;
using System.Text;
using LMCache.Core.Simd;

namespace LMCache.Core.Keys;

/// <summary>
/// vLLM's <c>sha256_cbor</c> chunk hash: SHA-256 over the canonical CBOR encoding of the tuple
/// <c>(previous_hash_bytes, token_ids)</c>, with <c>NONE_HASH = sha256(cbor(seed_text))</c>.
/// </summary>
/// <remarks>
/// <para>Specified bytes, so the same tokens give the same keys in every process, on every run and machine — unlike the
/// original's default <c>builtin</c> hash, which depends on <c>PYTHONHASHSEED</c> (its most common user failure).</para>
/// <para>Encoding (RFC 8949 deterministic): array header <c>0x82</c> (or <c>0x83</c> with an extra key), the previous
/// hash as a 32-byte byte string <c>58 20 …</c>, then the tokens as an array of shortest-form integers. The extra key
/// (cache salt) is a one-element array holding a text string, like vLLM's <c>extra_keys</c> tuple.</para>
/// <para>The seed defaults to <c>"0"</c>, which is what vLLM computes when <c>PYTHONHASHSEED=0</c>; Python engines
/// that run <c>pre_caching_hash_algorithm: sha256_cbor</c> with that seed produce the same hashes.</para>
/// </remarks>
public sealed partial class Sha256CborChunkHasher : IChunkHasher
{
    /// <summary>The configuration name.</summary>
    public const string AlgorithmName = "sha256_cbor";

    /// <summary>The default seed text.</summary>
    public const string DefaultSeed = "0";

    private const int StackLimit = 4096;

    /// <summary>Creates a hasher whose initial hash is derived from <paramref name="seed"/>.</summary>
    public Sha256CborChunkHasher(string seed = DefaultSeed)
    {
        ArgumentNullException.ThrowIfNull(seed);
        Seed = seed;
        var encoded = new ArrayBufferWriter<byte>(seed.Length + 9);
        WriteText(encoded, seed);
        Span<byte> digest = stackalloc byte[ChunkHash.Size];
        SHA256.HashData(encoded.WrittenSpan, digest);
        InitialHash = new ChunkHash(digest);
    }

    /// <inheritdoc />
    public string Name => AlgorithmName;

    /// <summary>The seed text the initial hash was derived from.</summary>
    public string Seed { get; }

    /// <inheritdoc />
    public ChunkHash InitialHash { get; }

    /// <summary>Upper bound of the CBOR encoding of one chunk of <paramref name="tokenCount"/> tokens.</summary>
    public static int MaxEncodedLength(int tokenCount, string? extraKey) =>
        1 + 2 + ChunkHash.Size + 5 + (tokenCount * 5) + (extraKey is null ? 0 : 1 + 9 + Encoding.UTF8.GetMaxByteCount(extraKey.Length));

    /// <inheritdoc />
    public ChunkHash Hash(in ChunkHash previous, ReadOnlySpan<int> tokens, string? extraKey = null)
    {
        var max = MaxEncodedLength(tokens.Length, extraKey);
        byte[]? rented = null;
        var buffer = max <= StackLimit ? stackalloc byte[StackLimit] : (rented = ArrayPool<byte>.Shared.Rent(max));
        try
        {
            var written = Encode(previous, tokens, extraKey, buffer);
            Span<byte> digest = stackalloc byte[ChunkHash.Size];
            SHA256.HashData(buffer[..written], digest);
            return new ChunkHash(digest);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>Writes the CBOR encoding of <c>(previous, tokens[, (extraKey,)])</c>; returns the bytes written.</summary>
    public static int Encode(in ChunkHash previous, ReadOnlySpan<int> tokens, string? extraKey, Span<byte> destination) =>
        Encode(previous, tokens, extraKey, destination, SimdPaths.Current);

    /// <summary><see cref="Encode(in ChunkHash, ReadOnlySpan{int}, string?, Span{byte})"/> on a given vector path (capped at what the CPU has); same bytes on every path.</summary>
    internal static int Encode(in ChunkHash previous, ReadOnlySpan<int> tokens, string? extraKey, Span<byte> destination, SimdPath path)
    {
        var position = 0;
        destination[position++] = extraKey is null ? (byte)0x82 : (byte)0x83;
        destination[position++] = 0x58;
        destination[position++] = ChunkHash.Size;
        previous.WriteTo(destination[position..]);
        position += ChunkHash.Size;
        position += WriteHead(destination[position..], 4, (ulong)tokens.Length);
        position += EncodeTokens(tokens, destination[position..], SimdPaths.Cap(path));
        if (extraKey is not null)
        {
            destination[position++] = 0x81;
            var length = Encoding.UTF8.GetByteCount(extraKey);
            position += WriteHead(destination[position..], 3, (ulong)length);
            position += Encoding.UTF8.GetBytes(extraKey, destination[position..]);
        }
        return position;
    }

    /// <summary>
    /// Writes each token as a shortest-form CBOR integer. The hot loop of chunk hashing: one bounds check for the whole
    /// run (the caller sized the buffer with <see cref="MaxEncodedLength"/>), then unchecked big-endian stores.
    /// </summary>
    private static int EncodeTokens(ReadOnlySpan<int> tokens, Span<byte> destination, SimdPath path)
    {
        if (destination.Length < tokens.Length * 5)
        {
            throw new ArgumentException("The destination is too small for the tokens.", nameof(destination));
        }
        // Branch-free for non-negative ids: pick the size class c (0: < 24, 1: < 2^8, 2: < 2^16, 3: < 2^32) with
        // comparisons, write the head byte and always 4 big-endian argument bytes shifted so the significant ones come
        // first, then advance by the class's length. Token ids of real vocabularies straddle 2^16, so a branch per
        // size would mispredict about half the time.
        // Every quantity below depends only on the token, so the only serial dependency from token to token is one
        // add to the output position.
        ref var start = ref MemoryMarshal.GetReference(destination);
        int done = 0, written = 0;
        done = path switch
        {
            SimdPath.Avx512 when Avx512Vbmi2.IsSupported => EncodeTokensAvx512(tokens, destination, out written),
            SimdPath.Avx512 => EncodeTokensAvx2(tokens, destination, out written),
            SimdPath.Avx2 => EncodeTokensAvx2(tokens, destination, out written),
            SimdPath.Vector128 => EncodeTokensVector128(tokens, destination, out written),
            _ => 0,
        };
        ref var output = ref Unsafe.Add(ref start, written);
        foreach (var token in tokens[done..])
        {
            if (token < 0)
            {
                var length = WriteHead(MemoryMarshal.CreateSpan(ref output, 5), 1, (ulong)(-1L - token));
                output = ref Unsafe.Add(ref output, length);
                continue;
            }
            var value = (uint)token;
            // (limit - token) is negative exactly when token > limit: its sign bit is the comparison, without a branch.
            var atLeast24 = (uint)(23 - token) >> 31;
            var atLeast256 = (uint)(255 - token) >> 31;
            var atLeast65536 = (uint)(65535 - token) >> 31;
            var sizeClass = atLeast24 + atLeast256 + atLeast65536;                    // 0: 1 byte, 1: 2, 2: 3, 3: 5
            var shift = (int)(8 * ((3 * atLeast24) - atLeast256 - (2 * atLeast65536)));   // 24, 16 or 0 bits
            output = (byte)((value & (atLeast24 - 1)) | ((23 + sizeClass) & (0u - atLeast24)));
            Unsafe.WriteUnaligned(ref Unsafe.Add(ref output, 1), BinaryPrimitives.ReverseEndianness(value << shift));
            output = ref Unsafe.Add(ref output, (int)(1 + atLeast24 + atLeast256 + (2 * atLeast65536)));
        }
        return (int)Unsafe.ByteOffset(ref start, ref output);
    }

    /// <summary>
    /// The same encoding, eight tokens at a time with AVX-512: each token becomes an 8-byte lane holding its head byte
    /// and four big-endian argument bytes (exactly as the scalar loop writes them), a byte mask keeps the first
    /// 1/2/3/5 bytes of every lane, and VPCOMPRESSB packs the kept bytes together. Stops at a group holding a negative
    /// token or when fewer than 64 bytes of room remain; returns the tokens encoded and, in
    /// <paramref name="written"/>, the bytes written. Tests pin it to the scalar path.
    /// </summary>
    private static int EncodeTokensAvx512(ReadOnlySpan<int> tokens, Span<byte> destination, out int written)
    {
        var one = Vector512.Create(1UL);
        var limit24 = Vector512.Create(23UL);
        var limit256 = Vector512.Create(255UL);
        var limit65536 = Vector512.Create(65535UL);
        var low32 = Vector512.Create(0xFFFF_FFFFUL);
        var replicate = Vector512.Create(0x0101_0101_0101_0101UL);
        // Byte i of each 8-byte lane: its index in the lane, to compare with the lane's length.
        var byteIndex = Vector512.Create(0x0706_0504_0302_0100UL).AsByte();
        // Per 16-byte block: move bytes 3,2,1,0 of each qword's low dword to positions 1..4 (big-endian), zero the rest.
        var toBigEndian = Vector512.Create(
            0x8080_8000_0102_0380UL, 0x8080_8008_090A_0B80UL, 0x8080_8000_0102_0380UL, 0x8080_8008_090A_0B80UL,
            0x8080_8000_0102_0380UL, 0x8080_8008_090A_0B80UL, 0x8080_8000_0102_0380UL, 0x8080_8008_090A_0B80UL).AsByte();
        ref var tokenRef = ref MemoryMarshal.GetReference(tokens);
        ref var output = ref MemoryMarshal.GetReference(destination);
        var offset = 0;
        var index = 0;
        while (index + 8 <= tokens.Length && destination.Length - offset >= Vector512<byte>.Count)
        {
            var group = Vector256.LoadUnsafe(ref tokenRef, (nuint)index);
            if (Vector256.LessThanAny(group, Vector256<int>.Zero))
            {
                break;
            }
            var value = Avx512F.ConvertToVector512UInt64(group.AsUInt32());
            var atLeast24 = Vector512.GreaterThan(value, limit24) & one;
            var atLeast256 = Vector512.GreaterThan(value, limit256) & one;
            var atLeast65536 = Vector512.GreaterThan(value, limit65536) & one;
            var sizeClass = atLeast24 + atLeast256 + atLeast65536;
            var shift = ((atLeast24 * 3) - atLeast256 - (atLeast65536 * 2)) * 8;
            var argument = Avx512BW.Shuffle((Avx512F.ShiftLeftLogicalVariable(value, shift) & low32).AsByte(), toBigEndian);
            var head = (value & (atLeast24 - one)) | ((limit24 + sizeClass) & (Vector512<ulong>.Zero - atLeast24));
            var lanes = argument | head.AsByte();
            var length = one + atLeast24 + atLeast256 + (atLeast65536 * 2);
            var keep = Vector512.LessThan(byteIndex, Avx512DQ.MultiplyLow(length, replicate).AsByte());
            Avx512Vbmi2.Compress(Vector512<byte>.Zero, keep, lanes).StoreUnsafe(ref output, (nuint)offset);
            offset += BitOperations.PopCount(keep.ExtractMostSignificantBits());   // bytes kept = bytes written
            index += 8;
        }
        written = offset;
        return index;
    }

    /// <summary>Writes a CBOR head (major type + shortest-form argument); returns its length.</summary>
    internal static int WriteHead(Span<byte> destination, int majorType, ulong value)
    {
        var major = (byte)(majorType << 5);
        if (value < 24)
        {
            destination[0] = (byte)(major | (byte)value);
            return 1;
        }
        if (value <= byte.MaxValue)
        {
            destination[0] = (byte)(major | 24);
            destination[1] = (byte)value;
            return 2;
        }
        if (value <= ushort.MaxValue)
        {
            destination[0] = (byte)(major | 25);
            BinaryPrimitives.WriteUInt16BigEndian(destination[1..], (ushort)value);
            return 3;
        }
        if (value <= uint.MaxValue)
        {
            destination[0] = (byte)(major | 26);
            BinaryPrimitives.WriteUInt32BigEndian(destination[1..], (uint)value);
            return 5;
        }
        destination[0] = (byte)(major | 27);
        BinaryPrimitives.WriteUInt64BigEndian(destination[1..], value);
        return 9;
    }

    private static void WriteText(IBufferWriter<byte> writer, string text)
    {
        var length = Encoding.UTF8.GetByteCount(text);
        var span = writer.GetSpan(9 + length);
        var head = WriteHead(span, 3, (ulong)length);
        Encoding.UTF8.GetBytes(text, span[head..]);
        writer.Advance(head + length);
    }
}
