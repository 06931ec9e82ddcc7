namespace LMCache.Inference.Generation;

/// <summary>How the next token is chosen.</summary>
/// <param name="Temperature">Softmax temperature; 0 (or below 1e-5) means greedy. Defaults to 1, as OpenAI's API.</param>
/// <param name="TopP">Nucleus mass in (0, 1]; 1 keeps every token. Defaults to 1.</param>
/// <param name="Seed">Seed of the sampling RNG; null draws a random seed. Same seed and request = same output.</param>
public sealed record SamplingParameters(double Temperature = 1.0, double TopP = 1.0, long? Seed = null)
{
    /// <summary>Greedy decoding (argmax).</summary>
    public static SamplingParameters Greedy { get; } = new(0.0);

    /// <summary>True when decoding is greedy.</summary>
    public bool IsGreedy => Temperature < 1e-5;
}
