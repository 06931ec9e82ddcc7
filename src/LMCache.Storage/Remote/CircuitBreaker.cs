namespace LMCache.Storage.Remote;

/// <summary>
/// Stops calling a failing remote. Closed: calls go through. After <c>threshold</c> consecutive failures it opens:
/// calls are refused (misses) until a background probe succeeds. Each failed probe doubles the wait, up to a maximum.
/// </summary>
internal sealed class CircuitBreaker
{
    private readonly int _threshold;
    private readonly TimeSpan _initialCooldown;
    private readonly TimeSpan _maxCooldown;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private int _consecutiveFailures;
    private bool _open;
    private TimeSpan _cooldown;
    private long _nextProbeTimestamp;

    public CircuitBreaker(int threshold, TimeSpan initialCooldown, TimeSpan maxCooldown, TimeProvider time)
    {
        _threshold = threshold;
        _initialCooldown = initialCooldown;
        _maxCooldown = maxCooldown;
        _cooldown = initialCooldown;
        _time = time;
    }

    /// <summary>True while calls are refused.</summary>
    public bool IsOpen => Volatile.Read(ref _open);

    /// <summary>Current wait between probes.</summary>
    public TimeSpan Cooldown
    {
        get
        {
            lock (_lock)
            {
                return _cooldown;
            }
        }
    }

    /// <summary>True when an open circuit is due for a probe.</summary>
    public bool IsProbeDue
    {
        get
        {
            lock (_lock)
            {
                return _open && _time.GetTimestamp() >= _nextProbeTimestamp;
            }
        }
    }

    /// <summary>Records a successful call or probe; returns true when this closed an open circuit.</summary>
    public bool RecordSuccess()
    {
        lock (_lock)
        {
            _consecutiveFailures = 0;
            _cooldown = _initialCooldown;
            if (!_open)
            {
                return false;
            }
            Volatile.Write(ref _open, false);
            return true;
        }
    }

    /// <summary>Records a failed call; returns true when this opened the circuit.</summary>
    public bool RecordFailure()
    {
        lock (_lock)
        {
            _consecutiveFailures++;
            if (_open || _consecutiveFailures < _threshold)
            {
                return false;
            }
            Volatile.Write(ref _open, true);
            _nextProbeTimestamp = _time.GetTimestamp() + (long)(_cooldown.TotalSeconds * _time.TimestampFrequency);
            return true;
        }
    }

    /// <summary>Records a failed probe of an open circuit: doubles the wait (bounded).</summary>
    public void RecordProbeFailure()
    {
        lock (_lock)
        {
            _cooldown = TimeSpan.FromTicks(Math.Min(_cooldown.Ticks * 2, _maxCooldown.Ticks));
            _nextProbeTimestamp = _time.GetTimestamp() + (long)(_cooldown.TotalSeconds * _time.TimestampFrequency);
        }
    }

    /// <summary>Consecutive failures so far.</summary>
    public int ConsecutiveFailures
    {
        get
        {
            lock (_lock)
            {
                return _consecutiveFailures;
            }
        }
    }
}
