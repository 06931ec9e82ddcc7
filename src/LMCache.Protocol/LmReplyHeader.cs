using System.Buffers.Binary;
using LMCache.Core.Memory;

namespace LMCache.Protocol;

/// <summary>
/// The 36-byte <c>lm://</c> reply header, <c>ServerMetaMessage</c> in <c>lmcache/v1/protocol.py</c>:
/// <c>struct "iiiiiiiii"</c> in the encoder's order <c>code, length, fmt, dtype, shape0..3, location</c> (location is
/// last here, fifth in the request). One version of the original decoded it in another order; the encoder's is the
/// one on the wire, and this type owns both directions so they cannot disagree.
/// </summary>
/// <param name="Code">200 or 400.</param>
/// <param name="Length">Payload bytes that follow (GET hit, LIST); 0 otherwise.</param>
/// <param name="Format">Raw <c>fmt</c>.</param>
/// <param name="DTypeCode">Raw dtype code.</param>
/// <param name="Shape">The four shape integers.</param>
/// <param name="Location">Raw <c>location</c>; servers send 0.</param>
public readonly record struct LmReplyHeader(LmReplyCode Code, int Length, int Format, int DTypeCode, KvShape Shape, int Location)
{
    /// <summary>Size of the encoded header in bytes.</summary>
    public const int Size = 36;

    /// <summary>
    /// The reply of a GET miss, EXIST "absent" and a refused AUTH: <c>code=400, length=0, fmt=1, dtype=2</c>, zero
    /// shape, location 0 (byte-identical to the original's).
    /// </summary>
    public static LmReplyHeader Fail { get; } = new(LmReplyCode.Fail, 0, LmRequestHeader.DefaultFormat, LmRequestHeader.DefaultDTypeCode, default, 0);

    /// <summary>The reply of EXIST "present", HEALTH and an accepted AUTH: like <see cref="Fail"/> with code 200.</summary>
    public static LmReplyHeader Ok { get; } = Fail with { Code = LmReplyCode.Success };

    /// <summary>The reply of a GET hit: 200, the stored length, fmt, dtype and shape, location 0.</summary>
    public static LmReplyHeader Hit(int length, int format, int dtypeCode, KvShape shape) =>
        new(LmReplyCode.Success, length, format, dtypeCode, shape, 0);

    /// <summary>The reply of a LIST: 200 and the length of the key list that follows.</summary>
    public static LmReplyHeader ListReply(int length) => Ok with { Length = length };

    /// <summary>True when <see cref="Code"/> is 200.</summary>
    public bool IsSuccess => Code == LmReplyCode.Success;

    /// <summary>Writes the 36 bytes into <paramref name="destination"/>.</summary>
    public void WriteTo(Span<byte> destination)
    {
        if (destination.Length < Size)
        {
            throw new ArgumentException($"The destination holds {destination.Length} bytes; a reply header needs {Size}.", nameof(destination));
        }
        BinaryPrimitives.WriteInt32LittleEndian(destination, (int)Code);
        BinaryPrimitives.WriteInt32LittleEndian(destination[4..], Length);
        BinaryPrimitives.WriteInt32LittleEndian(destination[8..], Format);
        BinaryPrimitives.WriteInt32LittleEndian(destination[12..], DTypeCode);
        BinaryPrimitives.WriteInt32LittleEndian(destination[16..], Shape.D0);
        BinaryPrimitives.WriteInt32LittleEndian(destination[20..], Shape.D1);
        BinaryPrimitives.WriteInt32LittleEndian(destination[24..], Shape.D2);
        BinaryPrimitives.WriteInt32LittleEndian(destination[28..], Shape.D3);
        BinaryPrimitives.WriteInt32LittleEndian(destination[32..], Location);
    }

    /// <summary>Decodes 36 bytes (no field checks: see <see cref="Validate"/>).</summary>
    public static LmReplyHeader Read(ReadOnlySpan<byte> source)
    {
        if (source.Length < Size)
        {
            throw new ArgumentException($"A reply header is {Size} bytes, got {source.Length}.", nameof(source));
        }
        return new LmReplyHeader(
            (LmReplyCode)BinaryPrimitives.ReadInt32LittleEndian(source),
            BinaryPrimitives.ReadInt32LittleEndian(source[4..]),
            BinaryPrimitives.ReadInt32LittleEndian(source[8..]),
            BinaryPrimitives.ReadInt32LittleEndian(source[12..]),
            new KvShape(
                BinaryPrimitives.ReadInt32LittleEndian(source[16..]),
                BinaryPrimitives.ReadInt32LittleEndian(source[20..]),
                BinaryPrimitives.ReadInt32LittleEndian(source[24..]),
                BinaryPrimitives.ReadInt32LittleEndian(source[28..])),
            BinaryPrimitives.ReadInt32LittleEndian(source[32..]));
    }

    /// <summary>
    /// Checks what a client relies on: a code of 200 or 400 and a length in <c>0..maxPayloadBytes</c> (0 unless 200).
    /// Returns null when valid, else the reason (the connection is then out of step and must be closed).
    /// </summary>
    public string? Validate(long maxPayloadBytes)
    {
        if (Code is not (LmReplyCode.Success or LmReplyCode.Fail))
        {
            return $"reply code {(int)Code} is neither 200 nor 400";
        }
        if (Length < 0 || Length > maxPayloadBytes)
        {
            return $"reply length {Length} is outside 0..{maxPayloadBytes}";
        }
        return Code == LmReplyCode.Fail && Length != 0 ? $"a 400 reply carries length {Length}" : null;
    }

    /// <summary>Interprets <c>fmt</c>, dtype code and shape as metadata; false when they are not a known combination.</summary>
    public bool TryGetMetadata(out MemoryObjectMetadata metadata) =>
        LmWire.TryGetMetadata(Format, DTypeCode, Shape, out metadata);
}
