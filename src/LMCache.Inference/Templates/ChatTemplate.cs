using System.Text.Json;
using LMCache.Inference.Templates.Jinja;

namespace LMCache.Inference.Templates;

/// <summary>One chat message as the template sees it (<c>role</c>, <c>content</c> and any extra fields).</summary>
/// <param name="Role">system, user, assistant, tool, ...</param>
/// <param name="Content">The message text.</param>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// A model's chat template: <c>chat_template.jinja</c> (transformers 5) or <c>chat_template</c> in
/// <c>tokenizer_config.json</c> (a string, or a list of named templates of which <c>default</c> is used), rendered
/// with <c>messages</c>, <c>bos_token</c>, <c>eos_token</c>, <c>add_generation_prompt</c> and optional <c>tools</c>,
/// as <c>apply_chat_template</c> does.
/// </summary>
public sealed class ChatTemplate
{
    private readonly JinjaTemplate _template;
    private readonly Dictionary<string, object?> _specialTokens;

    /// <summary>Creates a template from its source and the special-token strings of tokenizer_config.json.</summary>
    public ChatTemplate(string source, IReadOnlyDictionary<string, string> specialTokens)
    {
        Source = source;
        _template = JinjaTemplate.Parse(source);
        _specialTokens = specialTokens.ToDictionary(kv => kv.Key, kv => (object?)kv.Value, StringComparer.Ordinal);
    }

    /// <summary>The template text.</summary>
    public string Source { get; }

    /// <summary>
    /// Loads the template of a model folder, or null when it has none. Reads special tokens (<c>bos_token</c>,
    /// <c>eos_token</c>, <c>unk_token</c>, <c>pad_token</c>) from tokenizer_config.json.
    /// </summary>
    /// <exception cref="JinjaException">The template has a syntax error or uses an unsupported construct.</exception>
    public static ChatTemplate? Load(string modelFolder)
    {
        var tokens = new Dictionary<string, string>(StringComparer.Ordinal);
        string? source = null;
        var configPath = Path.Combine(modelFolder, "tokenizer_config.json");
        if (File.Exists(configPath))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(configPath));
            foreach (var name in new[] { "bos_token", "eos_token", "unk_token", "pad_token" })
            {
                if (doc.RootElement.TryGetProperty(name, out var t))
                {
                    var text = t.ValueKind == JsonValueKind.String ? t.GetString()
                        : t.ValueKind == JsonValueKind.Object && t.TryGetProperty("content", out var c) ? c.GetString() : null;
                    if (text is not null)
                    {
                        tokens[name] = text;
                    }
                }
            }
            if (doc.RootElement.TryGetProperty("chat_template", out var ct))
            {
                if (ct.ValueKind == JsonValueKind.String)
                {
                    source = ct.GetString();
                }
                else if (ct.ValueKind == JsonValueKind.Array)
                {
                    foreach (var entry in ct.EnumerateArray())
                    {
                        if (entry.TryGetProperty("name", out var n) && n.GetString() == "default")
                        {
                            source = entry.GetProperty("template").GetString();
                        }
                    }
                }
            }
        }
        var jinjaPath = Path.Combine(modelFolder, "chat_template.jinja");
        if (File.Exists(jinjaPath))
        {
            source = File.ReadAllText(jinjaPath);
        }
        return source is null ? null : new ChatTemplate(source, tokens);
    }

    /// <summary>Renders <paramref name="messages"/> (each a JSON object with at least role and content).</summary>
    /// <param name="messages">The conversation, as JSON objects so extra fields (name, tool_calls) reach the template.</param>
    /// <param name="addGenerationPrompt">Append the assistant header (true for a completion request).</param>
    /// <param name="tools">Optional tool definitions (JSON array) passed as <c>tools</c>.</param>
    /// <param name="extra">Optional extra variables (<c>chat_template_kwargs</c>).</param>
    /// <exception cref="JinjaException">The template raised an exception (e.g. roles not alternating).</exception>
    public string Render(IEnumerable<JsonElement> messages, bool addGenerationPrompt = true, JsonElement? tools = null, IReadOnlyDictionary<string, object?>? extra = null)
    {
        var variables = new Dictionary<string, object?>(_specialTokens, StringComparer.Ordinal)
        {
            ["messages"] = messages.Select(JinjaValues.FromJson).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        if (tools is { ValueKind: JsonValueKind.Array } t)
        {
            variables["tools"] = JinjaValues.FromJson(t);
        }
        if (extra is not null)
        {
            foreach (var (k, v) in extra)
            {
                variables[k] = v;
            }
        }
        return _template.Render(variables);
    }

    /// <summary>Renders plain role/content messages.</summary>
    public string Render(IEnumerable<ChatMessage> messages, bool addGenerationPrompt = true) =>
        Render(messages.Select(m => JsonSerializer.SerializeToElement(new Dictionary<string, string> { ["role"] = m.Role, ["content"] = m.Content })), addGenerationPrompt);
}
