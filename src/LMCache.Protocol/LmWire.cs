using System.Text;
using LMCache.Core.Memory;

namespace LMCache.Protocol;

/// <summary>Constants and helpers shared by the <c>lm://</c> messages.</summary>
public static class LmWire
{
    /// <summary>The largest <c>fmt</c> value the protocol knows (7 = <c>KV_DSA_INDEX_FMT</c> in the newest original).</summary>
    public const int MaxFormatCode = 7;

    /// <summary>
    /// The key field of requests that name no chunk (HEALTH, LIST): a syntactically valid key of the original's
    /// mid/late-2025 form, <c>fmt@model@world_size@worker_id@hash@dtype</c>, with hash 0.
    /// </summary>
    /// <remarks>
    /// The original server parses the key of <em>every</em> request header with <c>CacheEngineKey.from_string</c>
    /// before it looks at the command, and closes the connection when that raises — an empty (all-space) key field
    /// included. This key parses there, so HEALTH is answered. No single key parses in every era (the 2026 form,
    /// <c>model@world_size@worker_id@hash@dtype</c>, wants a dtype where this form has the hash), which is why the
    /// connector prefers a key the server has already accepted from it and falls back to EXIST when HEALTH is refused.
    /// Our server does not parse the key of HEALTH or LIST and answers them with any key, an empty one included.
    /// </remarks>
    public const string KeylessRequestKey = "vllm@lmcache-keyless@1@0@0@half";

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
