using LMCache.Core.Diagnostics;

namespace LMCache.Inference.Models.Safetensors;

/// <summary>
/// A safetensors file or folder cannot give the weights the model needs: a missing tensor, a wrong shape, a truncated
/// file, a bad header or an unsupported dtype. The message names the file and, where there is one, the tensor.
/// </summary>
public sealed class SafetensorsException : LMCacheException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="filePath">The file (or the folder, when no file holds the tensor).</param>
    /// <param name="tensorName">The tensor, or null when the problem is the file's.</param>
    /// <param name="problem">What is wrong, one sentence.</param>
    public SafetensorsException(string filePath, string? tensorName, string problem)
        : base(tensorName is null ? $"{filePath}: {problem}" : $"{filePath}: tensor '{tensorName}': {problem}")
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    /// <summary>The file (or folder) the problem is in.</summary>
    public string FilePath { get; }

    /// <summary>The tensor concerned, or null.</summary>
    public string? TensorName { get; }
}
