using System.Buffers;
using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace LMCache.Serving;

/// <summary>
/// A request body read once into a single buffer and parsed in place: <see cref="JsonDocument"/> keeps pointers into
/// that buffer instead of copying it, so a body costs its own bytes plus the document's index, never several copies.
/// </summary>
/// <remarks>
/// With a <c>Content-Length</c> the buffer is allocated at that size up front (a declared length over the limit is
/// refused before anything is read); a chunked body grows the buffer by doubling up to the limit. Buffers up to
/// <see cref="PooledBytes"/> come from <see cref="ArrayPool{T}.Shared"/>; larger ones are plain arrays, so that a
/// burst of big requests leaves nothing cached in the pool. Dispose returns the buffer.
/// </remarks>
internal sealed class RequestBody : IDisposable
{
    /// <summary>Bodies up to this size use pooled buffers. 1 MiB: ordinary requests, pooled; huge prompts, not kept.</summary>
    private const int PooledBytes = 1 << 20;

    private const int InitialChunkedBytes = 16 << 10;

    private byte[]? _buffer;

    private RequestBody(byte[] buffer, JsonDocument document)
    {
        _buffer = buffer;
        Document = document;
    }

    /// <summary>The parsed body; its root is a JSON object whose strings are all valid Unicode.</summary>
    public JsonDocument Document { get; }

