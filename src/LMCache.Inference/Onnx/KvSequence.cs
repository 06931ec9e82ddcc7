using LMCache.Core.Memory;
using LMCache.Engine;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LMCache.Inference.Onnx;

/// <summary>
/// The KV cache of one sequence as ONNX Runtime sees it: per layer a key and a value tensor
/// <c>[1, kv_heads, length, head_dim]</c> (head-major), owned by this object. It is also the
/// <see cref="IKvCacheAdapter"/> LMCache reads and writes: the adapter converts between this layout and the chunk
/// layout <c>KV_2LTD</c> <c>[2][layers][tokens][kv_heads × head_dim]</c> with one strided row copy per
/// (K/V, layer, head, token). Not thread-safe: one request owns it.
/// </summary>
public sealed class KvSequence : IKvCacheAdapter, IDisposable
{
    private readonly KvLayout _layout;
    private readonly TensorElementType _elementType;
    private OrtValue[] _tensors;   // [kv * layers + layer]; kv 0 = keys, 1 = values

    /// <summary>Creates an empty sequence (length 0) for a model with <paramref name="layout"/>.</summary>
    public KvSequence(KvLayout layout, TensorElementType elementType)
        : this(layout, elementType, 0)
    {
    }

    private KvSequence(KvLayout layout, TensorElementType elementType, int length)
    {
        _layout = layout;
        _elementType = elementType;
        _tensors = Allocate(length);
        Length = length;
    }

    /// <summary>Tokens whose KV this sequence holds.</summary>
    public int Length { get; private set; }

    /// <summary>The model's KV geometry.</summary>
    public KvLayout Layout => _layout;

    /// <summary>Bytes of KV held (keys and values of every layer).</summary>
    public long ByteCount => Length * _layout.BytesPerToken;

    /// <summary>The past tensor of <paramref name="layer"/> (keys when <paramref name="value"/> is false).</summary>
    internal OrtValue Tensor(int layer, bool value) => _tensors[((value ? 1 : 0) * _layout.NumLayers) + layer];

    /// <summary>
    /// Allocates the KV for <paramref name="length"/> tokens, uninitialised: the caller fills it (a retrieve) before
    /// the next model run. Releases what the sequence held.
    /// </summary>
    public void Reset(int length)
    {
        var fresh = Allocate(length);
        DisposeTensors();
        _tensors = fresh;
        Length = length;
    }

    /// <summary>Keeps the first <paramref name="length"/> tokens (after a retrieve that loaded fewer than allocated).</summary>
    public void Truncate(int length)
    {
        if (length >= Length)
        {
            return;
        }
        var fresh = Allocate(length);
        var rowBytes = _layout.HeadDim * _layout.DType.ItemSize();
        for (var t = 0; t < _tensors.Length; t++)
        {
            var source = _tensors[t].GetTensorMutableRawData();
            var destination = fresh[t].GetTensorMutableRawData();
            for (var h = 0; h < _layout.NumKvHeads; h++)
            {
                source.Slice(h * Length * rowBytes, length * rowBytes).CopyTo(destination.Slice(h * length * rowBytes, length * rowBytes));
            }
        }
        DisposeTensors();
        _tensors = fresh;
        Length = length;
    }

    /// <summary>Takes ownership of a model run's <c>present</c> tensors (length <paramref name="length"/>), releasing the old ones.</summary>
    internal void Replace(OrtValue[] presents, int length)
    {
        DisposeTensors();
        _tensors = presents;
        Length = length;
    }

