using LMCache.Core.Diagnostics;

namespace LMCache.Connectors.Lm;

/// <summary>
/// The <c>lm://</c> server cannot be reached or broke the protocol. The remote backend turns it into a miss and
/// counts it toward its circuit breaker.
/// </summary>
public sealed class LmConnectionException : LMCacheException
{
    /// <summary>Creates the exception.</summary>
    public LmConnectionException(string message) : base(message) { }

    /// <summary>Creates the exception with its cause.</summary>
    public LmConnectionException(string message, Exception innerException) : base(message, innerException) { }
}
