using System.CommandLine;
using LMCache.Core.Diagnostics;
using LMCache.Hosting;
using LMCache.Inference.Models;

namespace LMCache.Cli.Commands;

/// <summary>
/// <c>lmcache serve [MODEL_DIR] [--host 127.0.0.1] [--port 8000] [--config FILE]</c>: the OpenAI-compatible server
/// over the built-in ONNX Runtime engine with LMCache as its KV connector, configured exactly as the original
/// (YAML via <c>LMCACHE_CONFIG_FILE</c> or <c>--config</c>, <c>LMCACHE_*</c> variables). Without MODEL_DIR it serves
/// the built-in demo model (random weights, generated once into a cache folder). The command parses its options and
/// runs an <see cref="LMCacheHost"/>, which builds and disposes everything.
/// </summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = new Argument<DirectoryInfo?>("MODEL_DIR")
        {
            Description = "A Hugging Face model folder with config.json, tokenizer.json and model.safetensors (or sharded safetensors; Llama, Mistral, Qwen2, Qwen3, Phi-3), or an optimum onnx/model.onnx export. Omit it to serve the built-in demo model (random weights: its text is meaningless).",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var host = new Option<string>("--host") { Description = "Address to bind.", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port.", DefaultValueFactory = _ => 8000 };
        var config = CommonOptions.Config();
        var servedName = new Option<string?>("--served-model-name") { Description = "Model name in the API (default: the folder name, or lmcache-demo-llama)." };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads (0 = one per core).", DefaultValueFactory = _ => 0 };
        var command = new Command("serve", "Start an OpenAI-compatible LLM server whose KV cache LMCache offloads and reuses.")
        {
            model, host, port, config, servedName, threads,
        };
        var quantize = new Option<string>("--quantize")
        {
            Description = "Weight-only quantization of a model built from safetensors: none (fp32), int8 or int4 (ONNX Runtime MatMulNBits, blocks of 32).",
            DefaultValueFactory = _ => "none",
        };
        quantize.AcceptOnlyFromAmong("none", "int8", "int4");
        command.Options.Add(quantize);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var arguments = new LMCacheServeArguments
            {
                ModelFolder = parse.GetValue(model)?.FullName,
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                ConfigFile = parse.GetValue(config)?.FullName,
                Quantize = Enum.Parse<WeightQuantization>(parse.GetValue(quantize)!, ignoreCase: true),
                ServedModelName = parse.GetValue(servedName),
                Threads = parse.GetValue(threads),
            };
            using var loggerFactory = CommonOptions.CreateLoggerFactory();
            LMCacheHost lmcache;
            try
            {
                lmcache = await LMCacheHost.StartAsync(arguments, loggerFactory, cancellationToken);
            }
            catch (LMCacheException ex)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
            catch (IOException ex)
            {
                // Kestrel: the address is in use or cannot be bound.
                Console.Error.WriteLine($"error: cannot listen on {arguments.Host}:{arguments.Port}: {ex.Message}");
                return 2;
            }
            await using (lmcache)
            {
                var layout = lmcache.Model.Decoder.Layout;
                var o = lmcache.Cache.Options;
                Console.Error.WriteLine($"serve: model '{lmcache.Model.Name}' ({layout.NumLayers} layers, KV {layout.BytesPerToken / 1024.0:0.#} KiB/token, context {lmcache.Model.ContextLength}, " +
                    (lmcache.Model.IsBuiltGraph ? $"graph built from safetensors, weights {lmcache.Model.Quantization.ToString().ToLowerInvariant()})" : "ONNX export)"));
                Console.Error.WriteLine($"serve: LMCache chunk_size {o.ChunkSize}, CPU {o.MaxLocalCpuSizeGib:0.###} GiB" +
                    (o.LocalDisk is not null && o.MaxLocalDiskSizeGib > 0 ? $", disk {o.MaxLocalDiskSizeGib:0.###} GiB at {o.LocalDisk}" : "") +
                    (o.RemoteUrl is not null ? $", remote {o.RemoteUrl}" : ""));
                Console.Error.WriteLine($"serve: listening on {lmcache.Server!.Address} (POST /v1/chat/completions, /v1/completions; GET /v1/models, /health, /metrics). Ctrl+C stops.");
                try
                {
                    await Task.Delay(Timeout.Infinite, cancellationToken);
                }
                catch (OperationCanceledException)
                {
                    Console.Error.WriteLine("serve: stopping");
                }
            }
            return 0;
        });
        return command;
    }
}
