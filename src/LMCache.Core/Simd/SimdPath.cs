using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace LMCache.Core.Simd;

/// <summary>
/// The vector instruction sets the hot loops (cachegen's coder, the chunk-hash token encoder) have a path for, from the
/// narrowest to the widest. Every path produces the same bytes; a wider one is only faster.
/// </summary>
public enum SimdPath
{
    /// <summary>No vector instructions: the portable scalar code every CPU runs.</summary>
    Scalar = 0,

    /// <summary>.NET's cross-platform 128-bit vectors (SSE4 on x86-64, NEON through AdvSimd on Arm64).</summary>
    Vector128 = 1,

    /// <summary>x86-64 AVX2 (eight 32-bit lanes, gathers, variable shifts).</summary>
    Avx2 = 2,

    /// <summary>x86-64 AVX-512 (F, CD, BW, DQ; the token encoder also needs VBMI2 and uses its AVX2 code without it).</summary>
    Avx512 = 3,
}

/// <summary>
/// Chooses the <see cref="SimdPath"/> at run time: the widest this CPU has, or a narrower one named by
/// <see cref="Variable"/> (so a wide machine, CI's included, can run and test every narrower path).
/// </summary>
public static class SimdPaths
{
    /// <summary>
    /// <c>LMCACHE_SIMD</c>: <c>avx512</c>, <c>avx2</c>, <c>vector128</c> or <c>scalar</c> (case-insensitive). Caps the path
    /// of cachegen and of chunk hashing; a path wider than the CPU has falls back to the widest it has. Unset or empty:
    /// the widest.
    /// </summary>
    public const string Variable = "LMCACHE_SIMD";

    private static readonly Lazy<SimdPath> s_current = new(() => Resolve(Environment.GetEnvironmentVariable(Variable)));

    /// <summary>The widest path this CPU supports.</summary>
    public static SimdPath Widest { get; } =
        IsSupported(SimdPath.Avx512) ? SimdPath.Avx512
        : IsSupported(SimdPath.Avx2) ? SimdPath.Avx2
        : IsSupported(SimdPath.Vector128) ? SimdPath.Vector128
        : SimdPath.Scalar;

    /// <summary>The path this process uses: <see cref="Widest"/>, capped by <see cref="Variable"/> (read once).</summary>
    public static SimdPath Current => s_current.Value;

    /// <summary>Every path, narrowest first.</summary>
    public static IReadOnlyList<SimdPath> All { get; } = [SimdPath.Scalar, SimdPath.Vector128, SimdPath.Avx2, SimdPath.Avx512];

    /// <summary>Whether this CPU (and runtime) can run <paramref name="path"/>.</summary>
    public static bool IsSupported(SimdPath path) => path switch
    {
        SimdPath.Scalar => true,
        SimdPath.Vector128 => Vector128.IsHardwareAccelerated,
        SimdPath.Avx2 => Avx2.IsSupported,
        // What every AVX-512 server has (Skylake-SP on); a loop that needs more (VBMI2) checks it and otherwise runs its
        // AVX2 code.
        SimdPath.Avx512 => Avx512F.IsSupported && Avx512CD.IsSupported && Avx512BW.IsSupported && Avx512DQ.IsSupported
            && Avx2.IsSupported,
        _ => false,
    };

    /// <summary>The lowercase name used by <see cref="Variable"/>.</summary>
    public static string Name(SimdPath path) => path switch
    {
        SimdPath.Scalar => "scalar",
        SimdPath.Vector128 => "vector128",
        SimdPath.Avx2 => "avx2",
        SimdPath.Avx512 => "avx512",
        _ => throw new ArgumentOutOfRangeException(nameof(path), path, null),
    };

    /// <summary>Parses a <see cref="Variable"/> value; false for anything but the four names (surrounding blanks allowed).</summary>
    public static bool TryParse(string? text, out SimdPath path)
    {
        foreach (var candidate in All)
        {
            if (string.Equals(text?.Trim(), Name(candidate), StringComparison.OrdinalIgnoreCase))
            {
                path = candidate;
                return true;
            }
        }
        path = SimdPath.Scalar;
        return false;
    }

    /// <summary>
    /// The path for a <see cref="Variable"/> value: <see cref="Widest"/> when unset or empty, else the named path capped at
    /// <see cref="Widest"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The value is not one of the four names.</exception>
    public static SimdPath Resolve(string? value)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            return Widest;
        }
        if (!TryParse(value, out var requested))
        {
            throw new ArgumentException($"{Variable} = '{value}': must be one of avx512, avx2, vector128, scalar.", nameof(value));
        }
        return Cap(requested);
    }

    /// <summary><paramref name="path"/>, or the widest supported path below it.</summary>
    public static SimdPath Cap(SimdPath path)
    {
        while (path > SimdPath.Scalar && !IsSupported(path))
        {
            path--;
        }
        return path;
    }

    /// <summary>The vector instruction sets this process can use, as the runtime reports them (for benchmark reports).</summary>
    public static IReadOnlyList<string> CpuFeatures()
    {
        var features = new List<string>();
        void Add(string name, bool supported)
        {
            if (supported)
            {
                features.Add(name);
            }
        }
        Add("Sse42", Sse42.IsSupported);
        Add("Avx", Avx.IsSupported);
        Add("Avx2", Avx2.IsSupported);
        Add("Fma", Fma.IsSupported);
        Add("Bmi2", Bmi2.IsSupported);
        Add("Lzcnt", Lzcnt.IsSupported);
        Add("Avx512F", Avx512F.IsSupported);
        Add("Avx512BW", Avx512BW.IsSupported);
        Add("Avx512CD", Avx512CD.IsSupported);
        Add("Avx512DQ", Avx512DQ.IsSupported);
        Add("Avx512Vbmi2", Avx512Vbmi2.IsSupported);
        Add("AdvSimd", AdvSimd.IsSupported);
        Add("Sha256 (Arm)", System.Runtime.Intrinsics.Arm.Sha256.IsSupported);
        Add("Vector128", Vector128.IsHardwareAccelerated);
        Add("Vector256", Vector256.IsHardwareAccelerated);
        Add("Vector512", Vector512.IsHardwareAccelerated);
        return features;
    }
}
