using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using LMCache.Inference.Generation;

namespace LMCache.Serving;

/// <summary>The parameters shared by <c>/v1/completions</c> and <c>/v1/chat/completions</c>, validated.</summary>
internal sealed record CommonParameters(
    string? Model, int? MaxTokens, SamplingParameters Sampling, IReadOnlyList<string> Stop, bool Stream, bool IncludeUsage,
    bool IgnoreEos, string? CacheSalt);

/// <summary>How long a prompt may be, checked before its text is copied out of the request.</summary>
/// <param name="ContextLength">The model's context, in tokens.</param>
/// <param name="MaxTokens">Most prompt tokens: the context less one token to generate.</param>
/// <param name="MaxBytes">Most prompt text, in UTF-8 bytes (<see cref="OpenAiServerOptions.MaxPromptBytes"/>).</param>
/// <param name="MaxFittingBytes">Most text that could still encode to <paramref name="MaxTokens"/> tokens (the tokenizer's bound).</param>
internal readonly record struct PromptLimits(int ContextLength, int MaxTokens, long MaxBytes, long MaxFittingBytes)
{
    public void Require(long textBytes, string param)
    {
        if (textBytes > MaxFittingBytes)
        {
            // Every token stands for at most so many bytes: this text makes more tokens than the context holds.
            throw OpenAiRequests.ContextExceeded(ContextLength, MaxTokens + 1, null, param, atLeast: true);
        }
        if (textBytes > MaxBytes)
        {
            throw new OpenAiRequestException(
                $"The prompt text is {textBytes} bytes, more than this server's limit of {MaxBytes} bytes.", param, code: "context_length_exceeded");
        }
    }
}

