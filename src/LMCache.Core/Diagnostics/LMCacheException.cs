namespace LMCache.Core.Diagnostics;

/// <summary>Base class of LMCache.NET exceptions: bugs, bad input and broken peers. Misses are never exceptions.</summary>
/// <remarks>
/// Every exception a library of this repository defines derives from this class, so a host can tell the project's own
/// failures (with messages written for operators) from the runtime's.
/// </remarks>
public class LMCacheException : Exception
{
    /// <summary>Creates an exception with the runtime's default message.</summary>
    public LMCacheException() { }

    /// <summary>Creates an exception with a message.</summary>
    public LMCacheException(string message) : base(message) { }

    /// <summary>Creates an exception with a message and a cause.</summary>
    public LMCacheException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>
/// The configuration is invalid. Thrown at start-up; the message names every offending key, its value and what is
/// allowed.
/// </summary>
public sealed class LMCacheConfigurationException : LMCacheException
{
    /// <summary>Creates the exception from one or more problems.</summary>
    public LMCacheConfigurationException(IReadOnlyList<string> problems)
        : base(problems.Count == 1
            ? $"Invalid LMCache configuration: {problems[0]}"
            : $"Invalid LMCache configuration ({problems.Count} problems):{Environment.NewLine}  - {string.Join(Environment.NewLine + "  - ", problems)}")
    {
        Problems = problems;
    }

    /// <summary>Creates the exception from one problem.</summary>
    public LMCacheConfigurationException(string problem) : this([problem]) { }

    /// <summary>Each problem, one sentence each.</summary>
    public IReadOnlyList<string> Problems { get; }
}
