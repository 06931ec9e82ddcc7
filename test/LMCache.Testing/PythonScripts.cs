using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace LMCache.Testing;

/// <summary>
/// Runs the standard-library Python scripts of <c>test/python</c> (independent clients and a stand-in for the
/// original's <c>lmcache_server</c>, written from the documented byte layouts). Tests skip when <c>python3</c> is
/// missing (<c>scripts/test.sh</c> installs it).
/// </summary>
public static class PythonScripts
{
    /// <summary>Why Python tests cannot run here, or null when <c>python3</c> is on the PATH.</summary>
    public static string? MissingReason => Python is null ? "python3 is not installed; scripts/test.sh installs it (apt-get install python3)." : null;

    private static string? Python { get; } = FindPython();

    /// <summary>
    /// Runs <c>test/python/<paramref name="script"/></c> with <paramref name="arguments"/> and <paramref name="stdin"/>,
    /// and returns stdout and stderr; a non-zero exit fails the test with that output.
    /// </summary>
    public static async Task<string> RunAsync(string script, IEnumerable<string> arguments, string? stdin = null, CancellationToken cancellationToken = default)
    {
        var start = new ProcessStartInfo(RequirePython(), [RepositoryFixtures.File("test", "python", script), .. arguments])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        KeepCheckoutClean(start);
        using var process = Process.Start(start)!;
        try
        {
            await process.StandardInput.WriteAsync(stdin ?? string.Empty);
            process.StandardInput.Close();
            var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
            var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromMinutes(3));
            await process.WaitForExitAsync(timeout.Token);
            var output = await stdout + await stderr;
            if (process.ExitCode != 0)
            {
                throw new InvalidOperationException($"python3 {script} failed ({process.ExitCode}):\n{output}");
            }
            return output;
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
    }

    /// <summary>The scripts run from the checkout: no <c>__pycache__</c> folders left next to them.</summary>
    internal static void KeepCheckoutClean(ProcessStartInfo start) => start.Environment["PYTHONDONTWRITEBYTECODE"] = "1";

    internal static string RequirePython() =>
        Python ?? throw new InvalidOperationException(MissingReason);

    private static string? FindPython()
    {
        foreach (var directory in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
        {
            var candidate = Path.Combine(directory, "python3");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }
}

/// <summary>
/// <c>test/python/original_server.py</c> in a child process on 127.0.0.1 and a free port: a stand-in for the original
/// LMCache's <c>lmcache_server</c> that parses the key of every request like the original (closing the connection on
/// a key it cannot parse, an empty one included) and indexes entries by the parsed key.
/// </summary>
public sealed class OriginalServerStandIn : IAsyncDisposable
{
    private readonly Process _process;
    private readonly Task<string> _stderr;

    private OriginalServerStandIn(Process process, int port, Task<string> stderr)
    {
        _process = process;
        Port = port;
        _stderr = stderr;
    }

    /// <summary>The port it listens on.</summary>
    public int Port { get; }

    /// <summary><c>lm://127.0.0.1:PORT</c>.</summary>
    public string Url => string.Create(CultureInfo.InvariantCulture, $"lm://127.0.0.1:{Port}");

    /// <summary>Starts the stand-in; <paramref name="era"/> is <c>2025</c> (the keys we write) or <c>2026</c> (newest).</summary>
    /// <param name="era">The key era whose <c>from_string</c> it applies.</param>
    /// <param name="refuseHealth">Also close the connection on every HEALTH (a server that takes no HEALTH of ours).</param>
    /// <param name="cancellationToken">Cancels waiting for it to listen.</param>
    public static async Task<OriginalServerStandIn> StartAsync(string era = "2025", bool refuseHealth = false, CancellationToken cancellationToken = default)
    {
        List<string> arguments = [RepositoryFixtures.File("test", "python", "original_server.py"), "127.0.0.1", "0", "--era", era];
        if (refuseHealth)
        {
            arguments.Add("--refuse-health");
        }
        var start = new ProcessStartInfo(PythonScripts.RequirePython(), arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        PythonScripts.KeepCheckoutClean(start);
        var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        var line = await process.StandardOutput.ReadLineAsync(timeout.Token);
        if (line is null || !line.StartsWith("listening ", StringComparison.Ordinal))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"original_server.py did not start: {line}\n{await stderr}");
        }
        return new OriginalServerStandIn(process, int.Parse(line["listening ".Length..], CultureInfo.InvariantCulture), stderr);
    }

    /// <summary>
    /// Stops it (closes its stdin) and returns its statistics: <c>put</c>, <c>get</c>, <c>hit</c>, <c>exist</c>,
    /// <c>health</c>, <c>list</c> counts, <c>closed</c> (why each connection it closed was closed) and <c>keys</c> (the key
    /// text of every PUT).
    /// </summary>
    public async Task<JsonElement> StopAsync(CancellationToken cancellationToken = default)
    {
        _process.StandardInput.Close();
        var line = await _process.StandardOutput.ReadLineAsync(cancellationToken);
        await _process.WaitForExitAsync(cancellationToken);
        return line is null
            ? throw new InvalidOperationException($"original_server.py printed no statistics:\n{await _stderr}")
            : JsonDocument.Parse(line).RootElement.Clone();
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }
        _process.Dispose();
        return ValueTask.CompletedTask;
    }
}
