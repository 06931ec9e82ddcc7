using LMCache.Core.Diagnostics;
using LMCache.Inference.Demo;

namespace LMCache.Hosting;

/// <summary>The model a host serves when it is given no model folder.</summary>
public enum BuiltInModel
{
    /// <summary>
    /// <c>lmcache-demo-coder</c>: a small (11 M parameters) Llama-architecture model really trained on permissively
    /// licensed Python sources. It ships with the program (the repository's <c>models/</c> folder, copied next to the
    /// executable on build) as a Hugging Face folder of fp16 safetensors, and answers coding requests with code.
    /// </summary>
    TrainedDemo,

    /// <summary>
    /// <c>lmcache-demo-llama</c>: a larger Llama-architecture decoder with random weights (its text is meaningless),
    /// generated deterministically on first use into <see cref="DemoModel.DefaultCacheRoot"/>. Sized so a 4,000-token
    /// prompt takes seconds to prefill on 2 cores; a size/speed option for benchmarks.
    /// </summary>
    RandomDemo,
}

/// <summary>Where the built-in models live and what they are called.</summary>
public static class BuiltInModels
{
    /// <summary>The served name of <see cref="BuiltInModel.TrainedDemo"/>.</summary>
    public const string TrainedDemoName = "lmcache-demo-coder";

    /// <summary>The served name of <see cref="BuiltInModel.RandomDemo"/>.</summary>
    public const string RandomDemoName = "lmcache-demo-llama";

    /// <summary>
    /// The folder of the trained demo model next to the running program (<c>models/lmcache-demo-coder</c> under
    /// <see cref="AppContext.BaseDirectory"/>, where every program that references LMCache.Hosting gets a copy on build).
    /// </summary>
    public static string TrainedDemoFolder => Path.Combine(AppContext.BaseDirectory, "models", TrainedDemoName);

    /// <summary>The served name of <paramref name="model"/>.</summary>
    public static string NameOf(BuiltInModel model) => model == BuiltInModel.RandomDemo ? RandomDemoName : TrainedDemoName;

    /// <summary>
    /// The folder of <paramref name="model"/>: the shipped trained model, or the random-weight model (generated on first
    /// use, reporting its steps to <paramref name="progress"/>).
    /// </summary>
    /// <exception cref="LMCacheException">The trained model's files are not next to the program.</exception>
    public static string Resolve(BuiltInModel model, Action<string>? progress = null)
    {
        if (model == BuiltInModel.RandomDemo)
        {
            return DemoModel.EnsureCreated(progress: progress);
        }
        var folder = TrainedDemoFolder;
        if (!File.Exists(Path.Combine(folder, "config.json")))
        {
            throw new LMCacheException(
                $"The built-in model '{TrainedDemoName}' is missing: expected it in '{folder}'. It ships in the repository's models/{TrainedDemoName} folder and is copied next to the program on build; rebuild, or pass a model folder.");
        }
        return folder;
    }

    /// <summary>Parses the command-line spelling (<c>trained</c> or <c>random</c>).</summary>
    /// <exception cref="ArgumentException">Any other value.</exception>
    public static BuiltInModel Parse(string value) => value.ToLowerInvariant() switch
    {
        "trained" or TrainedDemoName => BuiltInModel.TrainedDemo,
        "random" or RandomDemoName => BuiltInModel.RandomDemo,
        _ => throw new ArgumentException($"Unknown demo model '{value}': use 'trained' ({TrainedDemoName}) or 'random' ({RandomDemoName})."),
    };
}