/// <summary>
/// Parses and validates OpenAI request bodies. Every field we read or knowingly ignore has a strict JSON type: a
/// wrong type is an <see cref="OpenAiRequestException"/> (400) naming the field, never a silent default (a
/// <c>cache_salt</c> of 5 must not quietly become the shared, unsalted cache). Unknown fields are ignored, as vLLM does.
/// </summary>
internal static class OpenAiRequests
{
    public static CommonParameters ParseCommon(JsonElement root, bool chat)
    {
        var n = OptionalInt(root, "n") ?? 1;
        if (n != 1)
        {
            throw new OpenAiRequestException("Only n = 1 is supported.", "n");
        }
        if ((OptionalInt(root, "best_of") ?? 1) != 1)
        {
            throw new OpenAiRequestException("Only best_of = 1 is supported.", "best_of");
        }
        foreach (var penalty in new[] { "presence_penalty", "frequency_penalty" })
        {
            if (OptionalDouble(root, penalty) is { } p && p != 0)
            {
                throw new OpenAiRequestException($"{penalty} is not supported (only 0).", penalty);
            }
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
        var includeUsage = false;
        if (OptionalOfKind(root, "stream_options", JsonValueKind.Object, "an object") is { } streamOptions)
        {
            includeUsage = OptionalBool(streamOptions, "include_usage", "stream_options") ?? false;
        }
        var model = OptionalString(root, "model");
        var salt = OptionalString(root, "cache_salt");
        if (salt is { Length: 0 })
        {
            throw new OpenAiRequestException("cache_salt must not be empty.", "cache_salt");
        }
        // Read nowhere, but typed: a client that sends them wrongly gets told instead of ignored.
        _ = OptionalString(root, "user");
        _ = OptionalOfKind(root, "logit_bias", JsonValueKind.Object, "an object mapping token ids to biases");
        if (chat)
        {
            _ = OptionalOfKind(root, "response_format", JsonValueKind.Object, "an object");
            _ = OptionalOfKind(root, "chat_template_kwargs", JsonValueKind.Object, "an object");
            _ = OptionalOfKind(root, "tools", JsonValueKind.Array, "an array");
            if (root.TryGetProperty("tool_choice", out var toolChoice) && toolChoice.ValueKind is not (JsonValueKind.String or JsonValueKind.Object or JsonValueKind.Null))
            {
                throw new OpenAiRequestException("tool_choice must be a string or an object.", "tool_choice");
            }
        }
        else
        {
            if (OptionalBool(root, "echo") == true)
            {
                throw new OpenAiRequestException("echo is not supported.", "echo");
            }
            if (OptionalString(root, "suffix") is { Length: > 0 })
            {
                throw new OpenAiRequestException("suffix is not supported.", "suffix");
            }
        }
        return new CommonParameters(model, maxTokens, new SamplingParameters(temperature, topP, seed), stop, stream, includeUsage,
            OptionalBool(root, "ignore_eos") ?? false, salt);
    }

    /// <summary>
    /// The prompt of a completion request: text, or token ids (an array of integers, or a one-element array of
    /// either). Token ids beyond <paramref name="limits"/>' token count and text beyond its byte limits are refused
    /// before anything is copied out of the request.
    /// </summary>
    public static (string? Text, int[]? Ids) ParsePrompt(JsonElement root, PromptLimits limits)
    {
        if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind == JsonValueKind.Null)
        {
            throw new OpenAiRequestException("prompt is required.", "prompt");
        }
        if (prompt.ValueKind == JsonValueKind.Array && prompt.GetArrayLength() == 1 && prompt[0].ValueKind is JsonValueKind.String or JsonValueKind.Array)
        {
            prompt = prompt[0];   // a batch of one: ["text"] or [[ids]]
        }
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                limits.Require(RequestBody.Utf8Length(JsonMarshal.GetRawUtf8Value(prompt)), "prompt");
                return (prompt.GetString()!, null);
            case JsonValueKind.Array:
                var count = prompt.GetArrayLength();
                if (count == 0)
                {
                    throw new OpenAiRequestException("prompt must not be empty.", "prompt");
                }
                var ids = new int[Math.Min(count, limits.MaxTokens)];
                var i = 0;
                foreach (var item in prompt.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out var id))
                    {
                        throw new OpenAiRequestException(item.ValueKind is JsonValueKind.String or JsonValueKind.Array
                            ? "Only one prompt per request is supported."
                            : "prompt token ids must be integers.", "prompt");
                    }
                    if (i == ids.Length)
                    {
                        throw ContextExceeded(limits.ContextLength, count, null, "prompt");
                    }
                    ids[i++] = id;
                }
                return (null, ids);
            default:
                throw new OpenAiRequestException("prompt must be a string, an array of token ids, or a one-element array of either.", "prompt");
        }
    }

    /// <summary>
    /// Chat messages, each an object with a string <c>role</c> and a <c>content</c> that is a string, null or an array
    /// of text parts (flattened to one string). Messages whose content is already a string are passed on as they are
    /// (no copy of a large text). Their text beyond <paramref name="limits"/>' byte limits in all is refused before
    /// the template renders it (templates include every message's content, so the prompt is at least that long).
    /// </summary>
    public static List<JsonElement> ParseMessages(JsonElement root, PromptLimits limits)
    {
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array)
        {
            throw new OpenAiRequestException("messages must be an array.", "messages");
        }
        var result = new List<JsonElement>();
        long textBytes = 0;
        foreach (var message in messages.EnumerateArray())
        {
            if (message.ValueKind != JsonValueKind.Object || !message.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String)
            {
                throw new OpenAiRequestException("Each message must be an object with a string 'role'.", "messages");
            }
            RequireMessageField(message, "name", JsonValueKind.String, "a string");
            RequireMessageField(message, "tool_call_id", JsonValueKind.String, "a string");
            RequireMessageField(message, "tool_calls", JsonValueKind.Array, "an array");
            if (!message.TryGetProperty("content", out var content))
            {
                result.Add(WithContent(message, ""));
                continue;
            }
            switch (content.ValueKind)
            {
                case JsonValueKind.String:
                    textBytes += RequestBody.Utf8Length(JsonMarshal.GetRawUtf8Value(content));
                    limits.Require(textBytes, "messages");
                    result.Add(message);
                    break;
                case JsonValueKind.Null:
                    result.Add(message);
                    break;
                case JsonValueKind.Array:
                    foreach (var part in content.EnumerateArray())
                    {
                        if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type)
                            || type.ValueKind != JsonValueKind.String || !type.ValueEquals("text")
                            || !part.TryGetProperty("text", out var t) || t.ValueKind != JsonValueKind.String)
                        {
                            throw new OpenAiRequestException("Only text content parts ({\"type\": \"text\", \"text\": \"...\"}) are supported.", "messages");
                        }
                        textBytes += RequestBody.Utf8Length(JsonMarshal.GetRawUtf8Value(t));
                        limits.Require(textBytes, "messages");
                    }
                    var text = new StringBuilder();
                    foreach (var part in content.EnumerateArray())
                    {
                        text.Append(part.GetProperty("text").GetString());
                    }
                    result.Add(WithContent(message, text.ToString()));
                    break;
                default:
                    throw new OpenAiRequestException("message content must be a string, null or an array of text parts.", "messages");
            }
        }
        if (result.Count == 0)
        {
            throw new OpenAiRequestException("messages must not be empty.", "messages");
        }
        return result;
    }

    /// <summary>OpenAI's context-length error; <paramref name="promptTokens"/> is a lower bound when the prompt was not tokenized to the end.</summary>
    public static OpenAiRequestException ContextExceeded(int contextLength, long promptTokens, long? maxTokens, string param, bool atLeast = false)
    {
        var prompt = atLeast ? $"more than {promptTokens - 1}" : promptTokens.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var requested = maxTokens is { } m
            ? $"However, you requested {(atLeast ? "more than " + (promptTokens - 1 + m) : (promptTokens + m).ToString(System.Globalization.CultureInfo.InvariantCulture))} tokens ({prompt} in the {(param == "messages" ? "messages" : "prompt")}, {m} in the completion)."
            : $"However, your {(param == "messages" ? "messages" : "prompt")} resulted in {prompt} tokens.";
        return new OpenAiRequestException(
            $"This model's maximum context length is {contextLength} tokens. {requested} Please reduce the length of the {(param == "messages" ? "messages" : "prompt")} or completion.",
            param, code: "context_length_exceeded");
    }

    private static void RequireMessageField(JsonElement message, string name, JsonValueKind kind, string description)
    {
        if (message.TryGetProperty(name, out var value) && value.ValueKind != kind && value.ValueKind != JsonValueKind.Null)
        {
            throw new OpenAiRequestException($"message {name} must be {description}.", "messages");
        }
    }

    private static JsonElement WithContent(JsonElement message, string content)
    {
        var copy = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        foreach (var property in message.EnumerateObject())
        {
            copy[property.Name] = property.Value;
        }
        copy["content"] = JsonSerializer.SerializeToElement(content);
        return JsonSerializer.SerializeToElement(copy);
    }

    public static int? OptionalInt(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : throw new OpenAiRequestException($"{name} must be an integer between {int.MinValue} and {int.MaxValue}.", name);
    }

    public static double? OptionalDouble(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out var d) && double.IsFinite(d) ? d : throw new OpenAiRequestException($"{name} must be a finite number.", name);
    }

    public static bool? OptionalBool(JsonElement root, string name, string? param = null)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new OpenAiRequestException($"{name} must be a boolean.", param ?? name),
        };
    }

    public static string? OptionalString(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw new OpenAiRequestException($"{name} must be a string.", name);
    }

    public static JsonElement? OptionalOfKind(JsonElement root, string name, JsonValueKind kind, string description)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind == kind ? v : throw new OpenAiRequestException($"{name} must be {description}.", name);
    }
}
