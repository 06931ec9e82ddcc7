using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace LMCache.Inference.Tokenization;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> tokenizer for byte-level BPE models (GPT-2, Llama 3, Qwen2, Mistral-Nemo style).
/// It honours the file's added tokens (split out first, with <c>lstrip</c>/<c>rstrip</c>/<c>single_word</c>), its
/// normalizer (NFC/NFKC/NFD/NFKD/Lowercase/Sequence), its pre-tokenizer (ByteLevel with or without regex, Split,
/// Digits, Sequence), the BPE model (Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/> with <c>ignore_merges</c>
/// handled here) and its post-processor (TemplateProcessing, Roberta/Bert processing, ByteLevel, Sequence).
/// Thread-safe for concurrent encode and decode.
/// </summary>
public sealed partial class HfTokenizer
{
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocab;
    private readonly bool _ignoreMerges;
    private readonly AddedToken[] _addedTokens;
    private readonly Regex? _addedTokenRegex;
    private readonly Dictionary<string, AddedToken> _addedByContent;
    private readonly Func<string, string>? _normalizer;
    private readonly IPreTokenizerStep[] _preTokenizers;
    private readonly bool _byteLevel;
    private readonly PostProcessor _postProcessor;
    private readonly byte[][] _idToBytes;
    private readonly bool[] _isSpecial;
    private readonly Dictionary<int, string> _idToToken;
    private readonly int _maxTokenBytes;
    private readonly int _normalizationSteps;

    private HfTokenizer(
        BpeTokenizer bpe, Dictionary<string, int> vocab, bool ignoreMerges, AddedToken[] addedTokens,
        Func<string, string>? normalizer, int normalizationSteps, IPreTokenizerStep[] preTokenizers, bool byteLevel, PostProcessor postProcessor)
    {
        _normalizationSteps = normalizationSteps;
        _bpe = bpe;
        _vocab = vocab;
        _ignoreMerges = ignoreMerges;
        _addedTokens = addedTokens;
        _normalizer = normalizer;
        _preTokenizers = preTokenizers;
        _byteLevel = byteLevel;
        _postProcessor = postProcessor;
        _addedByContent = addedTokens.GroupBy(t => t.Content, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        if (addedTokens.Length > 0)
        {
            var alternation = string.Join('|', addedTokens.Select(t => t.Content).Distinct(StringComparer.Ordinal)
                .OrderByDescending(c => c.Length).Select(Regex.Escape));
            _addedTokenRegex = new Regex(alternation, RegexOptions.CultureInvariant);
        }

        var size = Math.Max(vocab.Count == 0 ? 0 : vocab.Values.Max() + 1, addedTokens.Length == 0 ? 0 : addedTokens.Max(t => t.Id) + 1);
        _idToBytes = new byte[size][];
        _isSpecial = new bool[size];
        _idToToken = new Dictionary<int, string>(size);
        foreach (var (token, id) in vocab)
        {
            _idToToken[id] = token;
            _idToBytes[id] = TokenBytes(token);
        }
        foreach (var added in addedTokens)
        {
            _idToToken[added.Id] = added.Content;
            _idToBytes[added.Id] = Encoding.UTF8.GetBytes(added.Content);
            _isSpecial[added.Id] = added.Special;
        }
        for (var i = 0; i < size; i++)
        {
            _idToBytes[i] ??= [];
            _maxTokenBytes = Math.Max(_maxTokenBytes, _idToBytes[i].Length);
        }
    }

    /// <summary>Number of ids (vocabulary plus added tokens).</summary>
    public int VocabularySize => _idToBytes.Length;

    /// <summary>The added tokens declared in the file (specials such as <c>&lt;|eot_id|&gt;</c> and non-special additions).</summary>
    public IReadOnlyList<AddedToken> AddedTokens => _addedTokens;

    /// <summary>Loads <c>tokenizer.json</c>.</summary>
    /// <exception cref="NotSupportedException">The model is not BPE, or a normalizer/pre-tokenizer/post-processor type is not supported.</exception>
    public static HfTokenizer Load(string path) => Parse(File.ReadAllText(path));

    /// <summary>Parses the text of a <c>tokenizer.json</c>.</summary>
    /// <exception cref="NotSupportedException">The model is not BPE, or a component type is not supported.</exception>
    public static HfTokenizer Parse(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        var model = root.GetProperty("model");
        var modelType = model.TryGetProperty("type", out var t) ? t.GetString() : "BPE";
        if (modelType != "BPE")
        {
            throw new NotSupportedException($"tokenizer.json: model type '{modelType}' is not supported (only byte-level BPE).");
        }
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
        {
            throw new NotSupportedException("tokenizer.json: BPE with byte_fallback (SentencePiece-style) is not supported; only byte-level BPE.");
        }

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
        {
            vocab[entry.Name] = entry.Value.GetInt32();
        }
        var merges = new List<string>();
        if (model.TryGetProperty("merges", out var mergesElement))
        {
            foreach (var merge in mergesElement.EnumerateArray())
            {
                merges.Add(merge.ValueKind == JsonValueKind.Array
                    ? merge[0].GetString() + " " + merge[1].GetString()
                    : merge.GetString() ?? "");
            }
        }
        var ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;

        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out var addedElement) && addedElement.ValueKind == JsonValueKind.Array)
        {
            foreach (var a in addedElement.EnumerateArray())
            {
                added.Add(new AddedToken(
                    a.GetProperty("id").GetInt32(),
                    a.GetProperty("content").GetString() ?? "",
                    Bool(a, "special"),
                    Bool(a, "lstrip"),
                    Bool(a, "rstrip"),
                    Bool(a, "single_word"),
                    Bool(a, "normalized")));
            }
        }

