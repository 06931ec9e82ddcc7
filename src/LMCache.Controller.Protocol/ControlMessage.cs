using System.Buffers;
using System.Globalization;
using System.Text.Json;
using MessagePack;

namespace LMCache.Controller.Protocol;

/// <summary>
/// One controller message: a msgpack map with <c>"type": "&lt;ClassName&gt;"</c> plus named fields — the shape of the
/// original's <c>msgspec.Struct(tag=True)</c> messages (<c>RegisterMsg</c>, <c>KVAdmitMsg</c>, <c>ClearWorkerMsg</c>, …).
/// </summary>
/// <remarks>
/// Field values are <see cref="string"/>, <see cref="long"/>, <see cref="double"/>, <see cref="bool"/>, null,
/// <see cref="List{T}"/> of values, or <see cref="Dictionary{TKey,TValue}"/> of string to value. Integers decode as
/// <see cref="long"/>. A frame that starts with <c>{</c> is read as JSON of the same shape (the original accepts that
/// from external producers). The getters convert leniently between the integer, float and string forms a Python
/// producer may use, and throw <see cref="FormatException"/> naming the message type and field when a required field is
/// missing or of the wrong kind.
/// </remarks>
public sealed class ControlMessage
{
    /// <summary>Creates an empty message of <paramref name="type"/>.</summary>
    /// <param name="type">The message type tag, one of <see cref="MessageTypes"/> (the original's class name).</param>
    public ControlMessage(string type)
    {
        ArgumentException.ThrowIfNullOrEmpty(type);
        Type = type;
    }

    /// <summary>The type tag (the map's <c>"type"</c> entry).</summary>
    public string Type { get; }

    /// <summary>The named fields, in insertion order as encoded (without <c>"type"</c>).</summary>
    public Dictionary<string, object?> Fields { get; } = new(StringComparer.Ordinal);

    /// <summary>A field's value, or null when absent; setting adds or replaces it.</summary>
    /// <param name="name">The field name (snake_case, as in the original).</param>
    public object? this[string name]
    {
        get => Fields.GetValueOrDefault(name);
        set => Fields[name] = value;
    }

    /// <summary>Sets a field and returns this message, for building messages in one expression.</summary>
    public ControlMessage With(string name, object? value)
    {
        Fields[name] = value;
        return this;
    }

    /// <summary>A required field as text (numbers are formatted invariantly).</summary>
    /// <exception cref="FormatException">The field is missing.</exception>
    public string GetString(string name) =>
        Fields.GetValueOrDefault(name) switch
        {
            string s => s,
            null => throw new FormatException($"{Type}: field '{name}' is missing."),
            var other => Convert.ToString(other, CultureInfo.InvariantCulture) ?? string.Empty,
        };

    /// <summary>An optional field as text, or null when absent or null.</summary>
    public string? GetStringOrNull(string name) => Fields.GetValueOrDefault(name) is null ? null : GetString(name);

    /// <summary>A required integer field (an integral float or a numeric string is accepted).</summary>
    /// <exception cref="FormatException">The field is missing or not an integer.</exception>
    public long GetInt64(string name) =>
        Fields.GetValueOrDefault(name) switch
        {
            long l => l,
            int i => i,
            double d when d == Math.Floor(d) => (long)d,
            string s when long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) => parsed,
            null => throw new FormatException($"{Type}: field '{name}' is missing."),
            var other => throw new FormatException($"{Type}: field '{name}' is {other.GetType().Name}, not an integer."),
        };

    /// <summary>An optional integer field, or <paramref name="fallback"/> when absent or null.</summary>
    public long GetInt64OrDefault(string name, long fallback) => Fields.GetValueOrDefault(name) is null ? fallback : GetInt64(name);

    /// <summary>An optional number, or <paramref name="fallback"/> when absent, null or not a number.</summary>
    public double GetDoubleOrDefault(string name, double fallback) =>
        Fields.GetValueOrDefault(name) switch
        {
            null => fallback,
            double d => d,
            long l => l,
            int i => i,
            _ => fallback,
        };

    /// <summary>An optional boolean, or <paramref name="fallback"/> when absent or not a boolean.</summary>
    public bool GetBoolOrDefault(string name, bool fallback) => Fields.GetValueOrDefault(name) is bool b ? b : fallback;

    /// <summary>An optional list field, or an empty list when absent or not a list.</summary>
    public IReadOnlyList<object?> GetListOrEmpty(string name) => Fields.GetValueOrDefault(name) as IReadOnlyList<object?> ?? [];

    /// <summary>An optional list of 32-bit integers (empty when absent).</summary>
    /// <exception cref="FormatException">An item is not an integer, or does not fit 32 bits.</exception>
    public int[] GetInt32Array(string name)
    {
        var list = GetListOrEmpty(name);
        var result = new int[list.Count];
        for (var i = 0; i < list.Count; i++)
        {
            result[i] = list[i] switch
            {
                long l => checked((int)l),
                int n => n,
                _ => throw new FormatException($"{Type}: field '{name}' must be a list of integers."),
            };
        }
        return result;
    }

    /// <summary>An optional list of strings (empty when absent).</summary>
    /// <exception cref="FormatException">An item is not a string.</exception>
    public string[] GetStringArray(string name) =>
        [.. GetListOrEmpty(name).Select(v => v as string ?? throw new FormatException($"{Type}: field '{name}' must be a list of strings."))];

    /// <summary>The type tag.</summary>
    public override string ToString() => Type;
}

