using System.Buffers;
using System.Globalization;
using System.Text.Json;
using MessagePack;

namespace LMCache.Controller.Worker;

/// <summary>
/// One controller message: a msgpack map with <c>"type": "&lt;ClassName&gt;"</c> plus named fields — the shape of the
/// original's <c>msgspec.Struct(tag=True)</c> messages (<c>RegisterMsg</c>, <c>KVAdmitMsg</c>, <c>ClearWorkerMsg</c>, …).
/// </summary>
/// <remarks>
/// Field values are <see cref="string"/>, <see cref="long"/>, <see cref="double"/>, <see cref="bool"/>, null,
/// <see cref="List{T}"/> of values, or <see cref="Dictionary{TKey,TValue}"/> of string to value. Integers decode as
/// <see cref="long"/>. A frame that starts with <c>{</c> is read as JSON of the same shape (the original accepts that
/// from external producers).
/// </remarks>
internal sealed class ControlMessage
{
    public ControlMessage(string type)
    {
        Type = type;
    }

    public string Type { get; }

    public Dictionary<string, object?> Fields { get; } = new(StringComparer.Ordinal);

    public object? this[string name]
    {
        get => Fields.GetValueOrDefault(name);
        set => Fields[name] = value;
    }

    public ControlMessage With(string name, object? value)
    {
        Fields[name] = value;
        return this;
    }

    public string GetString(string name) =>
        Fields.GetValueOrDefault(name) switch
        {
            string s => s,
            null => throw new FormatException($"{Type}: field '{name}' is missing."),
            var other => Convert.ToString(other, CultureInfo.InvariantCulture) ?? string.Empty,
        };

    public string? GetStringOrNull(string name) => Fields.GetValueOrDefault(name) is null ? null : GetString(name);

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

    public long GetInt64OrDefault(string name, long fallback) => Fields.GetValueOrDefault(name) is null ? fallback : GetInt64(name);

    public double GetDoubleOrDefault(string name, double fallback) =>
        Fields.GetValueOrDefault(name) switch
        {
            null => fallback,
            double d => d,
            long l => l,
            int i => i,
            _ => fallback,
        };

    public bool GetBoolOrDefault(string name, bool fallback) => Fields.GetValueOrDefault(name) is bool b ? b : fallback;

    public IReadOnlyList<object?> GetListOrEmpty(string name) => Fields.GetValueOrDefault(name) as IReadOnlyList<object?> ?? [];

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

    public string[] GetStringArray(string name) =>
        [.. GetListOrEmpty(name).Select(v => v as string ?? throw new FormatException($"{Type}: field '{name}' must be a list of strings."))];

    public override string ToString() => Type;
}

/// <summary>Encodes and decodes <see cref="ControlMessage"/> frames as msgpack maps (or JSON on input).</summary>
internal static class ControlMessageCodec
{
    public const string TypeField = "type";

    public static byte[] Encode(ControlMessage message)
    {
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
