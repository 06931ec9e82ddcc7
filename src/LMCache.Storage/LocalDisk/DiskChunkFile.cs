using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using LMCache.Core.Keys;
using LMCache.Core.Memory;

namespace LMCache.Storage.LocalDisk;

/// <summary>
/// The on-disk format of one chunk: a 4096-byte header, then the payload at offset 4096.
/// </summary>
/// <remarks>
/// <code>
/// offset  size  field
///      0     4  magic "LMCK"
///      4     2  version (1)
///      6     2  reserved (0)
///      8     4  fmt (MemoryFormat)          12  4  dtype wire code
///     16    16  shape, 4 × int32
///     32     8  payload length in bytes
///     40     8  XxHash3-64 of the payload
///     48     2  key length in UTF-8 bytes (≤ 4038)
///     50     …  key (CacheEngineKey string form)
///   4088     8  XxHash3-64 of header bytes [0, 4088)
///   4096     …  payload
/// </code>
/// All integers little-endian. The header makes every file self-describing, so the index is rebuilt from the folder
/// after a restart; both checksums make a torn, truncated or bit-flipped file a miss instead of wrong bytes. The
/// payload starts on a 4 KiB boundary so the file can be read with O_DIRECT into aligned memory.
/// </remarks>
internal static class DiskChunkFile
{
    public const int HeaderSize = 4096;
    public const string Extension = ".lmc";
    public const string TemporaryExtension = ".tmp";
    private const uint Magic = 0x4B434D4C; // "LMCK" little-endian
    private const ushort Version = 1;
    private const int KeyOffset = 50;
    private const int HeaderChecksumOffset = HeaderSize - 8;
    public const int MaxKeyBytes = HeaderChecksumOffset - KeyOffset;

    /// <summary>The file name of a key: 40 hex digits of SHA-256 of the key string (names never depend on model paths).</summary>
    public static string FileNameOf(CacheEngineKey key)
    {
        Span<byte> digest = stackalloc byte[32];
        System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(key.ToString()), digest);
        return Convert.ToHexStringLower(digest[..20]) + Extension;
    }

    public static void WriteHeader(Span<byte> header, string key, in MemoryObjectMetadata metadata, long payloadLength, ulong payloadChecksum)
    {
        header[..HeaderSize].Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], Version);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], (int)metadata.Format);
        BinaryPrimitives.WriteInt32LittleEndian(header[12..], metadata.DType.ToWireCode());
        for (var i = 0; i < 4; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(header[(16 + (4 * i))..], metadata.Shape[i]);
        }
        BinaryPrimitives.WriteInt64LittleEndian(header[32..], payloadLength);
        BinaryPrimitives.WriteUInt64LittleEndian(header[40..], payloadChecksum);
        var keyLength = Encoding.UTF8.GetBytes(key, header[KeyOffset..HeaderChecksumOffset]);
        BinaryPrimitives.WriteUInt16LittleEndian(header[48..], (ushort)keyLength);
        BinaryPrimitives.WriteUInt64LittleEndian(header[HeaderChecksumOffset..], XxHash3.HashToUInt64(header[..HeaderChecksumOffset]));
    }

    /// <summary>Parses and verifies a header; returns a reason on failure.</summary>
    public static string? TryReadHeader(ReadOnlySpan<byte> header, out string key, out MemoryObjectMetadata metadata, out long payloadLength, out ulong payloadChecksum)
    {
        key = "";
        metadata = default;
        payloadLength = 0;
        payloadChecksum = 0;
        if (header.Length < HeaderSize)
        {
            return "header is truncated";
        }
        if (BinaryPrimitives.ReadUInt32LittleEndian(header) != Magic)
        {
            return "not an LMCache.NET chunk file (bad magic)";
        }
        if (BinaryPrimitives.ReadUInt64LittleEndian(header[HeaderChecksumOffset..]) != XxHash3.HashToUInt64(header[..HeaderChecksumOffset]))
        {
            return "header checksum mismatch";
        }
        var version = BinaryPrimitives.ReadUInt16LittleEndian(header[4..]);
        if (version != Version)
        {
            return $"unsupported version {version}";
        }
        var format = (MemoryFormat)BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
        if (!KvDTypes.FromWireCode(BinaryPrimitives.ReadInt32LittleEndian(header[12..]), out var dtype))
        {
            return "unknown dtype code";
        }
        var shape = new KvShape(
            BinaryPrimitives.ReadInt32LittleEndian(header[16..]),
            BinaryPrimitives.ReadInt32LittleEndian(header[20..]),
            BinaryPrimitives.ReadInt32LittleEndian(header[24..]),
            BinaryPrimitives.ReadInt32LittleEndian(header[28..]));
        metadata = new MemoryObjectMetadata(shape, dtype, format);
        payloadLength = BinaryPrimitives.ReadInt64LittleEndian(header[32..]);
        payloadChecksum = BinaryPrimitives.ReadUInt64LittleEndian(header[40..]);
        if (!shape.IsValid || payloadLength != metadata.ByteLength)
        {
            return $"payload length {payloadLength} does not match {metadata}";
        }
        var keyLength = BinaryPrimitives.ReadUInt16LittleEndian(header[48..]);
        if (keyLength > MaxKeyBytes)
        {
            return "key length out of range";
        }
        key = Encoding.UTF8.GetString(header.Slice(KeyOffset, keyLength));
        return null;
    }
}
