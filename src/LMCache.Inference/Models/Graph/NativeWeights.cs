using System.Globalization;
using System.Runtime.InteropServices;
using LMCache.Inference.Models.Safetensors;

namespace LMCache.Inference.Models.Graph;

/// <summary>
/// The weights of a built graph as ONNX Runtime sees them: in-memory external-data "files", each either a native
/// buffer this object owns (fp32 widened from bf16/fp16, or quantized blocks) or a memory-mapped safetensors shard
/// (fp32 tensors used in place, at their offsets in the file). Dispose only after every session that uses them.
/// </summary>
public sealed unsafe class NativeWeights : IDisposable
{
    private readonly List<string> _fileNames = [];
    private readonly List<IntPtr> _fileAddresses = [];
    private readonly List<long> _fileLengths = [];
    private readonly List<IntPtr> _owned = [];
    private readonly Dictionary<string, string> _mappedFiles = new(StringComparer.Ordinal);
    private readonly List<IDisposable> _keepAlive = [];
    private int _disposed;

    /// <summary>The in-memory file names the graph's external data refers to, parallel to <see cref="FileAddresses"/>.</summary>
    public IReadOnlyList<string> FileNames => _fileNames;

    /// <summary>The address of each in-memory file.</summary>
    public IReadOnlyList<IntPtr> FileAddresses => _fileAddresses;

    /// <summary>The length in bytes of each in-memory file.</summary>
    public IReadOnlyList<long> FileLengths => _fileLengths;

    /// <summary>Bytes of weights in their compute form (owned buffers and mapped tensors alike).</summary>
    public long Bytes { get; private set; }

    /// <summary>Bytes of the native buffers this object allocated.</summary>
    public long OwnedBytes { get; private set; }

    /// <summary>Allocates a 64-byte-aligned native buffer of <paramref name="elements"/> <typeparamref name="T"/> as its own in-memory file.</summary>
    public (string File, long Offset, long Bytes) Allocate<T>(long elements, out Span<T> memory) where T : unmanaged
    {
        var bytes = checked(elements * sizeof(T));
        var pointer = (IntPtr)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 64);
        _owned.Add(pointer);
        OwnedBytes += bytes;
        Bytes += bytes;
        var name = string.Create(CultureInfo.InvariantCulture, $"lmcache-weights-{_fileNames.Count}.bin");
        AddFile(name, pointer, bytes);
        memory = new Span<T>((void*)pointer, checked((int)elements));
        return (name, 0, bytes);
    }

    /// <summary>Uses <paramref name="tensor"/> of the mapped <paramref name="file"/> in place; returns its in-memory file and offset.</summary>
    public (string File, long Offset, long Bytes) UseMapped(SafetensorsFile file, SafetensorsTensorInfo tensor)
    {
        if (!_mappedFiles.TryGetValue(file.FilePath, out var name))
        {
            name = string.Create(CultureInfo.InvariantCulture, $"lmcache-shard-{_fileNames.Count}.safetensors");
            _mappedFiles.Add(file.FilePath, name);
            AddFile(name, file.BaseAddress, file.Length);
        }
        Bytes += tensor.ByteLength;
        return (name, tensor.DataOffset, tensor.ByteLength);
    }

    /// <summary>Keeps <paramref name="resource"/> (e.g. the memory maps) alive until this object is disposed.</summary>
    public void KeepAlive(IDisposable resource) => _keepAlive.Add(resource);

    private void AddFile(string name, IntPtr address, long length)
    {
        _fileNames.Add(name);
        _fileAddresses.Add(address);
        _fileLengths.Add(length);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        foreach (var pointer in _owned)
        {
            NativeMemory.AlignedFree((void*)pointer);
        }
        foreach (var resource in _keepAlive)
        {
            resource.Dispose();
        }
    }
}
