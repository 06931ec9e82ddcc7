namespace LMCache.Testing;

/// <summary>
/// Locates the files that tests read from the repository itself (<c>test/fixtures/</c>, <c>test/Golden/</c>): found by
/// walking up from the test assembly to the folder that holds <c>LMCache.slnx</c>. A test never reads anything outside
/// the clone, so a missing fixture is a failure with the path it expected, never a skip.
/// </summary>
public static class RepositoryFixtures
{
    private static readonly Lazy<string> s_root = new(FindRoot);

    /// <summary>The repository root (the folder holding <c>LMCache.slnx</c>).</summary>
    public static string Root => s_root.Value;

    /// <summary><c>test/fixtures/tiny-llama</c>: the random-weight Llama fixture with transformers' reference outputs.</summary>
    public static string TinyLlama => Folder("test", "fixtures", "tiny-llama");

    /// <summary>A folder below the repository root that must exist.</summary>
    public static string Folder(params string[] relative)
    {
        var path = Path.Combine([Root, .. relative]);
        return Directory.Exists(path)
            ? path
            : throw new DirectoryNotFoundException($"The test fixture folder '{path}' is missing from the checkout.");
    }

    /// <summary>A file below the repository root that must exist.</summary>
    public static string File(params string[] relative)
    {
        var path = Path.Combine([Root, .. relative]);
        return System.IO.File.Exists(path)
            ? path
            : throw new FileNotFoundException($"The test fixture file '{path}' is missing from the checkout.", path);
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (System.IO.File.Exists(Path.Combine(dir.FullName, "LMCache.slnx")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException($"Tests must run from a checkout: no LMCache.slnx above '{AppContext.BaseDirectory}'.");
    }
}
