using LMCache.Core.Memory;
using LMCache.Storage.Remote;
using LMCache.Testing;

namespace LMCache.Storage.Tests;

/// <summary>The typed keyspace description the keys tools print: how a listing is counted, and what an entry says about itself.</summary>
public sealed class RemoteKeyspaceTests
{
    private static RemoteEntry Valid(int index, string model, ulong? checksum) => new()
    {
        Key = TestChunks.Key(index, model).ToString(),
        State = RemoteEntryState.Valid,
        PayloadBytes = TestChunks.SmallChunk().ByteLength,
        Layout = TestChunks.SmallChunk(),
        Checksum = checksum,
    };

    [Fact]
    public void Statistics_count_valid_entries_by_checksum_and_everything_else_as_invalid_per_model()
    {
        var bytes = TestChunks.SmallChunk().ByteLength;
        RemoteEntry[] entries =
        [
            Valid(0, "org/a", 0x1234),
            Valid(1, "org/a", null),
            Valid(0, "org/b", 0x99),
            new() { Key = TestChunks.Key(2, "org/a").ToString(), State = RemoteEntryState.PayloadWithoutMetadata, PayloadBytes = bytes },
            new() { Key = TestChunks.Key(3, "org/b").ToString(), State = RemoteEntryState.MetadataWithoutPayload },
            new() { Key = "session:42", State = RemoteEntryState.InvalidMetadata, PayloadBytes = 10 },
        ];

        var stats = RemoteKeyspaceStatistics.From(entries);

        Assert.Equal(6, stats.Entries);
        Assert.Equal((4 * bytes) + 10, stats.PayloadBytes);
        Assert.Equal(3, stats.Invalid);
        Assert.Equal(2, stats.WithChecksum);
        Assert.Equal(1, stats.OriginalLayout);
        Assert.Equal([RemoteKeyspaceStatistics.NotAnLMCacheKey, "org/a", "org/b"], stats.Models.Select(m => m.ModelName));
        var a = stats.Models.Single(m => m.ModelName == "org/a");
        Assert.Equal((3, 3 * bytes, 1), (a.Entries, a.PayloadBytes, a.Invalid));
        var b = stats.Models.Single(m => m.ModelName == "org/b");
        Assert.Equal((2, bytes, 1), (b.Entries, b.PayloadBytes, b.Invalid));
        Assert.Equal((1, 10L, 1), (stats.Models[0].Entries, stats.Models[0].PayloadBytes, stats.Models[0].Invalid));
    }

    [Fact]
    public void An_entry_knows_its_model_validity_and_checksum_and_a_header_prints_known_codes_by_name()
    {
        var entry = Valid(5, "meta-llama/Llama-3.1-8B", 7);
        Assert.Equal("meta-llama/Llama-3.1-8B", entry.ModelName);
        Assert.True(entry.IsValid);
        Assert.True(entry.HasChecksum);
        Assert.Null(new RemoteEntry { Key = "not-a-key", State = RemoteEntryState.NotFound }.ModelName);
        Assert.False((entry with { State = RemoteEntryState.ChecksumMismatch }).IsValid);

        var shape = TestChunks.SmallChunk().Shape;
        var known = new RemoteEntryHeader(1024, (int)MemoryFormat.KV2LTD, KvDType.BFloat16.ToWireCode(), shape);
        Assert.Equal($"length 1024, KV2LTD, BFloat16, shape {shape}", known.ToString());
        Assert.Equal($"length 8, format 99, dtype code 77, shape {shape}", new RemoteEntryHeader(8, 99, 77, shape).ToString());
    }
}
