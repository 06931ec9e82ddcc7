using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace LMCache.Serving.Tests;

/// <summary>Runs alone (no other test allocating in this process meanwhile), so the working set is this test's.</summary>
[CollectionDefinition(nameof(MemoryBoundCollection), DisableParallelization = true)]
public sealed class MemoryBoundCollection;

/// <summary>
/// Issue #18 problem 3: every rejected 10 MiB prompt used to leave 0.3–0.5 GB resident for good. A rejected prompt
/// must cost about its own size, briefly.
/// </summary>
[Collection(nameof(MemoryBoundCollection))]
public sealed class MemoryBoundTests : IClassFixture<ServerFixture>
{
    private const int PromptBytes = 10 << 20;

    private readonly ServerFixture _fixture;

    public MemoryBoundTests(ServerFixture fixture) => _fixture = fixture;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Twenty_rejected_ten_mi_b_prompts_leave_the_working_set_within300_MB_of_the_start()
    {
        // One request body buffer for the whole test, so the client side allocates nothing per request.
        var body = new byte[PromptBytes + 1024];
        await PostAsync("v1/chat/completions", body, Build(body, chat: true, 0, 16));   // warm the code paths
        var start = await SettledWorkingSetAsync();
        var peak = start;
        for (var i = 1; i <= 20; i++)
        {
            var chat = i % 2 == 0;
            await PostAsync(chat ? "v1/chat/completions" : "v1/completions", body, Build(body, chat, i, PromptBytes));
            using var process = Process.GetCurrentProcess();
            peak = Math.Max(peak, process.WorkingSet64);
        }
        var end = await SettledWorkingSetAsync();
        var grownMb = (end - start) / 1e6;
        var report = $"working set: start {start / 1e6:0} MB, peak after a request {peak / 1e6:0} MB, end {end / 1e6:0} MB (+{grownMb:0} MB)";
        TestContext.Current.TestOutputHelper?.WriteLine(report);
        Assert.True(grownMb < 300, $"the working set grew by {grownMb:0} MB over 20 rejected 10 MiB prompts; {report}");
    }

    private async Task PostAsync(string path, byte[] body, int length)
    {
        using var content = new ByteArrayContent(body, 0, length);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var response = await _fixture.Http.PostAsync(path, content, Ct);
        var text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{path}: expected 400, got {(int)response.StatusCode}: {text}");
        using var error = JsonDocument.Parse(text);
        Assert.Contains("maximum context length", error.RootElement.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    /// <summary>Writes a request whose prompt is <paramref name="promptBytes"/> of random ASCII words (a new text per seed) into <paramref name="body"/>.</summary>
    private static int Build(byte[] body, bool chat, int seed, int promptBytes)
    {
        var maxTokens = promptBytes == PromptBytes ? 8 : 100_000;   // small prompts are rejected for their max_tokens
        var head = Encoding.ASCII.GetBytes(chat
            ? "{\"max_tokens\": " + maxTokens + ", \"messages\": [{\"role\": \"user\", \"content\": \""
            : "{\"max_tokens\": " + maxTokens + ", \"prompt\": \"");
        var tail = Encoding.ASCII.GetBytes(chat ? "\"}]}" : "\"}");
        head.CopyTo(body, 0);
        var position = head.Length;
        var random = new Random(seed);
        var end = head.Length + promptBytes;
        while (position < end)
        {
            var word = random.Next(2, 10);
            for (var i = 0; i < word && position < end; i++)
            {
                body[position++] = (byte)('a' + random.Next(26));
            }
            if (position < end)
            {
                body[position++] = (byte)' ';
            }
        }
        tail.CopyTo(body, position);
        return position + tail.Length;
    }

    /// <summary>The working set after an ordinary full collection and a short settle (what a server left idle shows).</summary>
    private static async Task<long> SettledWorkingSetAsync()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        await Task.Delay(TimeSpan.FromSeconds(2), Ct);
        using var process = Process.GetCurrentProcess();
        var heap = GC.GetGCMemoryInfo();
        TestContext.Current.SendDiagnosticMessage($"working set {process.WorkingSet64 / 1e6:0} MB, GC heap {heap.HeapSizeBytes / 1e6:0} MB, GC committed {heap.TotalCommittedBytes / 1e6:0} MB");
        return process.WorkingSet64;
    }
}
