using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Validators;

// Hot-path micro-benchmarks with the memory diagnoser: the allocation column is the contract (0 B per chunk on the
// CPU tier's steady state), timings are informative. Run: dotnet run -c Release --project bench/LMCache.Benchmarks -- --filter '*'
var config = DefaultConfig.Instance
    .AddDiagnoser(MemoryDiagnoser.Default)
    .AddValidator(JitOptimizationsValidator.FailOnError)
    .WithOptions(ConfigOptions.DisableOptimizationsValidator | ConfigOptions.JoinSummary);
BenchmarkSwitcher.FromAssembly(typeof(LMCache.Benchmarks.HashingBenchmarks).Assembly).Run(args, config);
