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
/// (<see cref="Gather"/>) and taken apart when it changes again (<see cref="Scatter"/>).
/// <para>Two ways to step. With a graph in the optimum convention (present = concat(past, new)) each step gets new
/// present tensors one column wider (<see cref="Allocate"/>, <see cref="Append"/>): ONNX Runtime copies the whole
/// batch past every step. With a graph that outputs only the new KV (<see cref="Models.Graph.DecoderGraphOutputs.NewOnly"/>)
/// the batch is gathered with spare columns (<see cref="Capacity"/> ≥ <see cref="Columns"/>): the whole buffer is fed
/// as the past in place, its unused columns masked, and the step's new KV is written into column
/// <see cref="Columns"/> of each row (<see cref="AppendNew"/>); the buffer grows by <see cref="GrowthColumns"/> columns
/// in one copy, when it is full.</para>
/// Not thread-safe: the scheduler owns it.
/// </summary>
internal sealed class DecodeBatch : IDisposable
{
    private readonly KvLayout _layout;
    private readonly TensorElementType _elementType;
    private readonly bool _inPlace;
    private readonly int _growthColumns;
    private OrtValue[] _tensors;   // [kv * layers + layer], each [rows, kv, Capacity, hd]
    private OrtValue[] _newKv;     // in place: the step's new KV, [rows, kv, 1, hd] each
    private long[] _mask;          // [rows, MaskWidth]; in place, column Capacity is the step's new token (always 1)
    private readonly int[] _lengths;

    /// <summary>Columns a batch stepping in place grows by when its buffer is full (each growth is one copy of the past).</summary>
    public const int GrowthColumns = 256;

    private DecodeBatch(KvLayout layout, TensorElementType elementType, int rows, int columns, bool inPlace, int growthColumns)
    {
        _layout = layout;
        _elementType = elementType;
        _inPlace = inPlace;
        _growthColumns = growthColumns;
        Rows = rows;
        Columns = columns;
        Capacity = inPlace ? columns + growthColumns : columns;
        _tensors = Allocate(Capacity);
        _newKv = inPlace ? Allocate(1) : [];
        _mask = new long[rows * MaskWidth];
        if (inPlace)
        {
            for (var b = 0; b < rows; b++)
            {
                _mask[(b * MaskWidth) + Capacity] = 1;
            }
        }
        _lengths = new int[rows];
    }

    /// <summary>Columns of storage per row: <see cref="Columns"/> in use, the rest (in place only) spare and masked.</summary>
    public int Capacity { get; private set; }

    /// <summary>Whether steps write the new KV into spare columns (<see cref="AppendNew"/>) rather than replace the past (<see cref="Append"/>).</summary>
    public bool InPlace => _inPlace;

    /// <summary>Width of a mask row: <see cref="Capacity"/>, plus one column for the step's new token when stepping in place.</summary>
    private int MaskWidth => _inPlace ? Capacity + 1 : Capacity;

    /// <summary>Sequences (rows) in the batch.</summary>
    public int Rows { get; }

    /// <summary>Past length of every row, padding included.</summary>
    public int Columns { get; private set; }

    /// <summary>Real tokens of <paramref name="row"/> (its position for the next token).</summary>
    public int Length(int row) => _lengths[row];

    /// <summary>
    /// The mask of the current past, row-major <c>[Rows, Columns]</c>; in place, <c>[Rows, Capacity + 1]</c>: the
    /// storage columns (spare ones 0) and a last column of ones for the step's new token, the step's attention_mask as is.
    /// </summary>
    public ReadOnlySpan<long> Mask => _mask;

    /// <summary>The mask array itself, for feeding it to a step in place without a copy.</summary>
    internal long[] MaskArray => _mask;

    /// <summary>Bytes of KV held, padding and spare columns included.</summary>
    public long ByteCount => (long)Rows * Capacity * _layout.BytesPerToken;

    internal OrtValue Tensor(int index) => _tensors[index];

    /// <summary>In place: the tensor the step writes its new KV to (<c>[Rows, kv, 1, hd]</c>), same order as <see cref="Tensor"/>.</summary>
    internal OrtValue NewTensor(int index) => _newKv[index];

