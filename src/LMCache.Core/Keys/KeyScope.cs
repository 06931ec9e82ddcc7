namespace LMCache.Core.Keys;

/// <summary>
/// The fields a worker puts into every key besides the hash: format, model, world size, worker id and (optionally)
/// the KV dtype token. One instance per engine worker; <see cref="MakeKey"/> turns a chunk hash into a key.
/// </summary>
/// <param name="Format">Engine format string, e.g. <c>vllm</c> or <c>onnx</c>.</param>
/// <param name="ModelName">Model identifier (no <c>@</c>).</param>
/// <param name="WorldSize">Parallel world size.</param>
/// <param name="WorkerId">This worker's rank.</param>
/// <param name="DType">
/// The KV dtype token (<c>bfloat16</c>, <c>half</c>, ...): the original's mid/late-2025 6-field key form, which every
/// command of ours writes. Null writes the older 5-field form, which that original cannot parse (kept for tests and
/// for reading old entries).
/// </param>
public sealed record KeyScope(string Format, string ModelName, int WorldSize = 1, int WorkerId = 0, string? DType = null)
{
    /// <summary>Validates the fields (no <c>@</c>, positive world size, worker id in range).</summary>
    public void Validate()
    {
        if (string.IsNullOrEmpty(Format) || Format.Contains('@', StringComparison.Ordinal))
        {
            throw new ArgumentException($"Key format '{Format}' must be non-empty and contain no '@'.", nameof(Format));
        }
        if (string.IsNullOrEmpty(ModelName) || ModelName.Contains('@', StringComparison.Ordinal))
        {
            throw new ArgumentException($"Model name '{ModelName}' must be non-empty and contain no '@'.", nameof(ModelName));
        }
        if (WorldSize < 1 || WorkerId < 0 || WorkerId >= WorldSize)
        {
            throw new ArgumentException($"Worker id {WorkerId} must lie in [0, world size {WorldSize}).", nameof(WorkerId));
        }
    }

    /// <summary>
    /// The key of the chunk whose hash is <paramref name="hash"/>, with the hash spelled as the original spells the same
    /// value (<see cref="ChunkHash.ToKeyText"/>), so a Python engine computing the same hash writes the same key text.
    /// </summary>
    public CacheEngineKey MakeKey(in ChunkHash hash) => new(Format, ModelName, WorldSize, WorkerId, hash.ToKeyText(), DType);
}
