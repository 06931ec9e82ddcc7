using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http;

namespace LMCache.Controller;

/// <summary>What a finished operation did (the fields beside <c>num_tokens</c> are ours and only set by some operations).</summary>
internal sealed record OperationOutcome(long NumTokens, long? NumChunks = null, long? OriginalBytes = null, long? CompressedBytes = null);

/// <summary>One asynchronous controller operation (clear, move, compress, decompress) and how it ended.</summary>
internal sealed class ControllerEvent
{
    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public required string EventId { get; init; }

    public required string Operation { get; init; }

    public required string InstanceId { get; init; }

    public required double StartedAt { get; init; }

    /// <summary><c>running</c>, <c>finished</c> or <c>failed</c>.</summary>
    public string Status { get; private set; } = ControllerEvents.Running;

    public double? FinishedAt { get; private set; }

    public OperationOutcome? Outcome { get; private set; }

    public string? Error { get; private set; }

    /// <summary>The HTTP status the failure maps to (400 for a request a worker refused, 504 for a timeout, …).</summary>
    public int ErrorStatus { get; private set; }

    /// <summary>Completes (never faults) when the operation has ended either way.</summary>
    public Task Completion => _done.Task;

    public void Finish(OperationOutcome outcome, double now)
    {
        Outcome = outcome;
        FinishedAt = now;
        Status = ControllerEvents.Finished;
        _done.TrySetResult();
    }

    public void Fail(string error, int status, double now)
    {
        Error = error;
        ErrorStatus = status;
        FinishedAt = now;
        Status = ControllerEvents.Failed;
        _done.TrySetResult();
    }
}

/// <summary>
/// The controller's table of asynchronous operations, answered by <c>/check_finish</c>: each long operation gets an event
/// id, runs to its end even when the HTTP caller stops waiting, and is remembered (the newest <c>capacity</c> ones).
/// </summary>
internal sealed class ControllerEvents(TimeProvider time, int capacity = 1000)
{
    public const string Running = "running";
    public const string Finished = "finished";
    public const string Failed = "failed";

    private readonly ConcurrentDictionary<string, ControllerEvent> _events = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _order = new();

    private double Now => time.GetUtcNow().ToUnixTimeMilliseconds() / 1000.0;

    /// <summary>Starts <paramref name="run"/> as event <paramref name="eventId"/>; it stops only when <paramref name="lifetime"/> ends.</summary>
    public ControllerEvent Start(string eventId, string operation, string instanceId, Func<CancellationToken, Task<OperationOutcome>> run, CancellationToken lifetime)
    {
        var controllerEvent = new ControllerEvent { EventId = eventId, Operation = operation, InstanceId = instanceId, StartedAt = Now };
        _events[eventId] = controllerEvent;
        _order.Enqueue(eventId);
        while (_order.Count > capacity && _order.TryPeek(out var oldest)
            && _events.TryGetValue(oldest, out var old) && old.Status != Running && _order.TryDequeue(out _))
        {
            _events.TryRemove(oldest, out _);
        }
        _ = RunAsync(controllerEvent, run, lifetime);
        return controllerEvent;
    }

    public ControllerEvent? Find(string eventId) => _events.GetValueOrDefault(eventId);

    private async Task RunAsync(ControllerEvent controllerEvent, Func<CancellationToken, Task<OperationOutcome>> run, CancellationToken lifetime)
    {
        try
        {
            await Task.Yield();   // the caller gets its event id before any work runs
            controllerEvent.Finish(await run(lifetime).ConfigureAwait(false), Now);
        }
        catch (ControllerApiException ex)
        {
            controllerEvent.Fail(ex.Message, ex.StatusCode, Now);
        }
        catch (OperationCanceledException)
        {
            controllerEvent.Fail("The controller stopped before the operation finished.", StatusCodes.Status503ServiceUnavailable, Now);
        }
        catch (Exception ex)
        {
            controllerEvent.Fail($"Internal error: {ex.Message}", StatusCodes.Status500InternalServerError, Now);
        }
    }
}
