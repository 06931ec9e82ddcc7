using LMCache.Core.Memory;

namespace LMCache.Core.Serde;

/// <summary>
/// Turns a KV chunk into the bytes the remote tier stores, and back. Serde applies to the remote tier only, as in the
/// original; CPU and disk keep raw chunks.
/// </summary>
public interface IKvSerde
{
    /// <summary>The configuration name (<c>remote_serde</c>).</summary>
    string Name { get; }

    /// <summary>
    /// Serializes <paramref name="chunk"/>. Returns an object the caller owns one reference to (it may be
    /// <paramref name="chunk"/> itself with an added reference), or null when memory for the output could not be had.
    /// </summary>
    MemoryObject? Serialize(MemoryObject chunk, IMemoryAllocator allocator);

    /// <summary>
    /// Deserializes <paramref name="stored"/> (as read from the remote store, with its stored metadata). Returns an
    /// object the caller owns, or null when the bytes are not a valid chunk — never garbage.
    /// </summary>
    MemoryObject? Deserialize(MemoryObject stored, IMemoryAllocator allocator);
}

/// <summary>
/// The identity serde: the stored bytes are the raw chunk (<c>KV_2LTD</c> in the KV dtype, little-endian), shape,
/// dtype and format travelling in the connector's metadata. Zero copies: both directions hand out the same object.
/// </summary>
public sealed class NaiveSerde : IKvSerde
{
    /// <summary>Creates a naive serde registered under <paramref name="name"/> (<c>naive</c>, or <c>kivi</c> as in the original).</summary>
    public NaiveSerde(string name = "naive") => Name = name;

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public MemoryObject? Serialize(MemoryObject chunk, IMemoryAllocator allocator) => chunk.AddRef();

    /// <inheritdoc />
    public MemoryObject? Deserialize(MemoryObject stored, IMemoryAllocator allocator) =>
        stored.Metadata.Format is MemoryFormat.Binary or MemoryFormat.BinaryBuffer or MemoryFormat.Undefined ? null : stored.AddRef();
}

/// <summary>Serializers by name. <c>naive</c> and <c>kivi</c> are built in; other packages register theirs.</summary>
public sealed class SerdeRegistry
{
    private readonly Dictionary<string, Func<Configuration.LMCacheEngineOptions, IKvSerde>> _factories = new(StringComparer.Ordinal)
    {
        ["naive"] = _ => new NaiveSerde("naive"),
        ["kivi"] = _ => new NaiveSerde("kivi"),
    };

    /// <summary>Registers (or replaces) a serde factory.</summary>
    public SerdeRegistry Register(string name, Func<Configuration.LMCacheEngineOptions, IKvSerde> factory)
    {
        _factories[name] = factory;
        return this;
    }

    /// <summary>The registered names.</summary>
    public IReadOnlyCollection<string> Names => _factories.Keys;

    /// <summary>Creates the serde named <paramref name="name"/>; an unknown name is a configuration error.</summary>
    public IKvSerde Create(string name, Configuration.LMCacheEngineOptions options) =>
        _factories.TryGetValue(name, out var factory)
            ? factory(options)
            : throw new Diagnostics.LMCacheConfigurationException(
                $"remote_serde = '{name}': no such serializer is available; available: {string.Join(", ", _factories.Keys.Order(StringComparer.Ordinal))}.");
}
