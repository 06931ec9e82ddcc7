using Xunit.v3;

namespace LMCache.Testing;

/// <summary>
/// Marks a test class (or assembly) as an integration test: it starts external processes (redis-server, python3,
/// chromium, the CLI), talks to servers over sockets, or runs model inference. Its tests carry the trait
/// <c>Category=Integration</c>, so the fast unit tests run alone with
/// <c>dotnet test --filter "Category!=Integration"</c>.
/// </summary>
[AttributeUsage(AttributeTargets.Assembly | AttributeTargets.Class, AllowMultiple = false)]
public sealed class IntegrationTestAttribute : Attribute, ITraitAttribute
{
    /// <summary>The trait name.</summary>
    public const string TraitName = "Category";

    /// <summary>The trait value.</summary>
    public const string TraitValue = "Integration";

    /// <inheritdoc />
    public IReadOnlyCollection<KeyValuePair<string, string>> GetTraits() => [new(TraitName, TraitValue)];
}
