using System.Text;
using LMCache.Core.Memory;

namespace LMCache.Protocol;

/// <summary>Constants and helpers shared by the <c>lm://</c> messages.</summary>
public static class LmWire
{
    /// <summary>The largest <c>fmt</c> value the protocol knows (7 = <c>KV_DSA_INDEX_FMT</c> in the newest original).</summary>
    public const int MaxFormatCode = 7;

    /// <summary>Longest AUTH token in bytes (our extension).</summary>
    public const int MaxTokenBytes = 4096;

    /// <summary>
    /// Interprets raw <c>fmt</c>/dtype/shape as metadata. False when the format is outside
    /// <see cref="MemoryFormat"/>, the dtype code is unknown, or the shape is not valid (first dimension ≤ 0 or a
    /// negative one).
    /// </summary>
    public static bool TryGetMetadata(int format, int dtypeCode, KvShape shape, out MemoryObjectMetadata metadata)
    {
        metadata = default;
        if (!Enum.IsDefined((MemoryFormat)format) || !KvDTypes.FromWireCode(dtypeCode, out var dtype) || !shape.IsValid)
        {
            return false;
        }
        metadata = new MemoryObjectMetadata(shape, dtype, (MemoryFormat)format);
        return true;
    }

    /// <summary>
    /// Encodes the payload of a LIST reply: each key's UTF-8 bytes followed by <c>'\n'</c> (the v0 server's layout).
    /// </summary>
    public static byte[] EncodeKeyList(IEnumerable<string> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var builder = new StringBuilder();
        foreach (var key in keys)
        {
            builder.Append(key).Append('\n');
        }
        return Encoding.UTF8.GetBytes(builder.ToString());
    }

    /// <summary>Decodes the payload of a LIST reply (empty lines are skipped).</summary>
    public static IReadOnlyList<string> DecodeKeyList(ReadOnlySpan<byte> payload) =>
        Encoding.UTF8.GetString(payload).Split('\n', StringSplitOptions.RemoveEmptyEntries);
}
