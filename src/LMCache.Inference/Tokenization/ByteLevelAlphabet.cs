namespace LMCache.Inference.Tokenization;

/// <summary>
/// GPT-2's reversible byte-to-character map used by byte-level BPE: printable Latin-1 bytes map to themselves,
/// the other 68 bytes to U+0100 onwards, so every byte string becomes a string of visible characters.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] s_byteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> s_charToByte = BuildCharToByte();

    /// <summary>The character standing for byte <paramref name="b"/>.</summary>
    public static char ToChar(byte b) => s_byteToChar[b];

    /// <summary>The byte a byte-level character stands for; false for characters outside the alphabet.</summary>
    public static bool TryToByte(char c, out byte b) => s_charToByte.TryGetValue(c, out b);

    /// <summary>Maps UTF-8 bytes to their byte-level string.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        return string.Create(bytes.Length, bytes.ToArray(), static (span, state) =>
        {
            for (var i = 0; i < state.Length; i++)
            {
                span[i] = s_byteToChar[state[i]];
            }
        });
    }

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        var assigned = new bool[256];
        for (var b = '!'; b <= '~'; b++)
        {
            map[b] = b;
            assigned[b] = true;
        }
        for (var b = '\u00A1'; b <= '\u00AC'; b++)
        {
            map[b] = b;
            assigned[b] = true;
        }
        for (var b = '\u00AE'; b <= '\u00FF'; b++)
        {
            map[b] = b;
            assigned[b] = true;
        }
        var next = 0;
        for (var b = 0; b < 256; b++)
        {
            if (!assigned[b])
            {
                map[b] = (char)(256 + next);
                next++;
            }
        }
        return map;
    }

    private static Dictionary<char, byte> BuildCharToByte()
    {
        var map = new Dictionary<char, byte>(256);
        for (var b = 0; b < 256; b++)
        {
            map[s_byteToChar[b]] = (byte)b;
        }
        return map;
    }
}
