using System.Buffers.Binary;
using System.Text;
using LMCache.Core.Memory;

namespace LMCache.Protocol;

/// <summary>
/// The 186-byte <c>lm://</c> request header, <c>ClientMetaMessage</c> in <c>lmcache/v1/protocol.py</c>:
/// <c>struct "iiiiiiiii150s"</c> = <c>command, length, fmt, dtype, location, shape0..3</c> as little-endian int32,
/// then the UTF-8 key right-padded with ASCII spaces to 150 bytes. This type owns both directions.
/// </summary>
/// <remarks>
/// <code>
/// offset  size  field
///      0     4  command   (LmCommand)
///      4     4  length    payload bytes that follow (PUT, AUTH); 0 otherwise
///      8     4  fmt       MemoryFormat; clients send 1 for GET/EXIST
///     12     4  dtype     dtype code; clients send 2 for GET/EXIST
///     16     4  location  0 = None (what everyone sends)
///     20    16  shape     4 × int32
///     36   150  key       UTF-8, space-padded
/// </code>
/// The fields are kept as raw integers so a header round-trips byte for byte; <see cref="TryGetMetadata"/> interprets them.
/// </remarks>
/// <param name="Command">The command.</param>
/// <param name="Length">Payload byte count (PUT and AUTH); 0 otherwise.</param>
/// <param name="Format">Raw <c>fmt</c> (a <see cref="MemoryFormat"/> value).</param>
/// <param name="DTypeCode">Raw dtype code (see <see cref="KvDTypes.FromWireCode"/>).</param>
/// <param name="Location">Raw <c>location</c>.</param>
/// <param name="Shape">The four shape integers.</param>
/// <param name="Key">The key string without padding (at most <see cref="MaxKeyBytes"/> UTF-8 bytes).</param>
public readonly record struct LmRequestHeader(
    LmCommand Command, int Length, int Format, int DTypeCode, int Location, KvShape Shape, string Key)
{
    /// <summary>Size of the encoded header in bytes.</summary>
    public const int Size = 186;

    /// <summary>Size of the key field in bytes: the longest UTF-8 key the protocol can carry.</summary>
    public const int MaxKeyBytes = 150;

    /// <summary>Offset of the key field.</summary>
    public const int KeyOffset = 36;

    /// <summary>The <c>fmt</c> clients send when they have no object yet (GET, EXIST, ...): 1 (<c>KV_2LTD</c>).</summary>
    public const int DefaultFormat = 1;

    /// <summary>The dtype code clients send when they have no object yet: 2 (float16).</summary>
    public const int DefaultDTypeCode = 2;

    /// <summary>A PUT of <paramref name="metadata"/>-described payload of <paramref name="length"/> bytes.</summary>
    public static LmRequestHeader Put(string key, int length, in MemoryObjectMetadata metadata) =>
        new(LmCommand.Put, length, (int)metadata.Format, metadata.DType.ToWireCode(), (int)LmLocation.None, metadata.Shape, key);

    /// <summary>A GET of <paramref name="key"/>.</summary>
    public static LmRequestHeader Get(string key) => Query(LmCommand.Get, key);

    /// <summary>An EXIST of <paramref name="key"/>.</summary>
    public static LmRequestHeader Exist(string key) => Query(LmCommand.Exist, key);

    /// <summary>A HEALTH probe carrying <see cref="LmWire.KeylessRequestKey"/> (see there why never an empty key).</summary>
    public static LmRequestHeader Health() => Query(LmCommand.Health, LmWire.KeylessRequestKey);

    /// <summary>
    /// A HEALTH probe carrying <paramref name="key"/>: a key the server already accepted from this client, so a server
    /// of any key era (which parses the key of every request) accepts the probe as it accepted that key.
    /// </summary>
    public static LmRequestHeader Health(string key) => Query(LmCommand.Health, key);

    /// <summary>A LIST request carrying <see cref="LmWire.KeylessRequestKey"/>.</summary>
    public static LmRequestHeader List() => Query(LmCommand.List, LmWire.KeylessRequestKey);

    /// <summary>An AUTH request announcing <paramref name="tokenBytes"/> token bytes after the header.</summary>
    public static LmRequestHeader Auth(int tokenBytes) =>
        new(LmCommand.Auth, tokenBytes, DefaultFormat, DefaultDTypeCode, (int)LmLocation.None, default, string.Empty);

    private static LmRequestHeader Query(LmCommand command, string key) =>
        new(command, 0, DefaultFormat, DefaultDTypeCode, (int)LmLocation.None, default, key);

    /// <summary>True when <paramref name="key"/> fits the 150-byte key field.</summary>
    public static bool KeyFits(string key) => Encoding.UTF8.GetByteCount(key) <= MaxKeyBytes;

    /// <summary>
    /// Writes the 186 bytes into <paramref name="destination"/>. Throws <see cref="ArgumentException"/> when the key is
    /// longer than 150 UTF-8 bytes (the original asserts) or the destination is too small.
    /// </summary>
    public void WriteTo(Span<byte> destination)
    {
        if (destination.Length < Size)
        {
            throw new ArgumentException($"The destination holds {destination.Length} bytes; a request header needs {Size}.", nameof(destination));
        }
        BinaryPrimitives.WriteInt32LittleEndian(destination, (int)Command);
        BinaryPrimitives.WriteInt32LittleEndian(destination[4..], Length);
        BinaryPrimitives.WriteInt32LittleEndian(destination[8..], Format);
        BinaryPrimitives.WriteInt32LittleEndian(destination[12..], DTypeCode);
        BinaryPrimitives.WriteInt32LittleEndian(destination[16..], Location);
        BinaryPrimitives.WriteInt32LittleEndian(destination[20..], Shape.D0);
        BinaryPrimitives.WriteInt32LittleEndian(destination[24..], Shape.D1);
        BinaryPrimitives.WriteInt32LittleEndian(destination[28..], Shape.D2);
        BinaryPrimitives.WriteInt32LittleEndian(destination[32..], Shape.D3);
        var keyField = destination.Slice(KeyOffset, MaxKeyBytes);
        int written;
        try
        {
            written = Encoding.UTF8.GetBytes(Key ?? string.Empty, keyField);
        }
        catch (ArgumentException)
        {
            throw new ArgumentException(
                $"The key is {Encoding.UTF8.GetByteCount(Key ?? string.Empty)} UTF-8 bytes; the lm:// protocol carries at most {MaxKeyBytes}.", nameof(Key));
        }
        keyField[written..].Fill((byte)' ');
    }

    /// <summary>
    /// Decodes a header. The key is UTF-8-decoded and stripped of ASCII whitespace at both ends, as the original
    /// server does. Only the framing is checked here (enough bytes, valid UTF-8); <see cref="Validate"/> checks the fields.
    /// </summary>
    /// <param name="source">At least 186 bytes.</param>
    /// <param name="header">The decoded header.</param>
    /// <param name="error">Why decoding failed, or null.</param>
    public static bool TryRead(ReadOnlySpan<byte> source, out LmRequestHeader header, out string? error)
    {
        header = default;
        if (source.Length < Size)
        {
            error = $"a request header is {Size} bytes, got {source.Length}";
            return false;
        }
        var keyField = source.Slice(KeyOffset, MaxKeyBytes).Trim(" \t\r\n\v\f\0"u8);
        string key;
        try
        {
            key = s_strictUtf8.GetString(keyField);
        }
        catch (DecoderFallbackException)
        {
            error = "the key field is not valid UTF-8";
            return false;
        }
        header = new LmRequestHeader(
            (LmCommand)BinaryPrimitives.ReadInt32LittleEndian(source),
            BinaryPrimitives.ReadInt32LittleEndian(source[4..]),
            BinaryPrimitives.ReadInt32LittleEndian(source[8..]),
            BinaryPrimitives.ReadInt32LittleEndian(source[12..]),
            BinaryPrimitives.ReadInt32LittleEndian(source[16..]),
            new KvShape(
                BinaryPrimitives.ReadInt32LittleEndian(source[20..]),
                BinaryPrimitives.ReadInt32LittleEndian(source[24..]),
                BinaryPrimitives.ReadInt32LittleEndian(source[28..]),
                BinaryPrimitives.ReadInt32LittleEndian(source[32..])),
            key);
        error = null;
        return true;
    }

    /// <summary>
    /// Checks the fields a server relies on: a known command, a non-negative length not above
    /// <paramref name="maxPayloadBytes"/> (only PUT and AUTH carry a payload), and for PUT a known <c>fmt</c>, a known
    /// dtype code and non-negative shape dimensions. Returns null when valid, else the reason.
    /// </summary>
    public string? Validate(long maxPayloadBytes)
    {
        switch (Command)
        {
            case LmCommand.Put:
                if (Length < 0 || Length > maxPayloadBytes)
                {
                    return $"PUT length {Length} is outside 0..{maxPayloadBytes}";
                }
                if (Format is < 0 or > LmWire.MaxFormatCode)
                {
                    return $"PUT fmt {Format} is not a known MemoryFormat";
                }
                if (!KvDTypes.FromWireCode(DTypeCode, out _))
                {
                    return $"PUT dtype code {DTypeCode} is not a known dtype";
                }
                if (Shape.D0 < 0 || Shape.D1 < 0 || Shape.D2 < 0 || Shape.D3 < 0)
                {
                    return $"PUT shape {Shape} has a negative dimension";
                }
                return null;
            case LmCommand.Auth:
                return Length is < 0 or > LmWire.MaxTokenBytes ? $"AUTH token length {Length} is outside 0..{LmWire.MaxTokenBytes}" : null;
            case LmCommand.Get or LmCommand.Exist or LmCommand.List or LmCommand.Health:
                return Length == 0 ? null : $"{Command} carries length {Length}; only PUT has a payload";
            default:
                return $"unknown command {(int)Command}";
        }
    }

    /// <summary>
    /// Interprets <c>fmt</c>, dtype code and shape as memory-object metadata; false when they do not name a known
    /// format and dtype with a valid shape. Dtype code 1 decodes as float16, like the original.
    /// </summary>
    public bool TryGetMetadata(out MemoryObjectMetadata metadata) =>
        LmWire.TryGetMetadata(Format, DTypeCode, Shape, out metadata);

    private static readonly UTF8Encoding s_strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
}
