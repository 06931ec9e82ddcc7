using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LMCache.Core.Keys;

/// <summary>The token encoder's AVX2 and portable <see cref="Vector128"/> paths (same bytes as the scalar loop).</summary>
public sealed partial class Sha256CborChunkHasher
{
    /// <summary>
    /// Byte shuffles that pack two tokens' 8-byte lanes (head byte + 4 big-endian argument bytes each, as the scalar loop
    /// writes them) into their 1/2/3/5 + 1/2/3/5 significant bytes, 16 bytes per entry; indexed by <see cref="PairIndex"/>.
    /// </summary>
    private static readonly byte[] s_pairShuffle = BuildPairTables(out s_pairLength);

    /// <summary>Bytes a pair of tokens takes, by <see cref="PairIndex"/>.</summary>
    private static readonly byte[] s_pairLength;

    /// <summary>
    /// The pair table index of tokens <paramref name="first"/> and <paramref name="first"/> + 1 from three bit masks
    /// (bit i set when token i is ≥ 24, ≥ 256, ≥ 65536): two bits per mask, 6 bits in all.
    /// </summary>
    private static int PairIndex(uint atLeast24, uint atLeast256, uint atLeast65536, int first) =>
        (int)(((atLeast24 >> first) & 3) | (((atLeast256 >> first) & 3) << 2) | (((atLeast65536 >> first) & 3) << 4));

    private static byte[] BuildPairTables(out byte[] lengths)
    {
        var shuffles = new byte[64 * 16];
        lengths = new byte[64];
        for (var index = 0; index < 64; index++)
        {
            int Length(int token) => 1 + ((index >> token) & 1) + ((index >> (2 + token)) & 1) + (2 * ((index >> (4 + token)) & 1));
            var first = Length(0);
            var second = Length(1);
            var entry = shuffles.AsSpan(index * 16, 16);
            entry.Fill(0x80);
            for (var b = 0; b < first; b++)
            {
                entry[b] = (byte)b;
            }
            for (var b = 0; b < second; b++)
            {
                entry[first + b] = (byte)(8 + b);
            }
            lengths[index] = (byte)(first + second);
        }
        return shuffles;
    }

