namespace LMCache.Inference.Models.Graph;

/// <summary>
/// What the graph builder needs to know about an architecture (<c>architectures[0]</c> of config.json): how its
/// projections are named and fused, which have biases, whether q/k are normed per head, and where it slides its
/// attention window.
/// </summary>
public sealed record DecoderArchitecture
{
    /// <summary>The architectures the builder supports.</summary>
    public static readonly IReadOnlyList<string> Supported =
        ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM"];

    /// <summary>The <c>architectures[0]</c> name.</summary>
    public required string Name { get; init; }

    /// <summary>q, k and v projections have biases.</summary>
    public bool QkvBias { get; init; }

    /// <summary>The output projection has a bias.</summary>
    public bool OutputBias { get; init; }

    /// <summary>gate, up and down projections have biases.</summary>
    public bool MlpBias { get; init; }

    /// <summary>q and k are RMS-normed per head before RoPE (Qwen3: <c>q_norm</c>, <c>k_norm</c>).</summary>
    public bool QkNorm { get; init; }

    /// <summary>One <c>qkv_proj</c> instead of q/k/v (Phi-3).</summary>
    public bool FusedQkv { get; init; }

    /// <summary>One <c>gate_up_proj</c> instead of gate/up (Phi-3).</summary>
    public bool FusedGateUp { get; init; }

    /// <summary>The attention window of each layer (null = full attention).</summary>
    public required IReadOnlyList<int?> LayerWindows { get; init; }

    /// <summary>Reads the architecture of <paramref name="config"/>.</summary>
    /// <exception cref="ModelArchitectureException">An unsupported architecture or activation.</exception>
    public static DecoderArchitecture For(ModelConfig config)
    {
        var name = config.Architectures.Count > 0 ? config.Architectures[0] : "";
        if (config.HiddenAct is not ("silu" or "swish"))
        {
            throw new ModelArchitectureException($"config.json: hidden_act '{config.HiddenAct}' is not supported (the builder supports silu).");
        }
        if (config.IntermediateSize <= 0)
        {
            throw new ModelArchitectureException("config.json: 'intermediate_size' is missing or not positive.");
        }
        return name switch
        {
            "LlamaForCausalLM" => new DecoderArchitecture
            {
                Name = name,
                QkvBias = config.AttentionBias,
                OutputBias = config.AttentionBias,
                MlpBias = config.MlpBias,
                LayerWindows = Windows(config, slidingByDefault: false),
            },
            "MistralForCausalLM" => new DecoderArchitecture
            {
                Name = name,
                LayerWindows = Windows(config, slidingByDefault: true),
            },
            "Qwen2ForCausalLM" => new DecoderArchitecture
            {
                Name = name,
                QkvBias = true,
                LayerWindows = QwenWindows(config),
            },
            "Qwen3ForCausalLM" => new DecoderArchitecture
            {
                Name = name,
                QkvBias = config.AttentionBias,
                OutputBias = config.AttentionBias,
                QkNorm = true,
                LayerWindows = QwenWindows(config),
            },
            "Phi3ForCausalLM" => new DecoderArchitecture
            {
                Name = name,
                FusedQkv = true,
                FusedGateUp = true,
                LayerWindows = Windows(config, slidingByDefault: true),
            },
            _ => throw new ModelArchitectureException(
                $"config.json: architecture '{(name.Length == 0 ? "(none)" : name)}' is not supported; the graph builder supports {string.Join(", ", Supported)}."),
        };
    }

    /// <summary>Llama / Mistral / Phi-3: layer_types when given, else every layer slides when sliding_window is set (Mistral, Phi-3).</summary>
    private static int?[] Windows(ModelConfig config, bool slidingByDefault)
    {
        var windows = new int?[config.NumLayers];
        for (var l = 0; l < windows.Length; l++)
        {
            var sliding = config.LayerTypes is { } types && l < types.Count
                ? types[l] == "sliding_attention"
                : slidingByDefault;
            windows[l] = sliding ? config.SlidingWindow : null;
        }
        return windows;
    }

    /// <summary>Qwen2 / Qwen3: layer_types when given, else the window applies from max_window_layers on, only with use_sliding_window.</summary>
    private static int?[] QwenWindows(ModelConfig config)
    {
        var windows = new int?[config.NumLayers];
        for (var l = 0; l < windows.Length; l++)
        {
            var sliding = config.LayerTypes is { } types && l < types.Count
                ? types[l] == "sliding_attention"
                : config.UseSlidingWindow == true && l >= (config.MaxWindowLayers ?? 0);
            windows[l] = sliding ? config.SlidingWindow : null;
        }
        return windows;
    }
}
