using LMCache.Core.Diagnostics;

namespace LMCache.Inference.Models.Graph;

/// <summary>The model's <c>config.json</c> asks for an architecture or feature the graph builder does not support.</summary>
public sealed class ModelArchitectureException : LMCacheException
{
    /// <summary>Creates the exception.</summary>
    public ModelArchitectureException(string message) : base(message) { }
}
