using System.Reflection;
using LMCache.Core.Diagnostics;

namespace LMCache.Cli.Tests;

/// <summary>
/// Every exception type a library of this repository defines derives from <see cref="LMCacheException"/>, so a host
/// can tell the project's failures from the runtime's. The CLI references every library, so its folder holds them all.
/// </summary>
public sealed class ExceptionHierarchyTests
{
    [Fact]
    public void Every_library_exception_derives_from_LMCacheException()
    {
        var folder = Path.GetDirectoryName(typeof(LMCacheException).Assembly.Location)!;
        var libraries = Directory.GetFiles(folder, "LMCache.*.dll")
            .Where(path => !Path.GetFileName(path).Contains(".Tests", StringComparison.Ordinal)
                && !Path.GetFileName(path).StartsWith("LMCache.Testing", StringComparison.Ordinal)
                && !Path.GetFileName(path).Equals("LMCache.Cli.dll", StringComparison.Ordinal))
            .Select(Assembly.LoadFrom)
            .ToList();
        Assert.Contains(libraries, a => a.GetName().Name == "LMCache.Serving");
        Assert.Contains(libraries, a => a.GetName().Name == "LMCache.Connectors.Redis");
        Assert.Contains(libraries, a => a.GetName().Name == "LMCache.Controller");

        var exceptions = libraries
            .SelectMany(a => a.GetTypes())
            .Where(t => typeof(Exception).IsAssignableFrom(t))
            .ToList();
        Assert.True(exceptions.Count >= 8, $"found only {exceptions.Count} exception types: {string.Join(", ", exceptions)}");
        var strays = exceptions.Where(t => t != typeof(LMCacheException) && !t.IsSubclassOf(typeof(LMCacheException))).Select(t => t.FullName).ToList();
        Assert.Empty(strays);
    }
}