    /// <summary>Allocates output tensors for a run that extends the sequence to <paramref name="length"/> tokens.</summary>
    internal OrtValue[] Allocate(int length)
    {
        var shape = new long[] { 1, _layout.NumKvHeads, length, _layout.HeadDim };
        var tensors = new OrtValue[2 * _layout.NumLayers];
        for (var i = 0; i < tensors.Length; i++)
        {
            tensors[i] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _elementType, shape);
        }
        return tensors;
    }

    /// <summary>Allocates the new-KV outputs (<c>[1, kv, count, hd]</c>) of a run of a graph that outputs only the new tokens' KV.</summary>
    internal OrtValue[] AllocateNew(int count) => Allocate(count);

    /// <summary>
    /// Writes concat(this sequence's KV, <paramref name="newKv"/>) into <paramref name="presents"/>
    /// (<see cref="Allocate"/>d for <see cref="Length"/> + <paramref name="count"/> tokens), tensor by tensor.
    /// </summary>
    internal void Concatenate(IReadOnlyList<OrtValue> newKv, OrtValue[] presents, int count)
    {
        var rowBytes = _layout.HeadDim * _layout.DType.ItemSize();
        var past = Length;
        var total = past + count;
        for (var t = 0; t < presents.Length; t++)
        {
            var pastData = past == 0 ? Span<byte>.Empty : _tensors[t].GetTensorMutableRawData();
            var newData = newKv[t].GetTensorMutableRawData();
            var destination = presents[t].GetTensorMutableRawData();
            for (var h = 0; h < _layout.NumKvHeads; h++)
            {
                var head = destination.Slice(h * total * rowBytes, total * rowBytes);
                if (past > 0)
                {
                    pastData.Slice(h * past * rowBytes, past * rowBytes).CopyTo(head);
                }
                newData.Slice(h * count * rowBytes, count * rowBytes).CopyTo(head[(past * rowBytes)..]);
            }
        }
    }

    /// <summary>A retrieve is about to load <paramref name="tokens"/> tokens: allocates exactly that much past (<see cref="Reset"/>).</summary>
    public void PrepareForRetrieve(int tokens) => Reset(tokens);

    /// <inheritdoc />
    public void CopyToChunk(int start, int count, Span<byte> chunk)
    {
        if (start < 0 || count < 0 || start + count > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"Tokens [{start}, {start + count}) are outside the sequence of {Length}.");
        }
        var item = _layout.DType.ItemSize();
        var rowBytes = _layout.HeadDim * item;
        var tokenBytes = _layout.Hidden * item;
        var planeBytes = count * tokenBytes;
        if (chunk.Length < 2 * _layout.NumLayers * planeBytes)
        {
            throw new ArgumentException($"Chunk of {chunk.Length} bytes is smaller than {2 * _layout.NumLayers * planeBytes}.", nameof(chunk));
        }
        for (var kv = 0; kv < 2; kv++)
        {
            for (var layer = 0; layer < _layout.NumLayers; layer++)
            {
                var source = _tensors[(kv * _layout.NumLayers) + layer].GetTensorMutableRawData();
                var plane = chunk.Slice(((kv * _layout.NumLayers) + layer) * planeBytes, planeBytes);
                for (var h = 0; h < _layout.NumKvHeads; h++)
                {
                    var headBase = ((h * Length) + start) * rowBytes;
                    for (var t = 0; t < count; t++)
                    {
                        source.Slice(headBase + (t * rowBytes), rowBytes).CopyTo(plane.Slice((t * tokenBytes) + (h * rowBytes), rowBytes));
                    }
                }
            }
        }
    }

    /// <inheritdoc />
    public void CopyFromChunk(int start, int chunkTokens, int count, ReadOnlySpan<byte> chunk)
    {
        if (start < 0 || count < 0 || count > chunkTokens || start + count > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"Tokens [{start}, {start + count}) do not fit the sequence of {Length} allocated tokens.");
        }
        var item = _layout.DType.ItemSize();
        var rowBytes = _layout.HeadDim * item;
        var tokenBytes = _layout.Hidden * item;
        var planeBytes = chunkTokens * tokenBytes;
        if (chunk.Length < 2 * _layout.NumLayers * planeBytes)
        {
            throw new ArgumentException($"Chunk of {chunk.Length} bytes is smaller than {2 * _layout.NumLayers * planeBytes}.", nameof(chunk));
        }
        for (var kv = 0; kv < 2; kv++)
        {
            for (var layer = 0; layer < _layout.NumLayers; layer++)
            {
                var destination = _tensors[(kv * _layout.NumLayers) + layer].GetTensorMutableRawData();
                var plane = chunk.Slice(((kv * _layout.NumLayers) + layer) * planeBytes, planeBytes);
                for (var h = 0; h < _layout.NumKvHeads; h++)
                {
                    var headBase = ((h * Length) + start) * rowBytes;
                    for (var t = 0; t < count; t++)
                    {
                        plane.Slice((t * tokenBytes) + (h * rowBytes), rowBytes).CopyTo(destination.Slice(headBase + (t * rowBytes), rowBytes));
                    }
                }
            }
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        DisposeTensors();
        _tensors = [];
        Length = 0;
    }

    private void DisposeTensors()
    {
        foreach (var tensor in _tensors)
        {
            tensor.Dispose();
        }
    }

    /// <summary>Maps an ONNX element type to the cache's dtype.</summary>
    public static KvDType ToKvDType(TensorElementType type) => type switch
    {
        TensorElementType.Float => KvDType.Float32,
        TensorElementType.Float16 => KvDType.Float16,
        TensorElementType.BFloat16 => KvDType.BFloat16,
        _ => throw new NotSupportedException($"KV element type {type} is not supported (float32, float16 or bfloat16)."),
    };
}
