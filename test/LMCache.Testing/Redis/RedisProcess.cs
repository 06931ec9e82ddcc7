using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace LMCache.Testing.Redis;

/// <summary>
/// One real <c>redis-server</c> (or <c>redis-sentinel</c>) process on a loopback port, started and ended by the test.
/// It can be killed (SIGKILL), paused (SIGSTOP), resumed (SIGCONT) and restarted on the same port with the same
/// arguments. Every process still alive when the test host exits is killed.
/// </summary>
public sealed class RedisProcess : IAsyncDisposable
{
    private static readonly ConcurrentDictionary<RedisProcess, byte> s_live = new();
    private readonly string _executable;
    private readonly IReadOnlyList<string> _arguments;
    private Process? _process;
    private bool _paused;

    static RedisProcess()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var process in s_live.Keys)
            {
                process.Kill();
            }
        };
    }

    private RedisProcess(string executable, IReadOnlyList<string> arguments, int port, string folder, string? password)
    {
        _executable = executable;
        _arguments = arguments;
        Port = port;
        Folder = folder;
        Password = password;
    }

    /// <summary>The TCP port on 127.0.0.1.</summary>
    public int Port { get; }

    /// <summary>The process's working folder (data, logs, config).</summary>
    public string Folder { get; }

    /// <summary>The password clients need (<c>requirepass</c>), or null.</summary>
    public string? Password { get; }

    /// <summary>The endpoint text <c>127.0.0.1:port</c>.</summary>
    public string HostPort => $"127.0.0.1:{Port}";

    /// <summary>The OS process id while running.</summary>
    public int? ProcessId => _process is { HasExited: false } p ? p.Id : null;

    /// <summary>True when redis-server, redis-sentinel and redis-cli are installed.</summary>
    public static bool IsInstalled => Find("redis-server") is not null && Find("redis-cli") is not null;

    /// <summary>Why Redis tests cannot run here, or null when they can.</summary>
    public static string? MissingReason => IsInstalled
        ? null
        : "redis-server/redis-cli are not installed (apt-get install -y redis-server redis-sentinel redis-tools; scripts/test.sh does it)";

    /// <summary>Finds an executable on PATH (or /usr/bin, /usr/sbin).</summary>
    public static string? Find(string name)
    {
        var path = Environment.GetEnvironmentVariable("PATH") ?? "";
        foreach (var folder in path.Split(':', StringSplitOptions.RemoveEmptyEntries).Append("/usr/bin").Append("/usr/sbin"))
        {
            var candidate = System.IO.Path.Combine(folder, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    /// <summary>
    /// A free loopback port whose cluster bus port (port + 10000) is free too, both below the kernel's ephemeral range:
    /// a port inside it can be taken by any outgoing connection between this check and the server's bind.
    /// </summary>
    public static int FreePort()
    {
        var high = Math.Clamp(EphemeralRangeStart() - 10000, 20000 + 1000, 55000);
        for (var attempt = 0; attempt < 200; attempt++)
        {
            var port = Random.Shared.Next(20000, high);
            if (IsFree(port) && IsFree(port + 10000))
            {
                return port;
            }
        }
        throw new InvalidOperationException("no free loopback port found");
    }

    /// <summary>
    /// Starts <c>redis-server</c> on a free port with persistence off, plus <paramref name="extraArguments"/> (config
    /// directives as <c>--name value</c>; <c>{dir}</c> stands for the process folder), and waits until it answers.
    /// </summary>
    public static Task<RedisProcess> StartServerAsync(
        IEnumerable<string>? extraArguments = null, string? password = null, int? port = null, CancellationToken cancellationToken = default) =>
        StartOnFreePortAsync(port, chosen =>
        {
            var folder = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"lmcache-redis-{chosen}-{Guid.NewGuid():N}");
            Directory.CreateDirectory(folder);
            var arguments = new List<string>
            {
                "--port", chosen.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--protected-mode", "no",
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", folder, "--logfile", System.IO.Path.Combine(folder, "redis.log"),
            };
            if (password is not null)
            {
                arguments.AddRange(["--requirepass", password, "--masterauth", password]);
            }
            arguments.AddRange((extraArguments ?? []).Select(a => a.Replace("{dir}", folder, StringComparison.Ordinal)));
            return new RedisProcess(Find("redis-server") ?? throw new InvalidOperationException(MissingReason), arguments, chosen, folder, password);
        }, cancellationToken);

    /// <summary>
    /// Starts <c>redis-server CONFIG --sentinel</c> with <paramref name="configText"/> written to the process folder, on
    /// <paramref name="port"/> or a free one.
    /// </summary>
    public static Task<RedisProcess> StartSentinelAsync(int? port, string configText, CancellationToken cancellationToken = default) =>
        StartOnFreePortAsync(port, chosen =>
        {
            var folder = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"lmcache-sentinel-{chosen}-{Guid.NewGuid():N}");
            Directory.CreateDirectory(folder);
            var config = System.IO.Path.Combine(folder, "sentinel.conf");
            File.WriteAllText(config,
                $"port {chosen}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {folder}\nlogfile {System.IO.Path.Combine(folder, "sentinel.log")}\n" + configText);
            return new RedisProcess(Find("redis-server") ?? throw new InvalidOperationException(MissingReason), [config, "--sentinel"], chosen, folder, null);
        }, cancellationToken);

    /// <summary>
    /// Creates and starts a process on <paramref name="port"/>, or on a free port; a start that loses its free port to
    /// another process before binding it is retried on another one.
    /// </summary>
    private static async Task<RedisProcess> StartOnFreePortAsync(int? port, Func<int, RedisProcess> create, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            var process = create(port ?? FreePort());
            try
            {
                await process.StartAsync(cancellationToken).ConfigureAwait(false);
                return process;
            }
            catch (InvalidOperationException ex) when (port is null && attempt < 5 && ex.Message.Contains("Address already in use", StringComparison.Ordinal))
            {
                await process.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private static int EphemeralRangeStart()
    {
        try
        {
            var fields = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            return fields.Length > 0 && int.TryParse(fields[0], System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var start)
                ? start
                : 32768;
        }
        catch (IOException)
        {
            return 32768;
        }
        catch (UnauthorizedAccessException)
        {
            return 32768;
        }
    }

    /// <summary>(Re)starts the process with its original arguments and waits until it answers PING.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (_process is { HasExited: false })
        {
            return;
        }
        var info = new ProcessStartInfo(_executable)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = Folder,
        };
        foreach (var argument in _arguments)
        {
            info.ArgumentList.Add(argument);
        }
        _process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {_executable}");
        _process.OutputDataReceived += static (_, _) => { };
        _process.ErrorDataReceived += static (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        _paused = false;
        s_live[this] = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"{System.IO.Path.GetFileName(_executable)} on port {Port} exited with {_process.ExitCode}: {ReadLog()}");
            }
            if (await IsAnsweringAsync(cancellationToken).ConfigureAwait(false))
            {
                return;
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"redis on port {Port} did not answer within 30 s: {ReadLog()}");
            }
            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Kills the process with SIGKILL (no shutdown, no save) and waits for it to exit.</summary>
    public void Kill()
    {
        var process = _process;
        if (process is null)
        {
            return;
        }
        try
        {
            if (!process.HasExited)
            {
                process.Kill();
                process.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
        process.Dispose();
        _process = null;
        _paused = false;
        s_live.TryRemove(this, out _);
    }

    /// <summary>Freezes the process with SIGSTOP: its sockets stay open but nothing answers.</summary>
    public Task PauseAsync() => SignalAsync("STOP", paused: true);

    /// <summary>Resumes a paused process with SIGCONT.</summary>
    public Task ResumeAsync() => SignalAsync("CONT", paused: false);

    /// <summary>Runs <c>redis-cli -p PORT ARGS...</c> against this process and returns its output (raw replies, one per line).</summary>
    public Task<string> CliAsync(params string[] arguments) => RunCliAsync(Port, Password, arguments);

    /// <summary>Runs <c>redis-cli</c> against <paramref name="port"/> and returns stdout; throws on a non-zero exit.</summary>
    public static async Task<string> RunCliAsync(int port, string? password, IEnumerable<string> arguments, CancellationToken cancellationToken = default)
    {
        var info = new ProcessStartInfo(Find("redis-cli") ?? throw new InvalidOperationException(MissingReason))
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        info.ArgumentList.Add("-h");
        info.ArgumentList.Add("127.0.0.1");
        info.ArgumentList.Add("-p");
        info.ArgumentList.Add(port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (password is not null)
        {
            info.ArgumentList.Add("--no-auth-warning");
            info.ArgumentList.Add("-a");
            info.ArgumentList.Add(password);
        }
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }
        using var process = Process.Start(info) ?? throw new InvalidOperationException("could not start redis-cli");
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            throw;
        }
        var output = await stdout.ConfigureAwait(false);
        return process.ExitCode == 0
            ? output
            : throw new InvalidOperationException($"redis-cli -p {port} {string.Join(' ', arguments)} failed ({process.ExitCode}): {await stderr.ConfigureAwait(false)}{output}");
    }

    /// <summary>The tail of the process log (for failure messages).</summary>
    public string ReadLog()
    {
        foreach (var name in new[] { "redis.log", "sentinel.log" })
        {
            var path = System.IO.Path.Combine(Folder, name);
            if (File.Exists(path))
            {
                var text = File.ReadAllText(path);
                return text.Length > 3000 ? text[^3000..] : text;
            }
        }
        return "(no log)";
    }

    /// <summary>Ends the process (resuming it first if paused) and deletes its folder.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_paused)
        {
            await ResumeAsync().ConfigureAwait(false);
        }
        Kill();
        try
        {
            Directory.Delete(Folder, recursive: true);
        }
        catch (IOException)
        {
            // Best effort.
        }
    }

    private Task SignalAsync(string signal, bool paused)
    {
        var pid = ProcessId ?? throw new InvalidOperationException($"redis on port {Port} is not running");
        // Linux signal numbers (x86-64 and aarch64): SIGSTOP 19, SIGCONT 18.
        var number = signal == "STOP" ? 19 : 18;
        if (NativeMethods.Kill(pid, number) != 0)
        {
            throw new InvalidOperationException($"kill -{signal} {pid} failed (errno {Marshal.GetLastPInvokeError()})");
        }
        _paused = paused;
        return Task.CompletedTask;
    }

    private async Task<bool> IsAnsweringAsync(CancellationToken cancellationToken)
    {
        try
        {
            using var client = new TcpClient();
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(2));
            await client.ConnectAsync(IPAddress.Loopback, Port, timeout.Token).ConfigureAwait(false);
            var stream = client.GetStream();
            // An inline PING; any reply line (+PONG, or -NOAUTH on a password-protected server) means it serves.
            await stream.WriteAsync("PING\r\n"u8.ToArray(), timeout.Token).ConfigureAwait(false);
            var buffer = new byte[64];
            var read = await stream.ReadAsync(buffer, timeout.Token).ConfigureAwait(false);
            return read > 0 && (buffer[0] == (byte)'+' || buffer[0] == (byte)'-') && !buffer.AsSpan(0, read).StartsWith("-LOADING"u8);
        }
        catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    private static bool IsFree(int port)
    {
        if (port >= 65536)
        {
            return false;
        }
        try
        {
            using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, port));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}

internal static class NativeMethods
{
    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    internal static extern int Kill(int pid, int signal);
}
