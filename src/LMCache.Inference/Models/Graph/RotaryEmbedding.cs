namespace LMCache.Inference.Models.Graph;

/// <summary>
/// RoPE of a model, computed as transformers computes it (inverse frequencies in fp32, angle = position × inverse
/// frequency in fp32, cos/sin scaled by the attention factor) for the rope types <c>default</c>, <c>linear</c>,
/// <c>dynamic</c>, <c>llama3</c> and <c>longrope</c>.
/// </summary>
/// <remarks>
/// transformers picks the dynamic-NTK base and longrope's short/long factors once per forward pass, from its sequence
/// length max(position_ids) + 1. The graph does the same per row (so a row's result never depends on the others in
/// a batch): a one-pass prompt and token-by-token decoding match transformers exactly, also past the original
/// context. The price, in a KV-cached engine, is that beyond <c>original_max_position_embeddings</c> (longrope) or
/// <c>max_position_embeddings</c> (dynamic) a key's rotation depends on the pass that computed it: a prompt prefilled
/// in several steps, or partly loaded from the cache, can rotate the positions just below the threshold differently
/// from a one-pass run (transformers and vLLM have the same property). Within those limits nothing changes.
/// </remarks>
internal sealed class RotaryEmbedding
{
    private RotaryEmbedding(int rotaryDim, float[] invFreq, float attentionScaling)
    {
        RotaryDim = rotaryDim;
        InvFreq = invFreq;
        AttentionScaling = attentionScaling;
    }

    /// <summary>Rotated dimensions of each head (head_dim × partial_rotary_factor, even).</summary>
    public int RotaryDim { get; }

    /// <summary>Inverse frequencies (<see cref="RotaryDim"/> / 2) for positions within the original context.</summary>
    public float[] InvFreq { get; }

    /// <summary>Longrope: the inverse frequencies with the long factors, used by passes longer than <see cref="LongFromPosition"/>.</summary>
    public float[]? LongInvFreq { get; private init; }

    /// <summary>Longrope: <c>original_max_position_embeddings</c>; a pass whose length exceeds it uses <see cref="LongInvFreq"/>.</summary>
    public int LongFromPosition { get; private init; }

    /// <summary>Dynamic NTK: (factor, max_position_embeddings, theta); null otherwise.</summary>
    public (double Factor, int MaxPositions, double Theta)? Dynamic { get; private init; }

    /// <summary>Multiplier of cos and sin (longrope's attention factor; 1 otherwise).</summary>
    public float AttentionScaling { get; }

    /// <summary>The exponents 2i / dim of the inverse frequencies (for the dynamic base, computed in the graph).</summary>
    public float[] Exponents()
    {
        var e = new float[RotaryDim / 2];
        for (var i = 0; i < e.Length; i++)
        {
            e[i] = (float)(2 * i) / RotaryDim;
        }
        return e;
    }

    /// <summary>Computes the RoPE of <paramref name="config"/>.</summary>
    /// <exception cref="ModelArchitectureException">An unsupported rope type or missing parameters.</exception>
    public static RotaryEmbedding For(ModelConfig config)
    {
        var scaling = config.RopeScaling;
        var rotaryDim = (int)(config.HeadDim * scaling.PartialRotaryFactor);
        rotaryDim -= rotaryDim % 2;
        if (rotaryDim <= 0)
        {
            throw new ModelArchitectureException($"config.json: partial_rotary_factor {scaling.PartialRotaryFactor} leaves no rotary dimensions.");
        }
        var theta = config.RopeTheta;
        var baseInv = DefaultInvFreq(theta, rotaryDim);
        switch (config.RopeType)
        {
            case "default":
                return new RotaryEmbedding(rotaryDim, baseInv, 1f);
            case "linear":
                {
                    var factor = (float)Require(scaling.Factor, "factor", "linear");
                    return new RotaryEmbedding(rotaryDim, baseInv.Select(f => f / factor).ToArray(), 1f);
                }
            case "dynamic":
                {
                    var factor = Require(scaling.Factor, "factor", "dynamic");
                    return new RotaryEmbedding(rotaryDim, baseInv, 1f) { Dynamic = (factor, config.MaxPositionEmbeddings, theta) };
                }
            case "llama3":
                return new RotaryEmbedding(rotaryDim, Llama3InvFreq(baseInv,
                    (float)Require(scaling.Factor, "factor", "llama3"),
                    (float)Require(scaling.LowFreqFactor, "low_freq_factor", "llama3"),
                    (float)Require(scaling.HighFreqFactor, "high_freq_factor", "llama3"),
                    Require(scaling.OriginalMaxPositionEmbeddings, "original_max_position_embeddings", "llama3")), 1f);
            case "longrope":
                return LongRope(config, rotaryDim);
            default:
                throw new ModelArchitectureException(
                    $"config.json: rope type '{config.RopeType}' is not supported (supported: default, linear, dynamic, llama3, longrope).");
        }
    }

