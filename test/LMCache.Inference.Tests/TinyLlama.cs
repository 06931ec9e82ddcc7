using System.Text.Json;

namespace LMCache.Inference.Tests;

/// <summary>Locates ../shared/fixtures/tiny-llama (searching upward from the test assembly) and reads reference.json.</summary>
public static class TinyLlama
{
    private static readonly Lazy<string?> s_folder = new(Find);
    private static readonly Lazy<Reference?> s_reference = new(() => s_folder.Value is null ? null : Reference.Load(Path.Combine(s_folder.Value, "reference.json")));

    /// <summary>The fixture folder, or skips the calling test with a clear message.</summary>
    public static string Folder => s_folder.Value ?? throw SkipException();

    /// <summary>The parsed reference.json, or skips the calling test.</summary>
    public static Reference Reference => s_reference.Value ?? throw SkipException();

    private static Exception SkipException()
    {
        Assert.Skip("The tiny-llama fixture was not found (expected ../shared/fixtures/tiny-llama above the repository root).");
        return new InvalidOperationException("unreachable");
    }

    private static string? Find()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null)
        {
            foreach (var candidate in new[] { Path.Combine(dir.FullName, "shared", "fixtures", "tiny-llama"), Path.Combine(dir.FullName, "..", "shared", "fixtures", "tiny-llama") })
            {
                if (File.Exists(Path.Combine(candidate, "reference.json")))
                {
                    return Path.GetFullPath(candidate);
                }
            }
            dir = dir.Parent;
        }
        return null;
    }
}

public sealed record ReferencePrompt(string Name, string Text, int[] InputIds, float[] LastLogits, int[] Top10, int[] Greedy16);

public sealed record ReferenceChat(JsonElement Messages, string Rendered, int[] InputIds, int[] Top10);

public sealed class Reference
{
    public required IReadOnlyList<ReferencePrompt> Prompts { get; init; }
    public required ReferenceChat Chat { get; init; }

    public ReferencePrompt Prompt(string name) => Prompts.Single(p => p.Name == name);

    public static Reference Load(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var prompts = new List<ReferencePrompt>();
        foreach (var p in doc.RootElement.GetProperty("prompts").EnumerateObject())
        {
            var v = p.Value;
            prompts.Add(new ReferencePrompt(p.Name, v.GetProperty("text").GetString()!, Ints(v.GetProperty("input_ids")),
                v.GetProperty("last_logits").EnumerateArray().Select(x => x.GetSingle()).ToArray(),
                Ints(v.GetProperty("top10_ids")), Ints(v.GetProperty("greedy_16"))));
        }
        var chat = doc.RootElement.GetProperty("chat");
        return new Reference
        {
            Prompts = prompts,
            Chat = new ReferenceChat(chat.GetProperty("messages").Clone(), chat.GetProperty("rendered").GetString()!,
                Ints(chat.GetProperty("input_ids")), Ints(chat.GetProperty("last_logits_top10"))),
        };
    }

    private static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();
}
