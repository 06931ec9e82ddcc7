using System.Buffers.Binary;
using System.Globalization;

namespace LMCache.Core.Keys;

/// <summary>A 32-byte SHA-256 chunk hash, stored inline (no allocation) and rendered as 64 lower-case hex digits.</summary>
public readonly struct ChunkHash : IEquatable<ChunkHash>
{
    /// <summary>Size of the hash in bytes.</summary>
    public const int Size = 32;

    private readonly ulong _a, _b, _c, _d;

    /// <summary>Creates a hash from its 32 bytes.</summary>
    public ChunkHash(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Size)
        {
            throw new ArgumentException($"A chunk hash is {Size} bytes, got {bytes.Length}.", nameof(bytes));
        }
        _a = BinaryPrimitives.ReadUInt64BigEndian(bytes);
        _b = BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]);
        _c = BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]);
        _d = BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]);
    }

    /// <summary>Writes the 32 bytes into <paramref name="destination"/>.</summary>
    public void WriteTo(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, _a);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], _b);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], _c);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], _d);
    }

    /// <summary>64 lower-case hex digits (Python's <c>bytes.hex()</c>).</summary>
    public override string ToString() => string.Create(64, this, static (chars, hash) =>
    {
        Span<byte> bytes = stackalloc byte[Size];
        hash.WriteTo(bytes);
        Convert.TryToHexStringLower(bytes, chars, out _);
    });

    /// <summary>
    /// The hash as it appears in a cache key: the original's <c>f"{chunk_hash:x}"</c> of the hash read as one unsigned
    /// big-endian integer — lower-case hex without leading zeros (<c>"0"</c> for an all-zero hash). The original's
    /// mid/late-2025 keys carry the hash as a Python int rendered this way, so a key we write for a hash is the text the
    /// original computes for the same hash value (about one hash in 16 starts with a zero nibble, which the fixed-width
    /// <see cref="ToString"/> form would spell differently).
    /// </summary>
    public string ToKeyText()
    {
        var hex = ToString();
        var start = 0;
        while (start < hex.Length - 1 && hex[start] == '0')
        {
            start++;
        }
        return start == 0 ? hex : hex[start..];
    }

    /// <summary>Parses exactly 64 hex digits.</summary>
    public static bool TryParse(ReadOnlySpan<char> hex, out ChunkHash hash)
    {
        hash = default;
        if (hex.Length != 64)
        {
            return false;
        }
        Span<byte> bytes = stackalloc byte[Size];
        for (var i = 0; i < Size; i++)
        {
            if (!byte.TryParse(hex.Slice(2 * i, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out bytes[i]))
            {
                return false;
            }
        }
        hash = new ChunkHash(bytes);
        return true;
    }

    /// <inheritdoc />
    public bool Equals(ChunkHash other) => _a == other._a && _b == other._b && _c == other._c && _d == other._d;

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is ChunkHash other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => (int)_d ^ (int)(_d >> 32);

    /// <summary>Equality.</summary>
    public static bool operator ==(ChunkHash left, ChunkHash right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(ChunkHash left, ChunkHash right) => !left.Equals(right);
}
