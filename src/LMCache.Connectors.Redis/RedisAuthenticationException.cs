using LMCache.Core.Diagnostics;

namespace LMCache.Connectors.Redis;

/// <summary>The Redis server refused the URL's credentials (wrong user or password, or none given where one is needed).</summary>
public sealed class RedisAuthenticationException : LMCacheException
{
    /// <summary>Creates the exception.</summary>
    public RedisAuthenticationException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
