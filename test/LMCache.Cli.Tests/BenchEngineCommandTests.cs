using System.Text.Json;
using LMCache.Inference.Models.Safetensors;
using LMCache.Testing;

namespace LMCache.Cli.Tests;

[IntegrationTest]
public sealed class BenchEngineCommandTests
{
    [Fact]
    public async Task Bench_engine_measures_the_model_beside_its_same_run_baselines()
    {
        var result = await CliRunner.RunJsonAsync(
            "bench", "engine", "--model", RepositoryFixtures.TinyLlama, "--compare-onnx", "--prefill-tokens", "64,128,99999", "--decode-prompt", "32", "--decode-tokens", "8", "--json");
        var output = result.GetRawText();
        foreach (var field in new[]
                 {
                     "read_s", "load_s", "rss_after_load_bytes", "hwm_after_runs_bytes", "weights_compute_bytes", "weights_read_per_token_bytes",
                     "prefill_64_tokens_per_s", "prefill_128_tokens_per_s", "prefill_128_gflops", "decode_tokens_per_s",
                     "memcpy_1_thread_gbps", "memcpy_all_cores_gbps", "gemm_gflops",
                     "onnx_prefill_128_tokens_per_s", "onnx_decode_tokens_per_s", "built_vs_onnx_prefill_128", "built_vs_onnx_decode",
                 })
        {
            Assert.True(result.GetProperty(field).GetDouble() > 0, $"{field} is not positive: {output}");
        }
        // --compare-onnx: the built graph (from safetensors) is what the main fields measure, the export beside it.
        Assert.Equal("built", result.GetProperty("graph_source").GetString());
        AssertRatio(result.GetProperty("prefill_128_tokens_per_s").GetDouble() / result.GetProperty("onnx_prefill_128_tokens_per_s").GetDouble(),
            result.GetProperty("built_vs_onnx_prefill_128").GetDouble());
        // 99,999 tokens do not fit tiny-llama's 8,192 positions: skipped, and the cap is reported.
        Assert.False(result.TryGetProperty("prefill_99999_tokens_per_s", out _), output);
        Assert.Equal(8192, result.GetProperty("prefill_capped_by_context").GetInt32());
        // tiny-llama: 1,262,720 float32 parameters in its safetensors, untied LM head.
        Assert.Equal(1_262_720, result.GetProperty("parameters").GetInt64());
        Assert.Equal(4 * 1_262_720, result.GetProperty("weights_compute_bytes").GetInt64());
        // The ratios are the measured values over their bounds, as printed (within the 6-decimal rounding of the JSON).
        var bound = result.GetProperty("memcpy_all_cores_gbps").GetDouble() * 1e9 / result.GetProperty("weights_read_per_token_bytes").GetDouble();
        AssertRatio(result.GetProperty("decode_tokens_per_s").GetDouble() / bound, result.GetProperty("decode_vs_memcpy_bound").GetDouble());
        AssertRatio(result.GetProperty("load_s").GetDouble() / result.GetProperty("read_s").GetDouble(), result.GetProperty("load_vs_read").GetDouble());
        foreach (var target in result.EnumerateObject().Where(p => p.Name.StartsWith("target_", StringComparison.Ordinal)))
        {
            Assert.Contains(target.Value.GetString(), new[] { "met", "missed" });
        }
        Assert.Contains("Avx", result.GetProperty("cpu_features").GetString(), StringComparison.Ordinal);
    }

    private static void AssertRatio(double expected, double actual) =>
        Assert.True(Math.Abs(actual - expected) <= 0.01 * Math.Abs(expected) + 1e-6, $"printed {actual}, computed {expected}");

    [Fact]
    public async Task Bench_make_model_writes_a_sharded_random_folder_with_the_shape_s_config()
    {
        using var folder = new TempFolder();
        var output = Path.Combine(folder.Path, "demo-shape");
        var (exitCode, text, error) = await CliRunner.RunAsync("bench", "make-model", "--shape", "demo", "--out", output, "--shard-mb", "40");
        Assert.True(exitCode == 0, $"{text}\n{error}");

        using var index = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(output, SafetensorsWriter.IndexFileName), TestContext.Current.CancellationToken));
        var files = index.RootElement.GetProperty("weight_map").EnumerateObject().Select(p => p.Value.GetString()).Distinct().Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(3, files.Length);   // 91 MB of bf16 in shards of at most 40 MB
        Assert.All(files, f => Assert.True(File.Exists(Path.Combine(output, f!))));
        using var config = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(output, "config.json"), TestContext.Current.CancellationToken));
        Assert.Equal(1024, config.RootElement.GetProperty("hidden_size").GetInt32());
        Assert.Equal("bfloat16", config.RootElement.GetProperty("torch_dtype").GetString());

        // A second run into the same folder refuses instead of mixing two models.
        var (again, _, againError) = await CliRunner.RunAsync("bench", "make-model", "--shape", "demo", "--out", output);
        Assert.Equal(2, again);
        Assert.Contains("already holds a model", againError, StringComparison.Ordinal);
    }
}
