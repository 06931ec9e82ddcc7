namespace LMCache.Serde.CacheGen;

/// <summary>
/// Where the bytes of one cachegen blob go (for benchmarks and diagnostics); see <see cref="CacheGenBlobInfo.TryRead"/>.
/// </summary>
/// <param name="Version">Container version (1 or 2).</param>
/// <param name="Raw">The chunk is stored losslessly (no coding).</param>
/// <param name="SharedTable">The blob names a shared table instead of carrying its own CDFs or counts.</param>
/// <param name="Layers">Layers of the chunk.</param>
/// <param name="Tokens">Tokens of the chunk.</param>
/// <param name="Hidden">Channels per layer.</param>
/// <param name="TotalBytes">The whole blob, in bytes.</param>
/// <param name="StreamBytes">The arithmetic-coded symbol streams, in bytes (0 when raw).</param>
/// <param name="SideBytes">Scales, CDFs or counts, and stream lengths, in bytes (0 when raw); the rest is header and checksum.</param>
/// <param name="TableId">The shared table the blob names (<see cref="CacheGenTable.Id"/>); 0 when it carries its own.</param>
public sealed record CacheGenBlobInfo(byte Version, bool Raw, bool SharedTable, int Layers, int Tokens, int Hidden, long TotalBytes, long StreamBytes, long SideBytes, UInt128 TableId)
{
    /// <summary>Validates <paramref name="blob"/> completely and describes it; null when it is not a valid blob.</summary>
    public static CacheGenBlobInfo? TryRead(ReadOnlySpan<byte> blob)
    {
        if (!CacheGenContainer.TryParse(blob, out var parsed, out _) || parsed is null)
        {
            return null;
        }
        using (parsed)
        {
            var raw = parsed.Mode == CacheGenMode.Raw;
            long streams = 0;
            if (!raw)
            {
                var count = parsed.DataChunks * 2 * parsed.Layers * parsed.Hidden;
                for (var i = 0; i < count; i++)
                {
                    streams += parsed.StreamLengths[i];
                }
            }
            var fixedBytes = CacheGenContainer.FixedHeaderSize + (2L * parsed.Layers) + CacheGenContainer.ChecksumSize
                + (parsed.Mode == CacheGenMode.SharedTable ? CacheGenContainer.TableIdSize : 0);
            return new CacheGenBlobInfo(parsed.Version, raw, parsed.Mode == CacheGenMode.SharedTable, parsed.Layers, parsed.Tokens, parsed.Hidden,
                blob.Length, streams, raw ? 0 : blob.Length - fixedBytes - streams, parsed.TableId);
        }
    }
}
