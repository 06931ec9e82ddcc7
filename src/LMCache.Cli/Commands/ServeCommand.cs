using System.CommandLine;
using LMCache.Core.Diagnostics;
using LMCache.Engine;
using LMCache.Inference.Demo;
using LMCache.Inference.Generation;
using LMCache.Inference.Models;
using LMCache.Serving;
using Microsoft.Extensions.Logging;

namespace LMCache.Cli.Commands;

/// <summary>
/// <c>lmcache serve [MODEL_DIR] [--host 127.0.0.1] [--port 8000] [--config FILE]</c>: the OpenAI-compatible server
/// over the built-in ONNX Runtime engine with LMCache as its KV connector, configured exactly as the original
/// (YAML via <c>LMCACHE_CONFIG_FILE</c> or <c>--config</c>, <c>LMCACHE_*</c> variables). Without MODEL_DIR it serves
/// the built-in demo model (random weights, generated once into a cache folder).
/// </summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = new Argument<DirectoryInfo?>("MODEL_DIR")
        {
            Description = "A Hugging Face model folder with config.json, tokenizer.json and onnx/model.onnx (optimum decoder-with-past export). Omit it to serve the built-in demo model (random weights: its text is meaningless).",
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
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var loggerFactory = CommonOptions.CreateLoggerFactory();
            LMCache.Core.Configuration.LoadedConfiguration loaded;
            try
            {
                loaded = CommonOptions.LoadConfiguration(parse.GetValue(config));
            }
            catch (LMCacheConfigurationException ex)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 2;
            }
            var folder = parse.GetValue(model)?.FullName;
            var name = parse.GetValue(servedName);
            if (folder is null)
            {
                Console.Error.WriteLine("serve: no MODEL_DIR given: using the built-in demo model (a Llama-architecture model with RANDOM weights; its text is meaningless, its speed is real).");
                folder = DemoModel.EnsureCreated(progress: step => Console.Error.WriteLine($"serve: generating the demo model (first run only): {step}"));
                name ??= "lmcache-demo-llama";
            }
            else if (!Directory.Exists(folder))
            {
                Console.Error.WriteLine($"error: model folder '{folder}' does not exist.");
                return 2;
            }

            LanguageModel languageModel;
            try
            {
                languageModel = LanguageModel.Load(folder, name, parse.GetValue(threads));
            }
            catch (Exception ex) when (ex is IOException or InvalidDataException or NotSupportedException or Inference.Templates.Jinja.JinjaException or Microsoft.ML.OnnxRuntime.OnnxRuntimeException)
            {
                Console.Error.WriteLine($"error: cannot load the model in '{folder}': {ex.Message}");
                return 2;
            }
            using (languageModel)
            {
                LMCacheEngine cache;
                try
                {
                    cache = LMCacheEngine.Create(loaded.Options, InferenceEngine.CreateKeyScope(languageModel), languageModel.Decoder.Layout, Hosting.CreateServices(loggerFactory));
                }
                catch (LMCacheConfigurationException ex)
                {
                    Console.Error.WriteLine($"error: {ex.Message}");
                    return 2;
                }
                await using (cache)
                {
                    // enable_controller: true starts a controller worker (registration, heartbeats, admissions) for this engine.
                    await using var controllerWorker = Controller.Worker.ControllerWorker.StartIfEnabled(cache, loggerFactory);
                    await using var engine = new InferenceEngine(languageModel, cache, logger: loggerFactory.CreateLogger<InferenceEngine>());
                    var options = new OpenAiServerOptions { Host = parse.GetValue(host)!, Port = parse.GetValue(port) };
                    await using var server = await OpenAiServer.StartAsync(engine, options, loggerFactory, cancellationToken);
                    var o = loaded.Options;
                    Console.Error.WriteLine($"serve: model '{languageModel.Name}' ({languageModel.Decoder.Layout.NumLayers} layers, KV {languageModel.Decoder.Layout.BytesPerToken / 1024.0:0.#} KiB/token, context {languageModel.ContextLength})");
                    Console.Error.WriteLine($"serve: LMCache chunk_size {o.ChunkSize}, CPU {o.MaxLocalCpuSizeGib:0.###} GiB" +
                        (o.LocalDisk is not null && o.MaxLocalDiskSizeGib > 0 ? $", disk {o.MaxLocalDiskSizeGib:0.###} GiB at {o.LocalDisk}" : "") +
                        (o.RemoteUrl is not null ? $", remote {o.RemoteUrl}" : ""));
                    Console.Error.WriteLine($"serve: listening on {server.Address} (POST /v1/chat/completions, /v1/completions; GET /v1/models, /health, /metrics). Ctrl+C stops.");
                    try
                    {
                        await Task.Delay(Timeout.Infinite, cancellationToken);
                    }
                    catch (OperationCanceledException)
                    {
                        Console.Error.WriteLine("serve: stopping");
                    }
                }
            }
            return 0;
        });
        return command;
    }
}