/// <summary>Encodes and decodes <see cref="ControlMessage"/> frames as msgpack maps (or JSON on input).</summary>
/// <remarks>
/// Wire layout (one ZeroMQ frame per message): a msgpack map whose first entry is <c>"type"</c> → the type tag, then
/// the fields in insertion order — what the original's <c>msgspec.msgpack.encode</c> writes for a
/// <c>Struct(tag=True)</c>. Values: nil, bool, integers (the smallest msgpack form), float64, str, arrays and string-keyed
/// maps. On input, a binary value decodes as upper-case hex text, maps and arrays nest at most 16 deep, and a frame
/// starting with <c>{</c> is read as JSON.
/// </remarks>
public static class ControlMessageCodec
{
    /// <summary>The map key of the type tag.</summary>
    public const string TypeField = "type";

    /// <summary>Encodes <paramref name="message"/> as one msgpack frame.</summary>
    /// <exception cref="ArgumentException">A field holds a value the protocol cannot carry.</exception>
    public static byte[] Encode(ControlMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        var buffer = new ArrayBufferWriter<byte>(256);
        var writer = new MessagePackWriter(buffer);
        writer.WriteMapHeader(message.Fields.Count + 1);
        writer.Write(TypeField);
        writer.Write(message.Type);
        foreach (var (name, value) in message.Fields)
        {
            writer.Write(name);
            WriteValue(ref writer, value);
        }
        writer.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Decodes one frame (msgpack map, or a JSON object).</summary>
    /// <exception cref="FormatException">The frame is not a map with a string <c>"type"</c>, or holds an unsupported value.</exception>
    public static ControlMessage Decode(ReadOnlyMemory<byte> frame)
    {
        if (frame.Length > 0 && frame.Span[0] == (byte)'{')
        {
            return DecodeJson(frame);
        }
        var reader = new MessagePackReader(frame);
        if (reader.NextMessagePackType != MessagePackType.Map)
        {
            throw new FormatException("A controller message must be a msgpack map.");
        }
        var map = (Dictionary<string, object?>)ReadValue(ref reader, 0)!;
        return FromMap(map);
    }

    private static ControlMessage FromMap(Dictionary<string, object?> map)
    {
        if (map.GetValueOrDefault(TypeField) is not string type || type.Length == 0)
        {
            throw new FormatException("A controller message needs a string \"type\" field.");
        }
        var message = new ControlMessage(type);
        foreach (var (name, value) in map)
        {
            if (name != TypeField)
            {
                message.Fields[name] = value;
            }
        }
        return message;
    }

    private static ControlMessage DecodeJson(ReadOnlyMemory<byte> frame)
    {
        using var document = JsonDocument.Parse(frame);
        if (FromJson(document.RootElement) is not Dictionary<string, object?> map)
        {
            throw new FormatException("A controller message must be a JSON object.");
        }
        return FromMap(map);
    }

    private static object? FromJson(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => element.EnumerateObject().ToDictionary(p => p.Name, p => FromJson(p.Value), StringComparer.Ordinal),
        JsonValueKind.Array => element.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.String => element.GetString(),
        JsonValueKind.Number => element.TryGetInt64(out var l) ? l : element.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    private static void WriteValue(ref MessagePackWriter writer, object? value)
    {
        switch (value)
        {
            case null:
                writer.WriteNil();
                break;
            case string s:
                writer.Write(s);
                break;
            case bool b:
                writer.Write(b);
                break;
            case int i:
                writer.Write(i);
                break;
            case long l:
                writer.Write(l);
                break;
            case double d:
                writer.Write(d);
                break;
            case int[] ints:
                writer.WriteArrayHeader(ints.Length);
                foreach (var n in ints)
                {
                    writer.Write(n);
                }
                break;
            case IReadOnlyDictionary<string, object?> map:
                writer.WriteMapHeader(map.Count);
                foreach (var (k, v) in map)
                {
                    writer.Write(k);
                    WriteValue(ref writer, v);
                }
                break;
            case System.Collections.IList list:
                writer.WriteArrayHeader(list.Count);
                foreach (var item in list)
                {
                    WriteValue(ref writer, item);
                }
                break;
            default:
                throw new ArgumentException($"Cannot encode a {value.GetType().Name} in a controller message.", nameof(value));
        }
    }

    private static object? ReadValue(ref MessagePackReader reader, int depth)
    {
        if (depth > 16)
        {
            throw new FormatException("Controller message nested too deeply.");
        }
        switch (reader.NextMessagePackType)
        {
            case MessagePackType.Nil:
                reader.ReadNil();
                return null;
            case MessagePackType.Boolean:
                return reader.ReadBoolean();
            case MessagePackType.Integer:
                return reader.ReadInt64();
            case MessagePackType.Float:
                return reader.ReadDouble();
            case MessagePackType.String:
                return reader.ReadString();
            case MessagePackType.Binary:
                return Convert.ToHexString(reader.ReadBytes()!.Value.ToArray());
            case MessagePackType.Array:
                {
                    var count = reader.ReadArrayHeader();
                    var list = new List<object?>(count);
                    for (var i = 0; i < count; i++)
                    {
                        list.Add(ReadValue(ref reader, depth + 1));
                    }
                    return list;
                }
            case MessagePackType.Map:
                {
                    var count = reader.ReadMapHeader();
                    var map = new Dictionary<string, object?>(count, StringComparer.Ordinal);
                    for (var i = 0; i < count; i++)
                    {
                        var key = ReadValue(ref reader, depth + 1);
                        map[Convert.ToString(key, CultureInfo.InvariantCulture) ?? string.Empty] = ReadValue(ref reader, depth + 1);
                    }
                    return map;
                }
            default:
                throw new FormatException($"Unsupported msgpack type {reader.NextMessagePackType} in a controller message.");
        }
    }
}
