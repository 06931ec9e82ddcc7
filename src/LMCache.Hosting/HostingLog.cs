using Microsoft.Extensions.Logging;

namespace LMCache.Hosting;

/// <summary>Log messages of the host (event ids 8000–8099).</summary>
internal static partial class HostingLog
{
    [LoggerMessage(EventId = 8000, Level = LogLevel.Warning, Message = "{Warning}")]
    public static partial void ConfigurationWarning(ILogger logger, string warning);

    [LoggerMessage(EventId = 8001, Level = LogLevel.Warning,
        Message = "No model folder given: using the built-in demo model (a Llama-architecture model with RANDOM weights; its text is meaningless, its speed is real).")]
    public static partial void UsingDemoModel(ILogger logger);

    [LoggerMessage(EventId = 8002, Level = LogLevel.Information, Message = "Generating the demo model (first run only): {Step}")]
    public static partial void DemoModelProgress(ILogger logger, string step);

    [LoggerMessage(EventId = 8010, Level = LogLevel.Information, Message = "Loading the model: {Step}")]
    public static partial void ModelLoadProgress(ILogger logger, string step);

    // Debug: the exception is rethrown to the caller, which reports it (the CLI prints one line).
    [LoggerMessage(EventId = 8003, Level = LogLevel.Debug, Message = "The LMCache host failed to start; disposing what was built")]
    public static partial void StartFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 8004, Level = LogLevel.Debug, Message = "Disposed the {Component}")]
    public static partial void Disposed(ILogger logger, string component);

    [LoggerMessage(EventId = 8005, Level = LogLevel.Error, Message = "Disposing the {Component} failed")]
    public static partial void DisposeFailed(ILogger logger, string component, Exception exception);

    [LoggerMessage(EventId = 8006, Level = LogLevel.Debug, Message = "Disposing after a failed start failed too; the start's exception is rethrown")]
    public static partial void DisposeAfterFailedStartFailed(ILogger logger, Exception exception);
}
