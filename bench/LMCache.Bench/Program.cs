using LMCache.Bench;

// lmcache-bench: the macro benchmarks, run by `./lmcache bench TARGET …`; every target lives in this project.
return await BenchCommands.CreateRoot().Parse(args).InvokeAsync();
