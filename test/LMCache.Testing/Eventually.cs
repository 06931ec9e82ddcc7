namespace LMCache.Testing;

/// <summary>
/// Waits for a condition that background work (a writer task, a health probe, a late reply) makes true. Not a timing
/// assertion: the deadline is generous and only turns a hang into a clear failure on a loaded machine.
/// </summary>
public static class Eventually
{
    /// <summary>The default deadline: 30 s.</summary>
    public static readonly TimeSpan DefaultDeadline = TimeSpan.FromSeconds(30);

    /// <summary>Polls <paramref name="condition"/> until it holds; throws naming <paramref name="what"/> at the deadline.</summary>
    public static async Task TrueAsync(Func<bool> condition, string what, TimeSpan? deadline = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var until = DateTime.UtcNow + (deadline ?? DefaultDeadline);
        while (!condition())
        {
            if (DateTime.UtcNow > until)
            {
                throw new TimeoutException($"Condition not reached within {(deadline ?? DefaultDeadline).TotalSeconds:0} s: {what}");
            }
            await Task.Delay(5).ConfigureAwait(false);
        }
    }

    /// <summary>Awaits <paramref name="task"/> with the default deadline, failing clearly instead of hanging.</summary>
    public static async Task<T> CompletesAsync<T>(Task<T> task, string what)
    {
        ArgumentNullException.ThrowIfNull(task);
        try
        {
            return await task.WaitAsync(DefaultDeadline).ConfigureAwait(false);
        }
        catch (TimeoutException) when (!task.IsCompleted)   // the deadline, not a TimeoutException of the task itself
        {
            throw new TimeoutException($"Did not complete within {DefaultDeadline.TotalSeconds:0} s: {what}");
        }
    }

    /// <summary>Awaits <paramref name="task"/> with the default deadline, failing clearly instead of hanging.</summary>
    public static async Task CompletesAsync(Task task, string what)
    {
        ArgumentNullException.ThrowIfNull(task);
        try
        {
            await task.WaitAsync(DefaultDeadline).ConfigureAwait(false);
        }
        catch (TimeoutException) when (!task.IsCompleted)   // the deadline, not a TimeoutException of the task itself
        {
            throw new TimeoutException($"Did not complete within {DefaultDeadline.TotalSeconds:0} s: {what}");
        }
    }
}
