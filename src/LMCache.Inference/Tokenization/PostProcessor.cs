using System.Text.Json;

namespace LMCache.Inference.Tokenization;

/// <summary>
/// The single-sequence part of a <c>tokenizer.json</c> post-processor: the ids placed before and after the encoded
/// text when special tokens are added (TemplateProcessing, RobertaProcessing, BertProcessing; ByteLevel adds none).
/// </summary>
internal sealed class PostProcessor
{
    private readonly int[] _prefix;
    private readonly int[] _suffix;

    private PostProcessor(int[] prefix, int[] suffix)
    {
        _prefix = prefix;
        _suffix = suffix;
    }

    /// <summary>Adds nothing.</summary>
    public static PostProcessor None { get; } = new([], []);

    /// <summary>Ids placed before the text.</summary>
    public IReadOnlyList<int> Prefix => _prefix;

    /// <summary>Returns prefix + ids + suffix.</summary>
    public int[] Apply(List<int> ids)
    {
        var result = new int[_prefix.Length + ids.Count + _suffix.Length];
        _prefix.CopyTo(result, 0);
        ids.CopyTo(result, _prefix.Length);
        _suffix.CopyTo(result, _prefix.Length + ids.Count);
        return result;
    }

    /// <summary>Builds the post-processor from its JSON element.</summary>
    public static PostProcessor Build(JsonElement element, IReadOnlyDictionary<string, int> vocab, IReadOnlyList<AddedToken> added)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            return None;
        }
        var prefix = new List<int>();
        var suffix = new List<int>();
        Collect(element, prefix, suffix, vocab, added);
        return new PostProcessor([.. prefix], [.. suffix]);
    }

    private static void Collect(JsonElement element, List<int> prefix, List<int> suffix, IReadOnlyDictionary<string, int> vocab, IReadOnlyList<AddedToken> added)
    {
        var type = element.GetProperty("type").GetString();
        switch (type)
        {
            case "ByteLevel":
                return;
            case "Sequence":
                foreach (var inner in element.GetProperty("processors").EnumerateArray())
                {
                    Collect(inner, prefix, suffix, vocab, added);
                }
                return;
            case "TemplateProcessing":
                var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
                if (element.TryGetProperty("special_tokens", out var st) && st.ValueKind == JsonValueKind.Object)
                {
                    foreach (var s in st.EnumerateObject())
                    {
                        specials[s.Name] = s.Value.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
                    }
                }
                var seenSequence = false;
                foreach (var item in element.GetProperty("single").EnumerateArray())
                {
                    if (item.TryGetProperty("Sequence", out _))
                    {
                        seenSequence = true;
                        continue;
                    }
                    if (item.TryGetProperty("SpecialToken", out var special))
                    {
                        var id = special.GetProperty("id").GetString()!;
                        var ids = specials.TryGetValue(id, out var known) ? known : [Lookup(id, vocab, added)];
                        (seenSequence ? suffix : prefix).AddRange(ids);
                    }
                }
                return;
            case "RobertaProcessing":
            case "BertProcessing":
                prefix.Add(element.GetProperty("cls")[1].GetInt32());
                suffix.Add(element.GetProperty("sep")[1].GetInt32());
                return;
            default:
                throw new NotSupportedException($"tokenizer.json: post-processor '{type}' is not supported.");
        }
    }

    private static int Lookup(string token, IReadOnlyDictionary<string, int> vocab, IReadOnlyList<AddedToken> added)
    {
        foreach (var a in added)
        {
            if (a.Content == token)
            {
                return a.Id;
            }
        }
        return vocab.TryGetValue(token, out var id) ? id : throw new InvalidDataException($"tokenizer.json: post-processor token '{token}' is not in the vocabulary.");
    }
}
