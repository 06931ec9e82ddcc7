using System.Text;
using LMCache.Inference.Tokenization;
using OpenAI.Chat;

namespace LMCache.Bench;

/// <summary>The sizes of <c>bench serve</c>'s workload, in tokens of the served model's tokenizer (before the chat template).</summary>
internal sealed record ServeWorkloadShape
{
    /// <summary>The system prompt every chat shares (the cache's case). Defaults to 1,000.</summary>
    public int PrefixTokens { get; init; } = 1000;

    /// <summary>A chat's own user message after the shared system prompt. Defaults to 60.</summary>
    public int QuestionTokens { get; init; } = 60;

    /// <summary>Shortest long document (each document is new to the cache). Defaults to 2,000.</summary>
    public int DocumentMinTokens { get; init; } = 2000;

    /// <summary>Longest long document. Defaults to 4,000.</summary>
    public int DocumentMaxTokens { get; init; } = 4000;

    /// <summary>Generated tokens of every chat and document (with <c>ignore_eos</c>, exactly this many). Defaults to 64.</summary>
    public int MaxTokens { get; init; } = 64;

    /// <summary>Requests each client sends one after another; every fourth is a document, the others chats. Defaults to 4.</summary>
    public int RequestsPerClient { get; init; } = 4;

    /// <summary>Generated tokens of each request of the decode phase (one shared-prefix chat per client, all at once). Defaults to 128.</summary>
    public int DecodeTokens { get; init; } = 128;

    /// <summary>The long prompt of the long-prefill scenario. Defaults to 4,000.</summary>
    public int LongPromptTokens { get; init; } = 4000;

    /// <summary>Short chats sent while the long prompt is prefilled. Defaults to 8.</summary>
    public int ShortChats { get; init; } = 8;

    /// <summary>The user message of each short chat. Defaults to 100.</summary>
    public int ShortChatTokens { get; init; } = 100;

    /// <summary>Generated tokens of each short chat. Defaults to 16.</summary>
    public int ShortChatMaxTokens { get; init; } = 16;

    /// <summary>The longest prompt of the workload, template excluded.</summary>
    public int LongestPrompt => Math.Max(Math.Max(PrefixTokens + QuestionTokens, DocumentMaxTokens), LongPromptTokens);
}

/// <summary>One request of the workload: its kind, its messages and how many tokens it generates.</summary>
internal sealed record ServeWorkItem(string Kind, IReadOnlyList<ChatMessage> Messages, int MaxTokens);

/// <summary>
/// The fixed, seeded workload of <c>bench serve</c>. Text is made of pseudo-words drawn from a seeded generator and cut
/// to a token count of the served model's tokenizer, so the same arguments give the same prompts on every run and
/// machine. Client <c>k</c>'s <c>j</c>-th request is the same whatever the number of clients, so a run with 8 clients
/// sends the run with 1 client's requests plus 7 more clients' worth.
/// </summary>
internal sealed class ServeWorkload
{
    private const string DocumentInstruction = "Summarize the following document.";
    private readonly HfTokenizer _tokenizer;
    private readonly ServeWorkloadShape _shape;
    private readonly string _sharedPrefix;

    public ServeWorkload(HfTokenizer tokenizer, ServeWorkloadShape shape)
    {
        _tokenizer = tokenizer;
        _shape = shape;
        _sharedPrefix = "You are a helpful assistant. Background: " + Text(seed: 1, shape.PrefixTokens);
    }

    public ServeWorkloadShape Shape => _shape;

    /// <summary>The <paramref name="index"/>-th request of client <paramref name="client"/>: a document every fourth request, else a chat.</summary>
    public ServeWorkItem Request(int client, int index)
    {
        var seed = 1_000 + (client * 1_000) + index;
        if (index % 4 == 3)
        {
            var length = new Random(seed).Next(_shape.DocumentMinTokens, _shape.DocumentMaxTokens + 1);
            return new ServeWorkItem("document", [new SystemChatMessage(DocumentInstruction), new UserChatMessage(Text(seed, length))], _shape.MaxTokens);
        }
        return new ServeWorkItem("chat", [new SystemChatMessage(_sharedPrefix), new UserChatMessage(Text(seed, _shape.QuestionTokens))], _shape.MaxTokens);
    }

    /// <summary>Client <paramref name="client"/>'s request of the decode phase: a shared-prefix chat with a question of its own.</summary>
    public ServeWorkItem Decode(int client) =>
        new("decode", [new SystemChatMessage(_sharedPrefix), new UserChatMessage(Text(500_000 + client, _shape.QuestionTokens))], _shape.DecodeTokens);

    /// <summary>The long prompt of the long-prefill scenario (<paramref name="variant"/> 0 calibrates, 1 is measured; both new to the cache).</summary>
    public ServeWorkItem LongPrompt(int variant) =>
        new("long", [new SystemChatMessage(DocumentInstruction), new UserChatMessage(Text(900_000 + variant, _shape.LongPromptTokens))], 1);

    /// <summary>The <paramref name="index"/>-th short chat of the long-prefill scenario.</summary>
    public ServeWorkItem ShortChat(int index) =>
        new("short", [new UserChatMessage(Text(800_000 + index, _shape.ShortChatTokens))], _shape.ShortChatMaxTokens);

    /// <summary>Seeded pseudo-words, cut to exactly <paramref name="tokens"/> tokens when the tokenizer allows (within a word otherwise).</summary>
    private string Text(int seed, int tokens)
    {
        var random = new Random(seed);
        var text = new StringBuilder();
        // Grow by whole words until the tokenizer counts enough tokens; measure in steps to keep the encoding cost linear.
        var count = 0;
        while (count < tokens)
        {
            var words = Math.Max(1, (tokens - count) / 3);
            for (var i = 0; i < words; i++)
            {
                AppendWord(random, text);
            }
            count = _tokenizer.Encode(text.ToString(), addSpecialTokens: false).Length;
        }
        // Then drop whole words from the end while the count stays at or above the target.
        var result = text.ToString();
        while (true)
        {
            var cut = result.LastIndexOf(' ');
            if (cut <= 0)
            {
                return result;
            }
            var shorter = result[..cut];
            if (_tokenizer.Encode(shorter, addSpecialTokens: false).Length < tokens)
            {
                return result;
            }
            result = shorter;
        }
    }

    private static void AppendWord(Random random, StringBuilder text)
    {
        const string Consonants = "bcdfghjklmnprstvwz";
        const string Vowels = "aeiou";
        if (text.Length > 0)
        {
            text.Append(random.Next(12) == 0 ? ". " : " ");
        }
        var syllables = random.Next(1, 4);
        for (var s = 0; s < syllables; s++)
        {
            text.Append(Consonants[random.Next(Consonants.Length)]).Append(Vowels[random.Next(Vowels.Length)]);
            if (random.Next(3) == 0)
            {
                text.Append(Consonants[random.Next(Consonants.Length)]);
            }
        }
    }
}
