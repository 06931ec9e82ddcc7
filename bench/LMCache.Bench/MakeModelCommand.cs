using System.CommandLine;
using System.Diagnostics;
using LMCache.Inference.Demo;
using LMCache.Inference.Models.Safetensors;

namespace LMCache.Bench;

/// <summary>
/// <c>lmcache bench make-model --shape llama-3.2-1b|demo --out DIR [--dtype bf16|fp32] [--shard-mb N]</c>: writes a
/// Hugging Face folder with deterministic random weights (<see cref="RandomWeightsModel"/>) for <c>bench engine</c>
/// to measure real-size shapes without downloading a model.
/// </summary>
internal static class MakeModelCommand
{
    public static Command Create()
    {
        var shape = new Option<string>("--shape")
        {
            Description = "llama-3.2-1b (exactly Llama-3.2-1B-Instruct's config.json) or demo (the random demo model's sizes).",
            DefaultValueFactory = _ => "llama-3.2-1b",
        };
        shape.AcceptOnlyFromAmong([.. RandomWeightsModel.Shapes]);
        var output = new Option<DirectoryInfo>("--out") { Description = "Destination folder (created; must not already hold a config.json).", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "Weight dtype in the files: bf16, fp16 or fp32.", DefaultValueFactory = _ => "bf16" };
        dtype.AcceptOnlyFromAmong("bf16", "fp16", "fp32");
        var shardMb = new Option<long>("--shard-mb")
        {
            Description = "Largest shard in MB (10^6 bytes of tensor data, as transformers' max_shard_size); one file when everything fits.",
            DefaultValueFactory = _ => 1000,
        };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the weights.", DefaultValueFactory = _ => 2024 };
        var command = new Command("make-model", "Write a Hugging Face folder with random weights (safetensors) for a known shape, for bench engine.")
        {
            shape, output, dtype, shardMb, seed,
        };
        command.SetAction(parse =>
        {
            var folder = parse.GetValue(output)!.FullName;
            var elementType = parse.GetValue(dtype) switch { "fp32" => SafetensorsDType.F32, "fp16" => SafetensorsDType.F16, _ => SafetensorsDType.BF16 };
            if (parse.GetValue(shardMb) <= 0)
            {
                Console.Error.WriteLine("error: --shard-mb must be positive.");
                return 2;
            }
            var (config, generation) = RandomWeightsModel.ShapeFiles(parse.GetValue(shape)!, elementType);
            var watch = Stopwatch.StartNew();
            try
            {
                var result = RandomWeightsModel.Write(folder, config, new RandomWeightsOptions
                {
                    DType = elementType,
                    MaxShardBytes = parse.GetValue(shardMb) * 1_000_000,
                    Seed = parse.GetValue(seed),
                    GenerationConfigJson = generation,
                    Progress = BenchOutput.Progress,
                });
                Console.WriteLine($"wrote {folder}: {result.TotalParameters:N0} parameters, {result.TotalSize / 1e9:0.###} GB in {result.Files.Count} file(s){(result.IndexFile is null ? "" : " + " + result.IndexFile)}, {watch.Elapsed.TotalSeconds:0.#} s");
                return 0;
            }
            catch (IOException ex)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
        });
        return command;
    }
}