        var normalizer = root.TryGetProperty("normalizer", out var n) ? BuildNormalizer(n) : null;
        var normalizationSteps = normalizer is null ? 0 : CountNormalizers(n);
        var byteLevel = false;
        var steps = new List<IPreTokenizerStep>();
        if (root.TryGetProperty("pre_tokenizer", out var pre))
        {
            BuildPreTokenizer(pre, steps, ref byteLevel);
        }
        if (root.TryGetProperty("decoder", out var dec) && dec.ValueKind == JsonValueKind.Object && ContainsType(dec, "ByteLevel"))
        {
            byteLevel = true;
        }
        if (!byteLevel)
        {
            throw new NotSupportedException("tokenizer.json: only byte-level BPE is supported (no ByteLevel pre-tokenizer or decoder found).");
        }
        var post = root.TryGetProperty("post_processor", out var pp) ? PostProcessor.Build(pp, vocab, added) : PostProcessor.None;

        var options = new BpeOptions(vocab) { Merges = merges, ByteLevel = true };
        var bpe = BpeTokenizer.Create(options);
        return new HfTokenizer(bpe, vocab, ignoreMerges, [.. added], normalizer, normalizationSteps, [.. steps], byteLevel, post);
    }

    /// <summary>
    /// Encodes <paramref name="text"/>. With <paramref name="addSpecialTokens"/> the post-processor adds its tokens
    /// (e.g. a BOS); chat-template output is encoded without them, as <c>apply_chat_template</c> does.
    /// </summary>
    public int[] Encode(string text, bool addSpecialTokens = true) => EncodeCore(text, addSpecialTokens, int.MaxValue)!;

    /// <summary>
    /// Encodes <paramref name="text"/> unless it makes more than <paramref name="maxTokens"/> tokens (special tokens
    /// included). Work and memory are bounded by <paramref name="maxTokens"/>, not by the length of the text: the text
    /// is split and encoded piece by piece and encoding stops as soon as the limit is passed, and a single piece too
    /// long to fit (every token covers at most the longest token's bytes) is refused without being encoded.
    /// </summary>
    /// <returns>False, with <paramref name="ids"/> empty, when the text has more than <paramref name="maxTokens"/> tokens.</returns>
    public bool TryEncode(string text, bool addSpecialTokens, int maxTokens, out int[] ids)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxTokens);
        var encoded = EncodeCore(text, addSpecialTokens, maxTokens);
        ids = encoded ?? [];
        return encoded is not null;
    }

    private int[]? EncodeCore(string text, bool addSpecialTokens, int maxTokens)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>((int)Math.Min(text.Length / 3 + 4, Math.Min(maxTokens + 1L, 1 << 16)));
        foreach (var (segment, addedToken) in SplitOnAddedTokens(text))
        {
            if (addedToken is not null)
            {
                ids.Add(addedToken.Id);
            }
            else
            {
                var normalized = _normalizer is null ? segment : _normalizer(segment);
                foreach (var piece in PreTokenize(normalized))
                {
                    // A lower bound of the piece's tokens, without encoding it: bytes over the longest token's bytes.
                    if (maxTokens != int.MaxValue && ids.Count + MinimumTokens(piece) > maxTokens)
                    {
                        return null;
                    }
                    EncodeWord(piece, ids);
                    if (ids.Count > maxTokens)
                    {
                        return null;
                    }
                }
            }
            if (ids.Count > maxTokens)
            {
                return null;
            }
        }
        var result = addSpecialTokens ? _postProcessor.Apply(ids) : [.. ids];
        return result.Length > maxTokens ? null : result;
    }

    /// <summary>Bytes of the longest token (vocabulary or added): no token stands for more UTF-8 bytes of text.</summary>
    public int MaxTokenBytes => _maxTokenBytes;

    /// <summary>
    /// The most UTF-8 bytes a text may have and still encode to at most <paramref name="tokens"/> tokens: every token
    /// stands for at most <see cref="MaxTokenBytes"/> bytes of normalized text, and each normalization step (NFC, NFKC,
    /// NFKD, Lowercase, ...) shrinks a text at most 4-fold (the worst known: a Hangul syllable from three jamo or the
    /// Kelvin sign lowercased, 3-fold). A longer text cannot fit, and can be refused without reading it. Unbounded
    /// (<see cref="long.MaxValue"/>) when an added token strips the whitespace around it (one token may then stand for
    /// any amount of whitespace).
    /// </summary>
    public long MaxTextBytes(int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        if (_addedTokens.Any(t => t.LStrip || t.RStrip))
        {
            return long.MaxValue;
        }
        var bytes = (long)tokens * _maxTokenBytes;
        for (var i = 0; i < _normalizationSteps && bytes < long.MaxValue / 4; i++)
        {
            bytes *= 4;
        }
        return bytes;
    }

    private long MinimumTokens(string piece) =>
        _maxTokenBytes == 0 ? 0 : ((long)Encoding.UTF8.GetByteCount(piece) + _maxTokenBytes - 1) / _maxTokenBytes;

    /// <summary>The id of a vocabulary or added token spelled exactly <paramref name="token"/>, or null.</summary>
    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out var a) ? a.Id : _vocab.TryGetValue(token, out var id) ? id : null;

    /// <summary>The token string of <paramref name="id"/> (byte-level spelling for vocabulary tokens), or null.</summary>
    public string? IdToToken(int id) => _idToToken.TryGetValue(id, out var s) ? s : null;

    /// <summary>Whether <paramref name="id"/> is a special added token (skipped when decoding with skipSpecialTokens).</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)_isSpecial.Length && _isSpecial[id];

    /// <summary>True when <paramref name="id"/> is a valid id of this tokenizer.</summary>
    public bool IsValidId(int id) => (uint)id < (uint)_idToBytes.Length;

    /// <summary>The raw UTF-8 bytes id <paramref name="id"/> stands for (may be part of a multi-byte character).</summary>
    public ReadOnlySpan<byte> TokenBytesOf(int id) => (uint)id < (uint)_idToBytes.Length ? _idToBytes[id] : [];

    /// <summary>Decodes ids to text; invalid UTF-8 becomes U+FFFD as in the reference implementation.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        var bytes = new List<byte>();
        foreach (var id in ids)
        {
            if (skipSpecialTokens && IsSpecial(id))
            {
                continue;
            }
            bytes.AddRange(TokenBytesOf(id).ToArray());
        }
        return Encoding.UTF8.GetString([.. bytes]);
    }

    private static byte[] TokenBytes(string token)
    {
        var bytes = new byte[token.Length];
        for (var i = 0; i < token.Length; i++)
        {
            if (!ByteLevelAlphabet.TryToByte(token[i], out bytes[i]))
            {
                // Not a byte-level spelling: treat the token literally.
                return Encoding.UTF8.GetBytes(token);
            }
        }
        return bytes;
    }

    private void EncodeWord(string piece, List<int> ids)
    {
        if (piece.Length == 0)
        {
            return;
        }
        if (_ignoreMerges && _vocab.TryGetValue(ByteLevelAlphabet.Encode(Encoding.UTF8.GetBytes(piece)), out var whole))
        {
            ids.Add(whole);
            return;
        }
        ids.AddRange(_bpe.EncodeToIds(piece, considerPreTokenization: false, considerNormalization: false));
    }

    private IEnumerable<string> PreTokenize(string text)
    {
        // Lazy all the way down: pieces are produced as they are encoded, so stopping early (TryEncode) stops the work.
        IEnumerable<string> pieces = [text];
        foreach (var step in _preTokenizers)
        {
            pieces = pieces.SelectMany(step.Split);
        }
        return pieces;
    }

    private IEnumerable<(string Segment, AddedToken? Token)> SplitOnAddedTokens(string text)
    {
        if (_addedTokenRegex is null)
        {
            yield return (text, null);
            yield break;
        }
        var position = 0;
        var match = _addedTokenRegex.Match(text);
        while (match.Success)
        {
            var token = _addedByContent[match.Value];
            var start = match.Index;
            var end = match.Index + match.Length;
            if (token.SingleWord && !IsWordBoundary(text, start, end))
            {
                match = _addedTokenRegex.Match(text, match.Index + 1);
                continue;
            }
            if (token.LStrip)
            {
                while (start > position && char.IsWhiteSpace(text[start - 1]))
                {
                    start--;
                }
            }
            if (token.RStrip)
            {
                while (end < text.Length && char.IsWhiteSpace(text[end]))
                {
                    end++;
                }
            }
            if (start > position)
            {
                yield return (text[position..start], null);
            }
            yield return (match.Value, token);
            position = end;
            match = end < text.Length ? _addedTokenRegex.Match(text, end) : Match.Empty;
        }
        if (position < text.Length)
        {
            yield return (text[position..], null);
        }
    }

    private static bool IsWordBoundary(string text, int start, int end) =>
        (start == 0 || !char.IsLetterOrDigit(text[start - 1])) && (end >= text.Length || !char.IsLetterOrDigit(text[end]));

    private static bool Bool(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;

    private static bool ContainsType(JsonElement e, string type)
    {
        if (e.TryGetProperty("type", out var t) && t.GetString() == type)
        {
            return true;
        }
        foreach (var listName in new[] { "decoders", "pretokenizers", "processors" })
        {
            if (e.TryGetProperty(listName, out var list) && list.ValueKind == JsonValueKind.Array && list.EnumerateArray().Any(x => ContainsType(x, type)))
            {
                return true;
            }
        }
        return false;
    }

    private static int CountNormalizers(JsonElement n) =>
        n.ValueKind != JsonValueKind.Object ? 0
        : n.GetProperty("type").GetString() == "Sequence" ? n.GetProperty("normalizers").EnumerateArray().Sum(CountNormalizers)
        : 1;

    private static Func<string, string>? BuildNormalizer(JsonElement n)
    {
        if (n.ValueKind != JsonValueKind.Object)
        {
            return null;
        }
        var type = n.GetProperty("type").GetString();
        switch (type)
        {
            case "NFC": return s => s.Normalize(NormalizationForm.FormC);
            case "NFD": return s => s.Normalize(NormalizationForm.FormD);
            case "NFKC": return s => s.Normalize(NormalizationForm.FormKC);
            case "NFKD": return s => s.Normalize(NormalizationForm.FormKD);
            case "Lowercase": return s => s.ToLowerInvariant();
            case "Sequence":
                var parts = n.GetProperty("normalizers").EnumerateArray().Select(BuildNormalizer).Where(f => f is not null).Cast<Func<string, string>>().ToArray();
                return s =>
                {
                    foreach (var p in parts)
                    {
                        s = p(s);
                    }
                    return s;
                };
            default:
                throw new NotSupportedException($"tokenizer.json: normalizer '{type}' is not supported.");
        }
    }

    private static void BuildPreTokenizer(JsonElement pre, List<IPreTokenizerStep> steps, ref bool byteLevel)
    {
        if (pre.ValueKind != JsonValueKind.Object)
        {
            return;
        }
        var type = pre.GetProperty("type").GetString();
        switch (type)
        {
            case "Sequence":
                foreach (var inner in pre.GetProperty("pretokenizers").EnumerateArray())
                {
                    BuildPreTokenizer(inner, steps, ref byteLevel);
                }
                break;
            case "ByteLevel":
                byteLevel = true;
                if (Bool(pre, "add_prefix_space"))
                {
                    steps.Add(new PrefixSpaceStep());
                }
                // use_regex defaults to true.
                if (!pre.TryGetProperty("use_regex", out var useRegex) || useRegex.ValueKind != JsonValueKind.False)
                {
                    steps.Add(new SplitStep(new Regex(Gpt2Pattern, RegexOptions.CultureInvariant), SplitBehavior.Isolated, invert: false));
                }
                break;
            case "Split":
                var pattern = pre.GetProperty("pattern");
                Regex regex = pattern.TryGetProperty("Regex", out var r)
                    ? new Regex(r.GetString()!, RegexOptions.CultureInvariant)
                    : new Regex(Regex.Escape(pattern.GetProperty("String").GetString()!), RegexOptions.CultureInvariant);
                var behavior = (pre.TryGetProperty("behavior", out var b) ? b.GetString() : "Isolated") switch
                {
                    "Isolated" => SplitBehavior.Isolated,
                    "Removed" => SplitBehavior.Removed,
                    "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
                    "MergedWithNext" => SplitBehavior.MergedWithNext,
                    "Contiguous" => SplitBehavior.Contiguous,
                    var other => throw new NotSupportedException($"tokenizer.json: Split behavior '{other}' is not supported."),
                };
                steps.Add(new SplitStep(regex, behavior, Bool(pre, "invert")));
                break;
            case "Digits":
                steps.Add(new SplitStep(new Regex(Bool(pre, "individual_digits") ? @"\p{N}" : @"\p{N}+", RegexOptions.CultureInvariant), SplitBehavior.Isolated, invert: false));
                break;
            default:
                throw new NotSupportedException($"tokenizer.json: pre-tokenizer '{type}' is not supported.");
        }
    }

    private interface IPreTokenizerStep
    {
        IEnumerable<string> Split(string text);
    }

    private sealed class PrefixSpaceStep : IPreTokenizerStep
    {
        public IEnumerable<string> Split(string text) => [text.Length > 0 && text[0] != ' ' ? " " + text : text];
    }

    private enum SplitBehavior
    {
        Isolated,
        Removed,
        MergedWithPrevious,
        MergedWithNext,
        Contiguous,
    }

    private sealed class SplitStep(Regex regex, SplitBehavior behavior, bool invert) : IPreTokenizerStep
    {
        // Lazy (one piece at a time) so that a bounded encode of a huge text does only bounded work.
        public IEnumerable<string> Split(string text)
        {
            string? pending = null;
            switch (behavior)
            {
                case SplitBehavior.Isolated:
                    foreach (var (piece, _) in Pieces(text))
                    {
                        yield return piece;
                    }
                    break;
                case SplitBehavior.Removed:
                    foreach (var (piece, isMatch) in Pieces(text))
                    {
                        if (!isMatch)
                        {
                            yield return piece;
                        }
                    }
                    break;
                case SplitBehavior.MergedWithPrevious:
                    foreach (var (piece, isMatch) in Pieces(text))
                    {
                        if (isMatch && pending is not null)
                        {
                            pending += piece;
                        }
                        else
                        {
                            if (pending is not null)
                            {
                                yield return pending;
                            }
                            pending = piece;
                        }
                    }
                    if (pending is not null)
                    {
                        yield return pending;
                    }
                    break;
                case SplitBehavior.MergedWithNext:
                    pending = "";
                    foreach (var (piece, isMatch) in Pieces(text))
                    {
                        if (isMatch)
                        {
                            pending += piece;
                        }
                        else
                        {
                            yield return pending + piece;
                            pending = "";
                        }
                    }
                    if (pending.Length > 0)
                    {
                        yield return pending;
                    }
                    break;
                case SplitBehavior.Contiguous:
                    foreach (var (piece, isMatch) in Pieces(text))
                    {
                        if (isMatch && pending is not null && regex.Match(pending) is { Success: true } whole && whole.Length == pending.Length)
                        {
                            pending += piece;
                        }
                        else
                        {
                            if (pending is not null)
                            {
                                yield return pending;
                            }
                            pending = piece;
                        }
                    }
                    if (pending is not null)
                    {
                        yield return pending;
                    }
                    break;
            }
        }

        /// <summary>The input cut into (text, isMatch) pieces, in order, covering all of it (isMatch flipped with invert).</summary>
        private IEnumerable<(string Text, bool IsMatch)> Pieces(string text)
        {
            var position = 0;
            for (var m = regex.Match(text); m.Success; m = m.NextMatch())
            {
                if (m.Length == 0)
                {
                    continue;
                }
                if (m.Index > position)
                {
                    yield return (text[position..m.Index], invert);
                }
                yield return (m.Value, !invert);
                position = m.Index + m.Length;
            }
            if (position < text.Length)
            {
                yield return (text[position..], invert);
            }
        }
    }
}

/// <summary>An entry of <c>added_tokens</c> in <c>tokenizer.json</c>.</summary>
/// <param name="Id">Token id.</param>
/// <param name="Content">Exact text of the token.</param>
/// <param name="Special">True for special tokens (skipped when decoding with skipSpecialTokens).</param>
/// <param name="LStrip">Absorbs whitespace on its left when matched.</param>
/// <param name="RStrip">Absorbs whitespace on its right when matched.</param>
/// <param name="SingleWord">Only matches as a whole word.</param>
/// <param name="Normalized">Whether it is matched against normalized text (treated like raw text here).</param>
public sealed record AddedToken(int Id, string Content, bool Special, bool LStrip, bool RStrip, bool SingleWord, bool Normalized);
