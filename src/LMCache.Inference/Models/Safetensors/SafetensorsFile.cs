using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text.Json;

namespace LMCache.Inference.Models.Safetensors;

/// <summary>
/// One <c>.safetensors</c> file, memory-mapped read-only: an 8-byte little-endian header length, a JSON header
/// (<c>{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {…}}</c>, offsets relative to the
/// end of the header) and the tensor bytes. Nothing is read until asked for; pages come from the OS page cache.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Headers larger than this are refused as corrupt (the format's own readers use 100 MB).</summary>
    private const long MaxHeaderBytes = 100_000_000;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly Dictionary<string, SafetensorsTensorInfo> _tensors;
    private int _disposed;

    private SafetensorsFile(string path, long length, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePointer,
        byte[] header, Dictionary<string, SafetensorsTensorInfo> tensors)
    {
        FilePath = path;
        Length = length;
        _map = map;
        _view = view;
        _base = basePointer;
        HeaderBytes = header;
        _tensors = tensors;
    }

    /// <summary>The file (absolute).</summary>
    public string FilePath { get; }

    /// <summary>The file's size in bytes.</summary>
    public long Length { get; }

    /// <summary>The raw JSON header (for the model fingerprint).</summary>
    public ReadOnlyMemory<byte> HeaderBytes { get; }

    /// <summary>The tensors in this file, by name.</summary>
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors => _tensors;

    /// <summary>Opens and validates <paramref name="path"/>: header JSON, dtypes' sizes against shapes, offsets within the file.</summary>
    /// <exception cref="SafetensorsException">The file is missing, truncated or its header is malformed.</exception>
    public static SafetensorsFile Open(string path)
    {
        path = Path.GetFullPath(path);
        long length;
        try
        {
            length = new FileInfo(path).Length;
        }
        catch (FileNotFoundException)
        {
            throw new SafetensorsException(path, null, "the file does not exist.");
        }
        if (!File.Exists(path))
        {
            throw new SafetensorsException(path, null, "the file does not exist.");
        }
        if (length < 8)
        {
            throw new SafetensorsException(path, null, $"the file is truncated: {length} bytes, less than the 8-byte header length.");
        }
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, mapName: null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        var acquired = false;
        try
        {
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            acquired = true;
            pointer += view.PointerOffset;
            var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(pointer, 8));
            if (headerLength > MaxHeaderBytes)
            {
                throw new SafetensorsException(path, null, $"bad header: declared header length {headerLength} bytes is not plausible.");
            }
            if (8 + (long)headerLength > length)
            {
                throw new SafetensorsException(path, null, $"the file is truncated: the header needs {8 + (long)headerLength} bytes but the file has {length}.");
            }
            var header = new ReadOnlySpan<byte>(pointer + 8, (int)headerLength).ToArray();
            var tensors = ParseHeader(path, header, dataStart: 8 + (long)headerLength, length);
            return new SafetensorsFile(path, length, map, view, pointer, header, tensors);
        }
        catch
        {
            if (acquired)
            {
                view!.SafeMemoryMappedViewHandle.ReleasePointer();
            }
            view?.Dispose();
            map.Dispose();
            throw;
        }
    }

    private static Dictionary<string, SafetensorsTensorInfo> ParseHeader(string path, byte[] header, long dataStart, long fileLength)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header);
        }
        catch (JsonException ex)
        {
            throw new SafetensorsException(path, null, $"bad header: the JSON header does not parse ({ex.Message}).");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new SafetensorsException(path, null, "bad header: the JSON header is not an object.");
            }
            var tensors = new Dictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    continue;
                }
                var entry = property.Value;
                if (entry.ValueKind != JsonValueKind.Object
                    || !entry.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String
                    || !entry.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array
                    || !entry.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
                    || offsetsElement.GetArrayLength() != 2)
                {
                    throw new SafetensorsException(path, property.Name, "bad header: the entry needs 'dtype', 'shape' and a two-element 'data_offsets'.");
                }
                var shape = new long[shapeElement.GetArrayLength()];
                var i = 0;
                foreach (var dim in shapeElement.EnumerateArray())
                {
                    if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out shape[i]) || shape[i] < 0)
                    {
                        throw new SafetensorsException(path, property.Name, "bad header: a shape dimension is not a non-negative integer.");
                    }
                    i++;
                }
                var begin = offsetsElement[0].TryGetInt64(out var b) ? b : -1;
                var end = offsetsElement[1].TryGetInt64(out var e) ? e : -1;
                if (begin < 0 || end < begin)
                {
                    throw new SafetensorsException(path, property.Name, $"bad header: data_offsets [{offsetsElement[0]}, {offsetsElement[1]}] are not an ordered pair of offsets.");
                }
                var info = new SafetensorsTensorInfo(property.Name, path, dtypeElement.GetString()!, shape, dataStart + begin, end - begin);
                var elementSize = SafetensorsTensorInfo.ElementSize(info.DTypeName);
                if (elementSize != 0 && info.ElementCount * elementSize != info.ByteLength)
                {
                    throw new SafetensorsException(path, property.Name,
                        $"bad header: shape {info.ShapeText} of {info.DTypeName} needs {info.ElementCount * elementSize} bytes but data_offsets span {info.ByteLength}.");
                }
                if (dataStart + end > fileLength)
                {
                    throw new SafetensorsException(path, property.Name,
                        $"the file is truncated: the tensor's data ends at byte {dataStart + end} but the file has {fileLength} bytes.");
                }
                tensors.Add(property.Name, info);
            }
            return tensors;
        }
    }

    /// <summary>The raw bytes of <paramref name="tensor"/> (a view of the mapping; valid until this file is disposed).</summary>
    public ReadOnlySpan<byte> Bytes(SafetensorsTensorInfo tensor)
    {
        CheckOwn(tensor);
        return new ReadOnlySpan<byte>(_base + tensor.DataOffset, checked((int)tensor.ByteLength));
    }

    /// <summary>The address of <paramref name="tensor"/>'s bytes in the mapping (valid until this file is disposed).</summary>
    public IntPtr Address(SafetensorsTensorInfo tensor)
    {
        CheckOwn(tensor);
        return (IntPtr)(_base + tensor.DataOffset);
    }

    /// <summary>The address of the file's first byte in the mapping (valid until this file is disposed).</summary>
    public IntPtr BaseAddress
    {
        get
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            return (IntPtr)_base;
        }
    }

    /// <summary>Bytes <paramref name="offset"/> .. <paramref name="offset"/> + <paramref name="count"/> of the file.</summary>
    public ReadOnlySpan<byte> FileBytes(long offset, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset + count, Length);
        return new ReadOnlySpan<byte>(_base + offset, count);
    }

    private void CheckOwn(SafetensorsTensorInfo tensor)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (!ReferenceEquals(tensor.FilePath, FilePath) && tensor.FilePath != FilePath)
        {
            throw new ArgumentException($"Tensor '{tensor.Name}' belongs to {tensor.FilePath}, not {FilePath}.", nameof(tensor));
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