    /// <summary>
    /// Builds a batch from <paramref name="sequences"/> (row i = sequence i, left-aligned, right-padded with zeros
    /// and mask 0 to the longest) and releases their KV (<see cref="KvSequence.Reset"/> to 0): the batch owns it now.
    /// </summary>
    /// <param name="sequences">The rows, in order.</param>
    /// <param name="elementType">ONNX element type of the KV.</param>
    /// <param name="inPlace">Whether steps write into spare columns (a graph that outputs only the new KV).</param>
    /// <param name="growthColumns">In place: spare columns at first and added by each growth (<see cref="GrowthColumns"/>).</param>
    public static DecodeBatch Gather(IReadOnlyList<KvSequence> sequences, TensorElementType elementType, bool inPlace = false, int growthColumns = GrowthColumns)
    {
        ArgumentOutOfRangeException.ThrowIfZero(sequences.Count);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(growthColumns);
        var layout = sequences[0].Layout;
        var columns = sequences.Max(s => s.Length);
        var batch = new DecodeBatch(layout, elementType, sequences.Count, columns, inPlace, growthColumns);
        var capacity = batch.Capacity;
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
                        .CopyTo(destination.Slice(((b * layout.NumKvHeads) + h) * capacity * rowBytes));
                }
            }
        }
        for (var b = 0; b < sequences.Count; b++)
        {
            batch._lengths[b] = sequences[b].Length;
            batch._mask.AsSpan(b * batch.MaskWidth, sequences[b].Length).Fill(1);
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
        var mask = _mask.AsSpan(row * MaskWidth, Columns);
        for (var t = 0; t < _tensors.Length; t++)
        {
            var source = _tensors[t].GetTensorMutableRawData();
            var target = destination.Tensor(t % _layout.NumLayers, t >= _layout.NumLayers).GetTensorMutableRawData();
            for (var h = 0; h < _layout.NumKvHeads; h++)
            {
                var sourceHead = source.Slice(((row * _layout.NumKvHeads) + h) * Capacity * rowBytes, Columns * rowBytes);
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

    /// <summary>
    /// Takes a step's present tensors (one more column, real for every row) and the mask the step ran with (this
    /// batch's mask with a column of ones appended), releasing the old past.
    /// </summary>
    internal void Append(OrtValue[] presents, long[] mask)
    {
        if (_inPlace)
        {
            throw new InvalidOperationException("A batch stepping in place takes its new KV with AppendNew.");
        }
        var columns = Columns + 1;
        if (mask.Length != Rows * columns)
        {
            throw new ArgumentException($"The step's mask has {mask.Length} entries, not {Rows} × {columns}.", nameof(mask));
        }
        for (var b = 0; b < Rows; b++)
        {
            _lengths[b]++;
        }
        foreach (var tensor in _tensors)
        {
            tensor.Dispose();
        }
        _tensors = presents;
        _mask = mask;
        Columns = columns;
        Capacity = columns;
    }

    /// <summary>In place: makes sure a spare column exists for the next step, growing the buffer (one copy) when full.</summary>
    internal void EnsureSpareColumn()
    {
        if (!_inPlace)
        {
            throw new InvalidOperationException("Only a batch gathered in place has spare columns.");
        }
        if (Columns < Capacity)
        {
            return;
        }
        var capacity = Capacity + _growthColumns;
        var tensors = Allocate(capacity);
        var rowBytes = _layout.HeadDim * _layout.DType.ItemSize();
        var heads = Rows * _layout.NumKvHeads;
        for (var t = 0; t < tensors.Length; t++)
        {
            var source = _tensors[t].GetTensorMutableRawData();
            var destination = tensors[t].GetTensorMutableRawData();
            destination.Clear();
            for (var head = 0; head < heads; head++)
            {
                source.Slice(head * Capacity * rowBytes, Columns * rowBytes).CopyTo(destination.Slice(head * capacity * rowBytes));
            }
            _tensors[t].Dispose();
        }
        var mask = new long[Rows * (capacity + 1)];
        for (var b = 0; b < Rows; b++)
        {
            _mask.AsSpan(b * MaskWidth, Columns).CopyTo(mask.AsSpan(b * (capacity + 1)));
            mask[(b * (capacity + 1)) + capacity] = 1;
        }
        _tensors = tensors;
        _mask = mask;
        Capacity = capacity;
    }

    /// <summary>
    /// In place: after a step wrote every row's new KV to <see cref="NewTensor"/>, copies it into column
    /// <see cref="Columns"/> of each row (which <see cref="EnsureSpareColumn"/> made free) and marks it real.
    /// </summary>
    internal void AppendNew()
    {
        if (!_inPlace || Columns >= Capacity)
        {
            throw new InvalidOperationException("No spare column to append to: call EnsureSpareColumn before the step.");
        }
        var rowBytes = _layout.HeadDim * _layout.DType.ItemSize();
        var heads = Rows * _layout.NumKvHeads;
        for (var t = 0; t < _tensors.Length; t++)
        {
            var source = _newKv[t].GetTensorMutableRawData();
            var destination = _tensors[t].GetTensorMutableRawData();
            for (var head = 0; head < heads; head++)
            {
                source.Slice(head * rowBytes, rowBytes).CopyTo(destination.Slice(((head * Capacity) + Columns) * rowBytes));
            }
        }
        for (var b = 0; b < Rows; b++)
        {
            _mask[(b * MaskWidth) + Columns] = 1;
            _lengths[b]++;
        }
        Columns++;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var tensor in _tensors)
        {
            tensor.Dispose();
        }
        foreach (var tensor in _newKv)
        {
            tensor.Dispose();
        }
        _tensors = [];
        _newKv = [];
    }
}
