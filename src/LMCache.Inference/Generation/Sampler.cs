namespace LMCache.Inference.Generation;

/// <summary>
/// Picks tokens from logits: greedy (argmax, lowest id on ties), or temperature + top-p (nucleus) sampling from a
/// seeded RNG. Also computes log-probabilities of the raw distribution for <c>logprobs</c>. One per request.
/// </summary>
public sealed class Sampler
{
    private readonly SamplingParameters _parameters;
    private readonly Random _random;
    private float[] _scratch = [];
    private int[] _order = [];

    /// <summary>Creates a sampler; the RNG is seeded from <see cref="SamplingParameters.Seed"/> when given.</summary>
    public Sampler(SamplingParameters parameters)
    {
        _parameters = parameters;
        _random = parameters.Seed is { } seed ? new Random(unchecked((int)(seed ^ (seed >> 32)))) : new Random(Random.Shared.Next());
    }

    /// <summary>Chooses the next token.</summary>
    public int Next(ReadOnlySpan<float> logits)
    {
        if (_parameters.IsGreedy)
        {
            return ArgMax(logits);
        }
        var n = logits.Length;
        if (_scratch.Length != n)
        {
            _scratch = new float[n];
            _order = new int[n];
        }
        var max = float.NegativeInfinity;
        foreach (var l in logits)
        {
            max = Math.Max(max, l);
        }
        var inverseTemperature = 1.0 / _parameters.Temperature;
        double sum = 0;
        for (var i = 0; i < n; i++)
        {
            var p = Math.Exp((logits[i] - max) * inverseTemperature);
            _scratch[i] = (float)p;
            sum += p;
        }
        var count = n;
        if (_parameters.TopP < 1.0)
        {
            for (var i = 0; i < n; i++)
            {
                _order[i] = i;
            }
            var probabilities = _scratch;
            Array.Sort(_order, (a, b) => probabilities[b].CompareTo(probabilities[a]) is var c && c != 0 ? c : a.CompareTo(b));
            double cumulative = 0;
            count = 0;
            var threshold = _parameters.TopP * sum;
            while (count < n)
            {
                cumulative += _scratch[_order[count]];
                count++;
                if (cumulative >= threshold)
                {
                    break;
                }
            }
            sum = cumulative;
            var target = _random.NextDouble() * sum;
            double running = 0;
            for (var k = 0; k < count; k++)
            {
                running += _scratch[_order[k]];
                if (running >= target)
                {
                    return _order[k];
                }
            }
            return _order[count - 1];
        }
        var pick = _random.NextDouble() * sum;
        double acc = 0;
        for (var i = 0; i < n; i++)
        {
            acc += _scratch[i];
            if (acc >= pick)
            {
                return i;
            }
        }
        return n - 1;
    }

    /// <summary>Index of the largest logit (lowest index on ties).</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        var best = 0;
        for (var i = 1; i < logits.Length; i++)
        {
            if (logits[i] > logits[best])
            {
                best = i;
            }
        }
        return best;
    }

    /// <summary>
    /// Log-probability of <paramref name="token"/> under softmax(<paramref name="logits"/>) and, when
    /// <paramref name="top"/> &gt; 0, the <paramref name="top"/> most likely tokens with theirs.
    /// </summary>
    public static (float LogProb, (int Token, float LogProb)[] Top) LogProbs(ReadOnlySpan<float> logits, int token, int top)
    {
        var max = float.NegativeInfinity;
        foreach (var l in logits)
        {
            max = Math.Max(max, l);
        }
        double sum = 0;
        foreach (var l in logits)
        {
            sum += Math.Exp(l - max);
        }
        var logZ = max + (float)Math.Log(sum);
        var best = Array.Empty<(int, float)>();
        if (top > 0)
        {
            top = Math.Min(top, logits.Length);
            var heap = new PriorityQueue<int, float>(top + 1);
            for (var i = 0; i < logits.Length; i++)
            {
                heap.Enqueue(i, logits[i]);
                if (heap.Count > top)
                {
                    heap.Dequeue();
                }
            }
            best = new (int, float)[heap.Count];
            for (var k = best.Length - 1; k >= 0; k--)
            {
                var id = heap.Dequeue();
                best[k] = (id, logits[id] - logZ);
            }
            // Equal logits: lower id first, as the reference's stable sort.
            Array.Sort(best, (a, b) => b.Item2.CompareTo(a.Item2) is var c && c != 0 ? c : a.Item1.CompareTo(b.Item1));
        }
        return (logits[token] - logZ, best);
    }
}