    /// <summary>Reads and parses the body of <paramref name="request"/>.</summary>
    /// <exception cref="OpenAiRequestException">413 over <paramref name="limit"/>, 408 when it arrives too slowly, 400 when it is not a JSON object of valid strings.</exception>
    public static async Task<RequestBody> ReadAsync(HttpRequest request, long limit, CancellationToken cancellationToken)
    {
        if (request.ContentLength is { } declared && declared > limit)
        {
            throw TooLarge(limit);
        }
        var capacity = request.ContentLength is { } exact ? (int)exact : InitialChunkedBytes;
        var buffer = Rent(capacity);
        var length = 0;
        try
        {
            while (true)
            {
                if (length == buffer.Length)
                {
                    if (request.ContentLength is not null)
                    {
                        // Kestrel ends the body at Content-Length: one more read returns 0 (or fails if it lied).
                        var extra = await request.Body.ReadAsync(new byte[1], cancellationToken).ConfigureAwait(false);
                        if (extra == 0)
                        {
                            break;
                        }
                        throw new OpenAiRequestException("The request body is longer than its Content-Length.");
                    }
                    if (length >= limit)
                    {
                        throw TooLarge(limit);
                    }
                    buffer = Grow(buffer, length, (int)Math.Min(limit + 1, (long)buffer.Length * 2));
                }
                var read = await request.Body.ReadAsync(buffer.AsMemory(length), cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    break;
                }
                length += read;
                if (length > limit)
                {
                    throw TooLarge(limit);
                }
            }
            var document = Parse(buffer.AsMemory(0, length));
            return new RequestBody(buffer, document);
        }
        catch (BadHttpRequestException ex)
        {
            Return(buffer);
            // Kestrel's own limits: the body limit (413), the minimum data rate (408), a malformed chunked body (400).
            throw new OpenAiRequestException(ex.StatusCode switch
            {
                StatusCodes.Status413PayloadTooLarge => $"The request body is larger than the limit of {limit} bytes.",
                StatusCodes.Status408RequestTimeout => "The request body arrived too slowly.",
                _ => $"The request body could not be read: {ex.Message}",
            }, param: null, status: ex.StatusCode);
        }
        catch
        {
            Return(buffer);
            throw;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Document.Dispose();
        if (_buffer is { } buffer)
        {
            _buffer = null;
            Return(buffer);
        }
    }

    private static JsonDocument Parse(ReadOnlyMemory<byte> json)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException ex)
        {
            throw new OpenAiRequestException($"The request body is not valid JSON: {ex.Message}");
        }
        try
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new OpenAiRequestException("The request body must be a JSON object.");
            }
            RequireValidUnicode(document.RootElement);
            return document;
        }
        catch
        {
            document.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Refuses any string or property name holding an unpaired UTF-16 surrogate escape (<c>"\ud800"</c>): JSON's
    /// grammar allows it, but it is not Unicode, cannot become UTF-8, and would fail deep inside the request.
    /// </summary>
    private static void RequireValidUnicode(JsonElement root)
    {
        foreach (var property in root.EnumerateObject())
        {
            if (!IsValidUnicode(JsonMarshal.GetRawUtf8PropertyName(property)))
            {
                throw new OpenAiRequestException("A property name holds an unpaired UTF-16 surrogate escape (such as \\ud800), which is not valid Unicode.");
            }
            if (!AllStringsValid(property.Value))
            {
                throw new OpenAiRequestException($"{property.Name} holds an unpaired UTF-16 surrogate escape (such as \\ud800), which is not valid Unicode.", property.Name);
            }
        }
    }

    private static bool AllStringsValid(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                return IsValidUnicode(JsonMarshal.GetRawUtf8Value(element));
            case JsonValueKind.Array:
                foreach (var item in element.EnumerateArray())
                {
                    if (!AllStringsValid(item))
                    {
                        return false;
                    }
                }
                return true;
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    if (!IsValidUnicode(JsonMarshal.GetRawUtf8PropertyName(property)) || !AllStringsValid(property.Value))
                    {
                        return false;
                    }
                }
                return true;
            default:
                return true;
        }
    }

    /// <summary>
    /// Whether the <c>\u</c> escapes of a raw JSON string pair up (a high surrogate followed by a low one). The parser
    /// already checked the escapes' syntax and that the unescaped bytes are UTF-8, so only the pairing is left.
    /// </summary>
    internal static bool IsValidUnicode(ReadOnlySpan<byte> raw)
    {
        var i = raw.IndexOf((byte)'\\');
        if (i < 0)
        {
            return true;
        }
        while (i < raw.Length)
        {
            if (raw[i] != '\\')
            {
                i++;
                continue;
            }
            if (raw[i + 1] != 'u')
            {
                i += 2;   // \" \\ \/ \b \f \n \r \t
                continue;
            }
            var unit = Hex4(raw.Slice(i + 2, 4));
            i += 6;
            if (unit is >= 0xDC00 and <= 0xDFFF)
            {
                return false;   // a low surrogate without a high one before it
            }
            if (unit is >= 0xD800 and <= 0xDBFF)
            {
                if (i + 6 > raw.Length || raw[i] != '\\' || raw[i + 1] != 'u' || Hex4(raw.Slice(i + 2, 4)) is < 0xDC00 or > 0xDFFF)
                {
                    return false;   // a high surrogate not followed by a low one
                }
                i += 6;
            }
        }
        return true;
    }

    /// <summary>
    /// The UTF-8 length of a JSON string's value, from its raw (escaped, quoted) text, without unescaping it: what a
    /// client's text really weighs, however it was escaped. The string must be valid (see <see cref="IsValidUnicode"/>).
    /// </summary>
    internal static long Utf8Length(ReadOnlySpan<byte> raw)
    {
        if (raw.Length >= 2 && raw[0] == '"')
        {
            raw = raw[1..^1];
        }
        long length = raw.Length;
        var i = raw.IndexOf((byte)'\\');
        if (i < 0)
        {
            return length;
        }
        while (i < raw.Length)
        {
            if (raw[i] != '\\')
            {
                i++;
                continue;
            }
            if (raw[i + 1] != 'u')
            {
                length -= 1;   // two bytes stand for one
                i += 2;
                continue;
            }
            var unit = Hex4(raw.Slice(i + 2, 4));
            if (unit is >= 0xD800 and <= 0xDBFF)
            {
                length -= 12 - 4;   // a pair of escapes stands for one 4-byte character
                i += 12;
                continue;
            }
            length -= 6 - (unit < 0x80 ? 1 : unit < 0x800 ? 2 : 3);
            i += 6;
        }
        return length;
    }

    private static int Hex4(ReadOnlySpan<byte> digits)
    {
        var value = 0;
        foreach (var d in digits)
        {
            value = (value << 4) | (d <= '9' ? d - '0' : (d | 0x20) - 'a' + 10);
        }
        return value;
    }

    private static OpenAiRequestException TooLarge(long limit) =>
        new($"The request body is larger than the limit of {limit} bytes.", param: null, status: StatusCodes.Status413PayloadTooLarge);

    private static byte[] Rent(int size) =>
        size <= PooledBytes ? ArrayPool<byte>.Shared.Rent(Math.Max(size, 1)) : GC.AllocateUninitializedArray<byte>(size);

    private static byte[] Grow(byte[] buffer, int length, int size)
    {
        var larger = Rent(size);
        buffer.AsSpan(0, length).CopyTo(larger);
        Return(buffer);
        return larger;
    }

    private static void Return(byte[] buffer)
    {
        if (buffer.Length <= PooledBytes)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
