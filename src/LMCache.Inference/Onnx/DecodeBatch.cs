using LMCache.Core.Memory;
using LMCache.Engine;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LMCache.Inference.Onnx;

/// <summary>
/// The KV of the sequences decoded together, as one batched past: per layer a key and a value tensor
/// <c>[rows, kv_heads, columns, head_dim]</c> and an <c>attention_mask</c> <c>[rows, columns]</c>. Each decode step
/// (<see cref="OnnxDecoder.ForwardBatch"/>) appends one column to every row, so a row whose past was shorter than the
/// longest keeps its padding in the middle (masked, zero-filled); under the decoder graph contract visibility is by
/// position, so the padding is never seen. The batch is built once when the set of decoding sequences changes
/// (<see cref="Gather"/>) and taken apart when it changes again (<see cref="Scatter"/>); between those, a step costs
/// the same copy as a single sequence's step (ONNX Runtime's past + new concat), whatever the padding.
/// Not thread-safe: the scheduler owns it.
/// </summary>
internal sealed class DecodeBatch : IDisposable
{
    private readonly KvLayout _layout;
    private readonly TensorElementType _elementType;
    private OrtValue[] _tensors;   // [kv * layers + layer]
    private long[] _mask;          // [rows, columns]
    private readonly int[] _lengths;

    private DecodeBatch(KvLayout layout, TensorElementType elementType, int rows, int columns)
    {
        _layout = layout;
        _elementType = elementType;
        Rows = rows;
        Columns = columns;
        _tensors = Allocate(columns);
        _mask = new long[rows * columns];
        _lengths = new int[rows];
    }

    /// <summary>Sequences (rows) in the batch.</summary>
    public int Rows { get; }

    /// <summary>Past length of every row, padding included.</summary>
    public int Columns { get; private set; }

    /// <summary>Real tokens of <paramref name="row"/> (its position for the next token).</summary>
    public int Length(int row) => _lengths[row];

    /// <summary>The mask of the current past, row-major <c>[Rows, Columns]</c>.</summary>
    public ReadOnlySpan<long> Mask => _mask;

    /// <summary>Bytes of KV held, padding included.</summary>
    public long ByteCount => (long)Rows * Columns * _layout.BytesPerToken;

    internal OrtValue Tensor(int index) => _tensors[index];

    /// <summary>
    /// Builds a batch from <paramref name="sequences"/> (row i = sequence i, left-aligned, right-padded with zeros
    /// and mask 0 to the longest) and releases their KV (<see cref="KvSequence.Reset"/> to 0): the batch owns it now.
    /// </summary>
    public static DecodeBatch Gather(IReadOnlyList<KvSequence> sequences, TensorElementType elementType)
    {
        ArgumentOutOfRangeException.ThrowIfZero(sequences.Count);
        var layout = sequences[0].Layout;
        var columns = sequences.Max(s => s.Length);
        var batch = new DecodeBatch(layout, elementType, sequences.Count, columns);
        var rowBytes = layout.HeadDim * layout.DType.ItemSize();
        for (var t = 0; t < batch._tensors.Length; t++)
        {
            var destination = batch._tensors[t].GetTensorMutableRawData();
            destination.Clear();
            for (var b = 0; b < sequences.Count; b++)
            {
                var sequence = sequences[b];
                var length = sequence.Length;
                var source = sequence.Tensor(t % layout.NumLayers, t >= layout.NumLayers).GetTensorMutableRawData();
                for (var h = 0; h < layout.NumKvHeads; h++)
                {
                    source.Slice(h * length * rowBytes, length * rowBytes)
                        .CopyTo(destination.Slice(((b * layout.NumKvHeads) + h) * columns * rowBytes));
                }
            }
        }
        for (var b = 0; b < sequences.Count; b++)
        {
            batch._lengths[b] = sequences[b].Length;
            batch._mask.AsSpan(b * columns, sequences[b].Length).Fill(1);
            sequences[b].Reset(0);
        }
        return batch;
    }

    /// <summary>Copies the real tokens of <paramref name="row"/> (mask 1, in order) into <paramref name="destination"/>, replacing its KV.</summary>
    public void Scatter(int row, KvSequence destination)
    {
        var length = _lengths[row];
        destination.Reset(length);
        var rowBytes = _layout.HeadDim * _layout.DType.ItemSize();
        var mask = _mask.AsSpan(row * Columns, Columns);
        for (var t = 0; t < _tensors.Length; t++)
        {
            var source = _tensors[t].GetTensorMutableRawData();
            var target = destination.Tensor(t % _layout.NumLayers, t >= _layout.NumLayers).GetTensorMutableRawData();
            for (var h = 0; h < _layout.NumKvHeads; h++)
            {
                var sourceHead = source.Slice(((row * _layout.NumKvHeads) + h) * Columns * rowBytes, Columns * rowBytes);
                var targetHead = target.Slice(h * length * rowBytes, length * rowBytes);
                var written = 0;
                var column = 0;
                while (column < Columns)
                {
                    if (mask[column] == 0)
                    {
                        column++;
                        continue;
                    }
                    var run = column;
                    while (run < Columns && mask[run] != 0)
                    {
                        run++;
                    }
                    sourceHead.Slice(column * rowBytes, (run - column) * rowBytes).CopyTo(targetHead.Slice(written * rowBytes));
                    written += run - column;
                    column = run;
                }
            }
        }
    }

    /// <summary>Allocates the present tensors of a step that appends one column.</summary>
    internal OrtValue[] Allocate(int columns)
    {
        var shape = new long[] { Rows, _layout.NumKvHeads, columns, _layout.HeadDim };
        var tensors = new OrtValue[2 * _layout.NumLayers];
        for (var i = 0; i < tensors.Length; i++)
        {
            tensors[i] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _elementType, shape);
        }
        return tensors;
    }

    /// <summary>Takes a step's present tensors (one more column, real for every row), releasing the old past.</summary>
    internal void Append(OrtValue[] presents)
    {
        var columns = Columns + 1;
        var mask = new long[Rows * columns];
        for (var b = 0; b < Rows; b++)
        {
            _mask.AsSpan(b * Columns, Columns).CopyTo(mask.AsSpan(b * columns));
            mask[(b * columns) + Columns] = 1;
            _lengths[b]++;
        }
        foreach (var tensor in _tensors)
        {
            tensor.Dispose();
        }
        _tensors = presents;
        _mask = mask;
        Columns = columns;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var tensor in _tensors)
        {
            tensor.Dispose();
        }
        _tensors = [];
    }
}
