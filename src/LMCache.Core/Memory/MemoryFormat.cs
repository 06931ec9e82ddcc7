namespace LMCache.Core.Memory;

/// <summary>
/// Logical layout of a memory object. Values are LMCache's <c>MemoryFormat</c> integers and travel on the wire.
/// </summary>
public enum MemoryFormat
{
    /// <summary>Unknown layout.</summary>
    Undefined = 0,
    /// <summary><c>[2, num_layers, num_tokens, kv_heads*head_dim]</c>, K before V. The default non-layerwise format.</summary>
    KV2LTD = 1,
    /// <summary><c>[num_tokens, 2, hidden]</c> (layerwise).</summary>
    KVT2D = 2,
    /// <summary><c>[2, num_tokens, hidden]</c> (layerwise + blending).</summary>
    KV2TD = 3,
    /// <summary>Compressed binary.</summary>
    Binary = 4,
    /// <summary>Opaque bytes, shape <c>[nbytes,0,0,0]</c>, dtype None (cachegen output).</summary>
    BinaryBuffer = 5,
    /// <summary><c>[1, num_layers, num_tokens, aligned_head_size]</c> (MLA latent).</summary>
    KVMla = 6,
}
