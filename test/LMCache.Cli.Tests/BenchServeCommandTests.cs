using System.Text.Json;
using LMCache.Testing;

namespace LMCache.Cli.Tests;

[IntegrationTest]
public sealed class BenchServeCommandTests
{
    [Fact]
    public async Task Bench_serve_drives_the_real_server_in_both_modes_and_every_request_gets_its_exact_tokens()
    {
        // A small workload on the tiny fixture model: per client three shared-prefix chats and one document; 1 and 8 clients.
        var result = await CliRunner.RunJsonAsync(
            "bench", "serve", "--model", RepositoryFixtures.TinyLlama, "--clients", "1,8", "--requests-per-client", "4", "--max-tokens", "6",
            "--prefix-tokens", "300", "--question-tokens", "20", "--document-min-tokens", "300", "--document-max-tokens", "500",
            "--decode-tokens", "10", "--long-prompt-tokens", "800", "--short-chats", "3", "--short-chat-tokens", "30", "--json");
        var output = result.GetRawText();

        Assert.Equal("tiny-llama", result.GetProperty("model").GetString());
        Assert.Contains(result.GetProperty("cpu_features").EnumerateArray(), f => f.GetString() == "Vector128");
        var runs = result.GetProperty("runs").EnumerateArray().ToList();
        Assert.Equal(4, runs.Count);   // 2 client counts × 2 modes
        foreach (var run in runs)
        {
            var clients = run.GetProperty("clients").GetInt32();
            Assert.True(run.GetProperty("failed").GetInt32() == 0, output);
            Assert.Equal(clients * 4, run.GetProperty("requests").GetInt32());
            // ignore_eos reached the server through the official client: every request generated exactly max_tokens,
            // and every token arrived as its own streamed event.
            Assert.Equal(clients * 4 * 6, run.GetProperty("output_tokens").GetInt64());
            Assert.Equal(clients * 10, run.GetProperty("decode_output_tokens").GetInt64());
            Assert.True(run.GetProperty("output_tokens_per_s").GetDouble() > 0, output);
            // Three chats of four share the 300-token system prompt: after the first, its whole 256-token chunk is served from the cache.
            Assert.InRange(run.GetProperty("cached_token_share").GetDouble(), 0.05, 0.9);
            var ttft50 = run.GetProperty("ttft_p50_s").GetDouble();
            Assert.InRange(ttft50, 1e-6, 60);
            Assert.True(run.GetProperty("ttft_p95_s").GetDouble() >= ttft50, output);
            Assert.True(run.GetProperty("itl_p95_s").GetDouble() >= run.GetProperty("itl_p50_s").GetDouble(), output);
        }
        Assert.Equal(["batched", "one_at_a_time"], runs.Select(r => r.GetProperty("mode").GetString()).Distinct().Order());

        foreach (var mode in new[] { "batched", "one_at_a_time" })
        {
            var scenario = result.GetProperty("long_prefill").GetProperty(mode);
            Assert.Equal(3, scenario.GetProperty("short_chats").GetInt32());
            Assert.Equal(0, scenario.GetProperty("short_failed").GetInt32());
            Assert.True(scenario.GetProperty("long_prompt_tokens").GetInt32() >= 800, output);
            Assert.True(scenario.GetProperty("short_ttft_p95_s").GetDouble() > 0, output);
        }
        // The ratios against the targets are those of the runs above, and each verdict follows its threshold.
        var targets = result.GetProperty("targets");
        double Run(string mode, int clients, string field) =>
            runs.Single(r => r.GetProperty("mode").GetString() == mode && r.GetProperty("clients").GetInt32() == clients).GetProperty(field).GetDouble();
        var throughput = targets.GetProperty("decode_throughput_8_over_1").GetDouble();
        Assert.Equal(Run("batched", 8, "decode_tokens_per_s") / Run("batched", 1, "decode_tokens_per_s"), throughput, tolerance: throughput * 0.01);
        Assert.Equal(throughput >= 4 ? "met" : "missed", targets.GetProperty("target_decode_throughput_8_over_1_ge_4").GetString());
        var itl = targets.GetProperty("itl_p95_8_over_1").GetDouble();
        Assert.Equal(Run("batched", 8, "itl_p95_s") / Run("batched", 1, "itl_p95_s"), itl, tolerance: itl * 0.01);
        Assert.Equal(itl <= 2 ? "met" : "missed", targets.GetProperty("target_itl_p95_8_over_1_le_2").GetString());
        var shortTtft = targets.GetProperty("short_chat_ttft_p95_during_long_prefill_s").GetDouble();
        Assert.Equal(result.GetProperty("long_prefill").GetProperty("batched").GetProperty("short_ttft_p95_s").GetDouble(), shortTtft);
        Assert.Equal(shortTtft <= 0.5 ? "met" : "missed", targets.GetProperty("target_short_chat_ttft_p95_le_0.5_s").GetString());
    }

    [Fact]
    public async Task Bench_serve_says_not_measured_when_the_client_counts_of_a_target_were_not_run()
    {
        var result = await CliRunner.RunJsonAsync(
            "bench", "serve", "--model", RepositoryFixtures.TinyLlama, "--clients", "2", "--requests-per-client", "1", "--max-tokens", "4",
            "--prefix-tokens", "100", "--question-tokens", "10", "--decode-tokens", "4", "--long-prompt-tokens", "300", "--short-chats", "1",
            "--short-chat-tokens", "20", "--json");
        var targets = result.GetProperty("targets");
        Assert.Equal("not measured", targets.GetProperty("target_decode_throughput_8_over_1_ge_4").GetString());
        Assert.Equal("not measured", targets.GetProperty("target_itl_p95_8_over_1_le_2").GetString());
        Assert.Equal(JsonValueKind.Null, targets.GetProperty("itl_p95_8_over_1").ValueKind);
    }

    [Fact]
    public async Task Bench_serve_refuses_a_workload_that_does_not_fit_the_model_with_a_clear_error()
    {
        var (exitCode, _, error) = await CliRunner.RunAsync("bench", "serve", "--model", RepositoryFixtures.TinyLlama, "--long-prompt-tokens", "9000", "--json");
        Assert.Equal(2, exitCode);
        Assert.Contains("context of 8192 tokens", error, StringComparison.Ordinal);

        (exitCode, _, error) = await CliRunner.RunAsync("bench", "serve", "--model", RepositoryFixtures.TinyLlama, "--clients", "1,zero");
        Assert.Equal(2, exitCode);
        Assert.Contains("--clients", error, StringComparison.Ordinal);
    }
}
