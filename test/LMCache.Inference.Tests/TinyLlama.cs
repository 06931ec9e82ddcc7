using System.Text.Json;
using LMCache.Testing;

namespace LMCache.Inference.Tests;

/// <summary>The tiny-llama fixture in <c>test/fixtures/tiny-llama</c> and its parsed reference.json.</summary>
public static class TinyLlama
{
    private static readonly Lazy<Reference> s_reference = new(() => Reference.Load(Path.Combine(Folder, "reference.json")));

    /// <summary>The fixture folder (a missing folder fails the test with the path it expected).</summary>
    public static string Folder => RepositoryFixtures.TinyLlama;

    /// <summary>The parsed reference.json.</summary>
    public static Reference Reference => s_reference.Value;
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