    /// <summary>
    /// Eight tokens at a time with AVX2: the same 8-byte lanes as <see cref="EncodeTokensAvx512"/> (built in 32-bit halves
    /// and interleaved), then each pair of tokens packed by one byte shuffle from <see cref="s_pairShuffle"/> and stored
    /// as 16 bytes (the next store overwrites the unused tail). Same contract as the AVX-512 path.
    /// </summary>
    private static int EncodeTokensAvx2(ReadOnlySpan<int> tokens, Span<byte> destination, out int written)
    {
        written = 0;
        if (!Avx2.IsSupported)
        {
            return 0;
        }
        var limit24 = Vector256.Create(23);
        var limit256 = Vector256.Create(255);
        var limit65536 = Vector256.Create(65535);
        var toBigEndian = Vector256.Create(
            (byte)3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
        ref var tokenRef = ref MemoryMarshal.GetReference(tokens);
        ref var output = ref MemoryMarshal.GetReference(destination);
        ref var shuffles = ref MemoryMarshal.GetArrayDataReference(s_pairShuffle);
        ref var pairLengths = ref MemoryMarshal.GetArrayDataReference(s_pairLength);
        var offset = 0;
        var index = 0;
        while (index + 8 <= tokens.Length && destination.Length - offset >= 64)
        {
            var group = Vector256.LoadUnsafe(ref tokenRef, (nuint)index);
            if (Vector256.LessThanAny(group, Vector256<int>.Zero))
            {
                break;
            }
            // Masks are −1 where true: class = −(m24 + m256 + m65536), shift = 8·(3·a24 − a256 − 2·a65536) with a = −m.
            var m24 = Avx2.CompareGreaterThan(group, limit24);
            var m256 = Avx2.CompareGreaterThan(group, limit256);
            var m65536 = Avx2.CompareGreaterThan(group, limit65536);
            var shift = (m256 + m65536 + m65536 - (m24 + m24 + m24)) << 3;
            var argument = Avx2.Shuffle(Avx2.ShiftLeftLogicalVariable(group.AsUInt32(), shift.AsUInt32()).AsByte(), toBigEndian).AsUInt32();
            var head = Avx2.BlendVariable(group.AsByte(), (limit24 - (m24 + m256 + m65536)).AsByte(), m24.AsByte()).AsUInt32();
            var lowWords = head | (argument << 8);
            var highWords = argument >> 24;
            var pairs0145 = Avx2.UnpackLow(lowWords, highWords).AsByte();   // tokens 0, 1 | 4, 5 as 8-byte lanes
            var pairs2367 = Avx2.UnpackHigh(lowWords, highWords).AsByte();  // tokens 2, 3 | 6, 7
            var b24 = (uint)Avx.MoveMask(m24.AsSingle());
            var b256 = (uint)Avx.MoveMask(m256.AsSingle());
            var b65536 = (uint)Avx.MoveMask(m65536.AsSingle());

            var pair = PairIndex(b24, b256, b65536, 0);
            Ssse3.Shuffle(pairs0145.GetLower(), Vector128.LoadUnsafe(ref shuffles, (nuint)(pair * 16))).StoreUnsafe(ref output, (nuint)offset);
            offset += Unsafe.Add(ref pairLengths, pair);
            pair = PairIndex(b24, b256, b65536, 2);
            Ssse3.Shuffle(pairs2367.GetLower(), Vector128.LoadUnsafe(ref shuffles, (nuint)(pair * 16))).StoreUnsafe(ref output, (nuint)offset);
            offset += Unsafe.Add(ref pairLengths, pair);
            pair = PairIndex(b24, b256, b65536, 4);
            Ssse3.Shuffle(pairs0145.GetUpper(), Vector128.LoadUnsafe(ref shuffles, (nuint)(pair * 16))).StoreUnsafe(ref output, (nuint)offset);
            offset += Unsafe.Add(ref pairLengths, pair);
            pair = PairIndex(b24, b256, b65536, 6);
            Ssse3.Shuffle(pairs2367.GetUpper(), Vector128.LoadUnsafe(ref shuffles, (nuint)(pair * 16))).StoreUnsafe(ref output, (nuint)offset);
            offset += Unsafe.Add(ref pairLengths, pair);
            index += 8;
        }
        written = offset;
        return index;
    }

    /// <summary>
    /// Four tokens at a time with portable 128-bit vectors (SSE4 on x86-64, NEON on Arm64): the per-lane shift is a
    /// multiplication by 2^24, 2^16 or 1, the lanes are widened to 8 bytes, and pairs are packed by the same shuffle table.
    /// </summary>
    private static int EncodeTokensVector128(ReadOnlySpan<int> tokens, Span<byte> destination, out int written)
    {
        written = 0;
        if (!Vector128.IsHardwareAccelerated)
        {
            return 0;
        }
        var limit24 = Vector128.Create(23);
        var limit256 = Vector128.Create(255);
        var limit65536 = Vector128.Create(65535);
        var times2To24 = Vector128.Create(1u << 24);
        var times2To16 = Vector128.Create(1u << 16);
        var toBigEndian = Vector128.Create((byte)3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
        ref var tokenRef = ref MemoryMarshal.GetReference(tokens);
        ref var output = ref MemoryMarshal.GetReference(destination);
        ref var shuffles = ref MemoryMarshal.GetArrayDataReference(s_pairShuffle);
        ref var pairLengths = ref MemoryMarshal.GetArrayDataReference(s_pairLength);
        var offset = 0;
        var index = 0;
        while (index + 4 <= tokens.Length && destination.Length - offset >= 32)
        {
            var group = Vector128.LoadUnsafe(ref tokenRef, (nuint)index);
            if (Vector128.LessThanAny(group, Vector128<int>.Zero))
            {
                break;
            }
            var m24 = Vector128.GreaterThan(group, limit24);
            var m256 = Vector128.GreaterThan(group, limit256);
            var m65536 = Vector128.GreaterThan(group, limit65536);
            var multiplier = Vector128.ConditionalSelect(
                Vector128.AndNot(m24, m256).AsUInt32(), times2To24,
                Vector128.ConditionalSelect(Vector128.AndNot(m256, m65536).AsUInt32(), times2To16, Vector128<uint>.One));
            var argument = Vector128.Shuffle((group.AsUInt32() * multiplier).AsByte(), toBigEndian).AsUInt32();
            var head = Vector128.ConditionalSelect(m24, limit24 - (m24 + m256 + m65536), group).AsUInt32();
            var (low01, low23) = Vector128.Widen(head | (argument << 8));
            var (high01, high23) = Vector128.Widen(argument >> 24);
            var pairs01 = (low01 | (high01 << 32)).AsByte();
            var pairs23 = (low23 | (high23 << 32)).AsByte();
            var b24 = m24.ExtractMostSignificantBits();
            var b256 = m256.ExtractMostSignificantBits();
            var b65536 = m65536.ExtractMostSignificantBits();

            var pair = PairIndex(b24, b256, b65536, 0);
            Vector128.Shuffle(pairs01, Vector128.LoadUnsafe(ref shuffles, (nuint)(pair * 16))).StoreUnsafe(ref output, (nuint)offset);
            offset += Unsafe.Add(ref pairLengths, pair);
            pair = PairIndex(b24, b256, b65536, 2);
            Vector128.Shuffle(pairs23, Vector128.LoadUnsafe(ref shuffles, (nuint)(pair * 16))).StoreUnsafe(ref output, (nuint)offset);
            offset += Unsafe.Add(ref pairLengths, pair);
            index += 4;
        }
        written = offset;
        return index;
    }
}
