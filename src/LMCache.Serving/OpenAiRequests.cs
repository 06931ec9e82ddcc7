using System.Text;
using System.Text.Json;
using LMCache.Inference.Generation;

namespace LMCache.Serving;

/// <summary>The parameters shared by <c>/v1/completions</c> and <c>/v1/chat/completions</c>, validated.</summary>
internal sealed record CommonParameters(
    string? Model, int? MaxTokens, SamplingParameters Sampling, IReadOnlyList<string> Stop, bool Stream, bool IncludeUsage,
    bool IgnoreEos, string? CacheSalt);

/// <summary>Parses and validates OpenAI request bodies; every problem is an <see cref="OpenAiRequestException"/> (400).</summary>
internal static class OpenAiRequests
{
    public static JsonDocument ParseBody(ReadOnlySpan<byte> body)
    {
        try
        {
            var doc = JsonDocument.Parse(body.ToArray());
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw new OpenAiRequestException("The request body must be a JSON object.");
            }
            return doc;
        }
        catch (JsonException ex)
        {
            throw new OpenAiRequestException($"The request body is not valid JSON: {ex.Message}");
        }
    }

    public static CommonParameters ParseCommon(JsonElement root, bool chat)
    {
        var n = OptionalInt(root, "n") ?? 1;
        if (n != 1)
        {
            throw new OpenAiRequestException("Only n = 1 is supported.", "n");
        }
        if (OptionalBool(root, "echo") == true)
        {
            throw new OpenAiRequestException("echo is not supported.", "echo");
        }
        foreach (var penalty in new[] { "presence_penalty", "frequency_penalty" })
        {
            if (OptionalDouble(root, penalty) is { } p && p != 0)
            {
                throw new OpenAiRequestException($"{penalty} is not supported (only 0).", penalty);
            }
        }
        if (root.TryGetProperty("best_of", out var bestOf) && bestOf.ValueKind == JsonValueKind.Number && bestOf.GetInt32() != 1)
        {
            throw new OpenAiRequestException("Only best_of = 1 is supported.", "best_of");
        }
        var maxTokens = OptionalInt(root, "max_completion_tokens") ?? OptionalInt(root, "max_tokens");
        if (maxTokens is < 1)
        {
            throw new OpenAiRequestException($"max_tokens must be at least 1, got {maxTokens}.", "max_tokens");
        }
        var temperature = OptionalDouble(root, "temperature") ?? 1.0;
        if (temperature is < 0 or > 2)
        {
            throw new OpenAiRequestException($"temperature must be between 0 and 2, got {temperature}.", "temperature");
        }
        var topP = OptionalDouble(root, "top_p") ?? 1.0;
        if (topP is <= 0 or > 1)
        {
            throw new OpenAiRequestException($"top_p must be in (0, 1], got {topP}.", "top_p");
        }
        long? seed = null;
        if (root.TryGetProperty("seed", out var seedElement) && seedElement.ValueKind != JsonValueKind.Null)
        {
            seed = seedElement.ValueKind == JsonValueKind.Number && seedElement.TryGetInt64(out var s) ? s : throw new OpenAiRequestException("seed must be an integer.", "seed");
        }
        var stop = new List<string>();
        if (root.TryGetProperty("stop", out var stopElement))
        {
            switch (stopElement.ValueKind)
            {
                case JsonValueKind.String:
                    stop.Add(stopElement.GetString()!);
                    break;
                case JsonValueKind.Array:
                    foreach (var item in stopElement.EnumerateArray())
                    {
                        stop.Add(item.ValueKind == JsonValueKind.String ? item.GetString()! : throw new OpenAiRequestException("stop must be a string or an array of strings.", "stop"));
                    }
                    break;
                case JsonValueKind.Null:
                    break;
                default:
                    throw new OpenAiRequestException("stop must be a string or an array of strings.", "stop");
            }
        }
        if (stop.Count > 4)
        {
            throw new OpenAiRequestException("At most 4 stop sequences are allowed.", "stop");
        }
        var stream = OptionalBool(root, "stream") ?? false;
        var includeUsage = root.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object && (OptionalBool(so, "include_usage") ?? false);
        var model = root.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString() : null;
        var salt = root.TryGetProperty("cache_salt", out var cs) && cs.ValueKind == JsonValueKind.String ? cs.GetString() : null;
        if (salt is { Length: 0 })
        {
            throw new OpenAiRequestException("cache_salt must not be empty.", "cache_salt");
        }
        _ = chat;
        return new CommonParameters(model, maxTokens, new SamplingParameters(temperature, topP, seed), stop, stream, includeUsage,
            OptionalBool(root, "ignore_eos") ?? false, salt);
    }

    /// <summary>The prompt of a completion request: text, or token ids (an array of integers, or a one-element array of either).</summary>
    public static (string? Text, int[]? Ids) ParsePrompt(JsonElement root)
    {
        if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind == JsonValueKind.Null)
        {
            throw new OpenAiRequestException("prompt is required.", "prompt");
        }
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                return (prompt.GetString()!, null);
            case JsonValueKind.Array:
                var items = prompt.EnumerateArray().ToList();
                if (items.Count == 0)
                {
                    throw new OpenAiRequestException("prompt must not be empty.", "prompt");
                }
                if (items.All(i => i.ValueKind == JsonValueKind.Number))
                {
                    return (null, items.Select(i => i.TryGetInt32(out var v) ? v : throw new OpenAiRequestException("prompt token ids must be integers.", "prompt")).ToArray());
                }
                if (items.Count == 1)
                {
                    return ParsePrompt(JsonDocument.Parse($"{{\"prompt\": {items[0].GetRawText()}}}").RootElement);
                }
                throw new OpenAiRequestException("Only one prompt per request is supported.", "prompt");
            default:
                throw new OpenAiRequestException("prompt must be a string, an array of token ids, or a one-element array of either.", "prompt");
        }
    }

    /// <summary>Chat messages with their content flattened to text (content parts of type text are concatenated).</summary>
    public static List<JsonElement> ParseMessages(JsonElement root)
    {
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array)
        {
            throw new OpenAiRequestException("messages must be an array.", "messages");
        }
        var result = new List<JsonElement>();
        foreach (var message in messages.EnumerateArray())
        {
            if (message.ValueKind != JsonValueKind.Object || !message.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String)
            {
                throw new OpenAiRequestException("Each message must be an object with a string 'role'.", "messages");
            }
            var copy = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
            foreach (var property in message.EnumerateObject())
            {
                copy[property.Name] = property.Value;
            }
            if (message.TryGetProperty("content", out var content))
            {
                switch (content.ValueKind)
                {
                    case JsonValueKind.String:
                    case JsonValueKind.Null:
                        break;
                    case JsonValueKind.Array:
                        var text = new StringBuilder();
                        foreach (var part in content.EnumerateArray())
                        {
                            if (part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var type) && type.GetString() == "text" && part.TryGetProperty("text", out var t))
                            {
                                text.Append(t.GetString());
                            }
                            else
                            {
                                throw new OpenAiRequestException("Only text content parts are supported.", "messages");
                            }
                        }
                        copy["content"] = JsonSerializer.SerializeToElement(text.ToString());
                        break;
                    default:
                        throw new OpenAiRequestException("message content must be a string or an array of text parts.", "messages");
                }
            }
            else
            {
                copy["content"] = JsonSerializer.SerializeToElement("");
            }
            result.Add(JsonSerializer.SerializeToElement(copy));
        }
        if (result.Count == 0)
        {
            throw new OpenAiRequestException("messages must not be empty.", "messages");
        }
        return result;
    }

    public static int? OptionalInt(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : throw new OpenAiRequestException($"{name} must be an integer.", name);
    }

    public static double? OptionalDouble(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new OpenAiRequestException($"{name} must be a number.", name);
    }

    public static bool? OptionalBool(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new OpenAiRequestException($"{name} must be a boolean.", name),
        };
    }
}
