using System.Buffers.Binary;
using LMCache.Core.Keys;
using LMCache.Core.Memory;

namespace LMCache.Connectors.Redis;

/// <summary>
/// The value stored under <c>key + "metadata"</c>: the original's 28-byte <c>RemoteMetadata</c> (7 little-endian int32:
/// length, fmt, dtype code, shape[0..3]), optionally followed by our 16-byte integrity trailer.
/// </summary>
/// <remarks>
/// Trailer layout (little-endian): bytes 28..31 magic <c>"LMCX"</c>, byte 32 trailer version, byte 33 checksum
/// algorithm (1 = XxHash3-64), bytes 34..35 zero, bytes 36..43 the checksum. Version 2 (written now) binds the key:
/// the checksum is <see cref="BindToKey"/> of the payload's XxHash3-64 and the key text, so a consistent payload and
/// metadata pair copied onto another key does not verify. Version 1 (written by earlier LMCache.NET) covers the payload
/// only, and the original's 28-byte entries carry none: both are "unbound" entries, read only when the connector
/// accepts them (<see cref="RedisConnectorOptions.AcceptUnbound"/>).
/// </remarks>
/// <param name="Length">Payload byte count as written.</param>
/// <param name="FormatCode">The <see cref="MemoryFormat"/> value.</param>
/// <param name="DTypeCode">The wire dtype code (1 and 2 are float16).</param>
/// <param name="Shape">The 4 shape integers, as written (not validated).</param>
/// <param name="Checksum">The stored checksum when the trailer is present, else null.</param>
/// <param name="KeyBound">Whether <paramref name="Checksum"/> covers the key as well as the payload (trailer version 2).</param>
public readonly record struct RemoteMetadata(int Length, int FormatCode, int DTypeCode, KvShape Shape, ulong? Checksum, bool KeyBound = false)
{
    /// <summary>Size of the original layout: 28 bytes.</summary>
    public const int OriginalSize = 28;

    /// <summary>Size with our trailer: 44 bytes.</summary>
    public const int WithChecksumSize = OriginalSize + 16;

    private const uint TrailerMagic = 0x58434D4C; // "LMCX" little-endian
    private const byte PayloadOnlyVersion = 1;
    private const byte KeyBoundVersion = 2;
    private const byte AlgorithmXxHash3 = 1;

    /// <summary>
    /// The key-bound checksum of trailer version 2: XxHash3-64 over the key's UTF-8 text followed by the payload's
    /// XxHash3-64 (little-endian). Detects a pair moved to another key and any accidental change; it is not a MAC
    /// (whoever can write the store can compute it).
    /// </summary>
    public static ulong BindToKey(ulong payloadHash, string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        var size = System.Text.Encoding.UTF8.GetMaxByteCount(key.Length) + sizeof(ulong);
        byte[]? rented = null;
        var buffer = size <= 1024 ? stackalloc byte[size] : (rented = System.Buffers.ArrayPool<byte>.Shared.Rent(size));
        try
        {
            var written = System.Text.Encoding.UTF8.GetBytes(key, buffer);
            BinaryPrimitives.WriteUInt64LittleEndian(buffer[written..], payloadHash);
            return System.IO.Hashing.XxHash3.HashToUInt64(buffer[..(written + sizeof(ulong))]);
        }
        finally
        {
            if (rented is not null)
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>Whether <paramref name="payloadHash"/> (the payload's XxHash3-64) read under <paramref name="key"/> matches <see cref="Checksum"/>; true when there is none.</summary>
    public bool Verifies(ulong payloadHash, string key) =>
        Checksum is not { } expected || (KeyBound ? BindToKey(payloadHash, key) : payloadHash) == expected;

    /// <summary>Builds the metadata of <paramref name="metadata"/> for a payload of <paramref name="length"/> bytes.</summary>
    public static RemoteMetadata For(in MemoryObjectMetadata metadata, int length, ulong? checksum) =>
        new(length, (int)metadata.Format, metadata.DType.ToWireCode(), metadata.Shape, checksum, KeyBound: checksum.HasValue);

    /// <summary>Bytes <see cref="Write"/> produces: 28 without a checksum, 44 with one.</summary>
    public int EncodedSize => Checksum.HasValue ? WithChecksumSize : OriginalSize;

    /// <summary>Writes the encoded form into <paramref name="destination"/> (at least <see cref="EncodedSize"/> bytes); returns the byte count.</summary>
    public int Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteInt32LittleEndian(destination, Length);
        BinaryPrimitives.WriteInt32LittleEndian(destination[4..], FormatCode);
        BinaryPrimitives.WriteInt32LittleEndian(destination[8..], DTypeCode);
        BinaryPrimitives.WriteInt32LittleEndian(destination[12..], Shape.D0);
        BinaryPrimitives.WriteInt32LittleEndian(destination[16..], Shape.D1);
        BinaryPrimitives.WriteInt32LittleEndian(destination[20..], Shape.D2);
        BinaryPrimitives.WriteInt32LittleEndian(destination[24..], Shape.D3);
        if (Checksum is not { } checksum)
        {
            return OriginalSize;
        }
        BinaryPrimitives.WriteUInt32LittleEndian(destination[28..], TrailerMagic);
        destination[32] = KeyBound ? KeyBoundVersion : PayloadOnlyVersion;
        destination[33] = AlgorithmXxHash3;
        destination[34] = 0;
        destination[35] = 0;
        BinaryPrimitives.WriteUInt64LittleEndian(destination[36..], checksum);
        return WithChecksumSize;
    }

    /// <summary>The encoded form as a new array.</summary>
    public byte[] ToArray()
    {
        var bytes = new byte[EncodedSize];
        Write(bytes);
        return bytes;
    }

    /// <summary>
    /// Decodes a stored metadata value: exactly 28 bytes (the original) or 44 bytes with a valid trailer (ours). Anything
    /// else (other sizes, an unknown trailer) fails with a reason.
    /// </summary>
    public static bool TryRead(ReadOnlySpan<byte> bytes, out RemoteMetadata metadata, out string? error)
    {
        metadata = default;
        if (bytes.Length != OriginalSize && bytes.Length != WithChecksumSize)
        {
            error = $"metadata is {bytes.Length} bytes (expected {OriginalSize}, or {WithChecksumSize} with a checksum)";
            return false;
        }
        ulong? checksum = null;
        var keyBound = false;
        if (bytes.Length == WithChecksumSize)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(bytes[28..]) != TrailerMagic || bytes[32] is not (PayloadOnlyVersion or KeyBoundVersion)
                || bytes[33] != AlgorithmXxHash3 || bytes[34] != 0 || bytes[35] != 0)
            {
                error = "metadata trailer is not an LMCache.NET checksum trailer (version 1 or 2, XxHash3)";
                return false;
            }
            checksum = BinaryPrimitives.ReadUInt64LittleEndian(bytes[36..]);
            keyBound = bytes[32] == KeyBoundVersion;
        }
        metadata = new RemoteMetadata(
            BinaryPrimitives.ReadInt32LittleEndian(bytes),
            BinaryPrimitives.ReadInt32LittleEndian(bytes[4..]),
            BinaryPrimitives.ReadInt32LittleEndian(bytes[8..]),
            new KvShape(
                BinaryPrimitives.ReadInt32LittleEndian(bytes[12..]),
                BinaryPrimitives.ReadInt32LittleEndian(bytes[16..]),
                BinaryPrimitives.ReadInt32LittleEndian(bytes[20..]),
                BinaryPrimitives.ReadInt32LittleEndian(bytes[24..])),
            checksum,
            keyBound);
        error = null;
        return true;
    }

    /// <summary>
    /// Checks this metadata against the payload actually stored and the key it was read under, and gives the metadata
    /// of the object to allocate. Rules: known format and dtype code; a valid shape; <see cref="Length"/> equal to the
    /// payload length; the length equal to shape × dtype size, or — the original's partial chunks — a whole number of
    /// tokens smaller than the shape along the format's token axis (the shape is then cut to that many tokens); and,
    /// when the key carries a dtype token (the 6-field form), the same dtype.
    /// </summary>
    /// <param name="payloadLength">Bytes stored under <c>kv_bytes</c>.</param>
    /// <param name="key">The key read.</param>
    /// <param name="objectMetadata">On success, what to allocate (its byte length equals <paramref name="payloadLength"/>).</param>
    /// <param name="error">Why the entry is invalid.</param>
    public bool TryValidate(long payloadLength, in CacheEngineKey key, out MemoryObjectMetadata objectMetadata, out string? error)
    {
        objectMetadata = default;
        if (FormatCode is < 0 or > (int)MemoryFormat.KVMla)
        {
            error = $"unknown memory format {FormatCode}";
            return false;
        }
        if (!KvDTypes.FromWireCode(DTypeCode, out var dtype))
        {
            error = $"unknown dtype code {DTypeCode}";
            return false;
        }
        if (!Shape.IsValid)
        {
            error = $"invalid shape {Shape}";
            return false;
        }
        if (Length < 0 || Length != payloadLength)
        {
            error = $"metadata says {Length} bytes but the payload has {payloadLength}";
            return false;
        }
        var format = (MemoryFormat)FormatCode;
        if (key.DType is { Length: > 0 } token && dtype != KvDType.None && format is not (MemoryFormat.Binary or MemoryFormat.BinaryBuffer)
            && KvDTypes.TryParseToken(token, out var keyDType) && keyDType != dtype)
        {
            error = $"dtype {dtype} does not match the key's dtype '{token}'";
            return false;
        }
        var expected = ByteLength(Shape, dtype);
        if (expected < 0)
        {
            error = $"shape {Shape} is too large";
            return false;
        }
        if (expected == Length)
        {
            objectMetadata = new MemoryObjectMetadata(Shape, dtype, format);
            error = null;
            return true;
        }
        // The original may store a partial last chunk under full-chunk metadata: accept it only when the payload is a
        // whole number of tokens along the format's token axis.
        var axis = format switch
        {
            MemoryFormat.KV2LTD or MemoryFormat.KVMla => 2,
            MemoryFormat.KVT2D => 0,
            MemoryFormat.KV2TD => 1,
            _ => -1,
        };
        if (axis >= 0 && Length > 0 && Length < expected && Shape[axis] > 0)
        {
            var perToken = expected / Shape[axis];
            if (perToken > 0 && Length % perToken == 0)
            {
                var tokens = (int)(Length / perToken);
                var shape = axis switch
                {
                    0 => Shape with { D0 = tokens },
                    1 => Shape with { D1 = tokens },
                    _ => Shape with { D2 = tokens },
                };
                objectMetadata = new MemoryObjectMetadata(shape, dtype, format);
                error = null;
                return true;
            }
        }
        error = $"length {Length} does not fit shape {Shape} of {dtype} ({expected} bytes)";
        return false;
    }

    /// <summary>Shape × item size in bytes, or -1 on overflow.</summary>
    internal static long ByteLength(KvShape shape, KvDType dtype)
    {
        try
        {
            checked
            {
                long n = shape.D0;
                if (shape.D1 != 0) { n *= shape.D1; }
                if (shape.D2 != 0) { n *= shape.D2; }
                if (shape.D3 != 0) { n *= shape.D3; }
                return n * dtype.ItemSize();
            }
        }
        catch (OverflowException)
        {
            return -1;
        }
    }

    /// <inheritdoc />
    public override string ToString()
    {
        var dtype = KvDTypes.FromWireCode(DTypeCode, out var d) ? d.ToString() : $"code {DTypeCode}";
        var format = Enum.IsDefined(typeof(MemoryFormat), FormatCode) ? ((MemoryFormat)FormatCode).ToString() : $"format {FormatCode}";
        return $"length {Length}, {format}, {dtype}, shape {Shape}, " + (Checksum is { } c ? (KeyBound ? $"xxh3 {c:x16} (bound to the key)" : $"xxh3 {c:x16} (payload only, version 1)") : "no checksum (original layout)");
    }
}