    /// <summary>transformers: <c>1 / base ** (arange(0, dim, 2).float() / dim)</c>, in fp32.</summary>
    private static float[] DefaultInvFreq(double theta, int dim)
    {
        var inv = new float[dim / 2];
        for (var i = 0; i < inv.Length; i++)
        {
            var exponent = (float)(2 * i) / dim;
            inv[i] = 1f / (float)Math.Pow((float)theta, exponent);
        }
        return inv;
    }

    private static float[] Llama3InvFreq(float[] inv, float factor, float lowFreqFactor, float highFreqFactor, int oldContext)
    {
        var lowFreqWavelen = oldContext / lowFreqFactor;
        var highFreqWavelen = oldContext / highFreqFactor;
        var result = new float[inv.Length];
        for (var i = 0; i < inv.Length; i++)
        {
            var wavelen = 2f * MathF.PI / inv[i];
            var scaled = wavelen > lowFreqWavelen ? inv[i] / factor : inv[i];
            var smooth = ((oldContext / wavelen) - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
            var smoothed = ((1 - smooth) * scaled / factor) + (smooth * scaled);
            var isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
            result[i] = isMedium ? smoothed : scaled;
        }
        return result;
    }

    private static RotaryEmbedding LongRope(ModelConfig config, int rotaryDim)
    {
        var scaling = config.RopeScaling;
        var shortFactor = scaling.ShortFactor ?? throw Missing("short_factor", "longrope");
        var longFactor = scaling.LongFactor ?? throw Missing("long_factor", "longrope");
        if (shortFactor.Count != rotaryDim / 2 || longFactor.Count != rotaryDim / 2)
        {
            throw new ModelArchitectureException(
                $"config.json: longrope short_factor / long_factor have {shortFactor.Count} / {longFactor.Count} values; the rotary dimension {rotaryDim} needs {rotaryDim / 2}.");
        }
        // transformers: with a top-level original_max_position_embeddings (Phi-3), factor = max / original.
        int original;
        double? factor = scaling.Factor;
        if (scaling.OriginalMaxPositionEmbeddingsAtTopLevel && scaling.OriginalMaxPositionEmbeddings is { } top)
        {
            original = top;
            factor = (double)config.MaxPositionEmbeddings / top;
        }
        else
        {
            original = scaling.OriginalMaxPositionEmbeddings ?? config.MaxPositionEmbeddings;
        }
        var attention = scaling.AttentionFactor
            ?? (factor is { } f && f > 1.0 ? Math.Sqrt(1 + (Math.Log(f) / Math.Log(original))) : 1.0);
        var shortInv = new float[rotaryDim / 2];
        var longInv = new float[rotaryDim / 2];
        for (var i = 0; i < shortInv.Length; i++)
        {
            var exponent = (float)(2 * i) / rotaryDim;
            var basePow = (float)Math.Pow((float)config.RopeTheta, exponent);
            shortInv[i] = 1f / ((float)shortFactor[i] * basePow);
            longInv[i] = 1f / ((float)longFactor[i] * basePow);
        }
        return new RotaryEmbedding(rotaryDim, shortInv, (float)attention) { LongInvFreq = longInv, LongFromPosition = original };
    }

    private static T Require<T>(T? value, string name, string type) where T : struct => value ?? throw Missing(name, type);

    private static ModelArchitectureException Missing(string name, string type) =>
        new($"config.json: rope type '{type}' needs '{name}' in rope_parameters / rope_scaling.");
}
