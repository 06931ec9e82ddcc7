#!/usr/bin/env bash
# Sends the same long prompt twice to a running `./lmcache serve` and prints both times to first token.
# The second request finds the prompt's KV chunks in LMCache and only computes the uncached tail.
#
#   ./lmcache serve &                 # the built-in model on 127.0.0.1:8000
#   examples/query_twice.sh           # or: examples/query_twice.sh http://127.0.0.1:8000 16000
set -euo pipefail
base="${1:-http://127.0.0.1:8000}"
chars="${2:-16000}"   # the built-in model's BPE turns this text into about one token per 4 characters: ~4,000 tokens

for _ in $(seq 1 300); do
    curl -sf "$base/health" >/dev/null && break
    sleep 1
done
curl -sf "$base/health" >/dev/null || { echo "no server at $base (start it with ./lmcache serve)" >&2; exit 1; }
model=$(curl -s "$base/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')

# A long document with a unique header, so each run of this script starts cold.
prompt=$(python3 - "$chars" <<'PY'
import random, sys, time
n = int(sys.argv[1])
words = "the cache keeps every chunk of keys and values so a prompt seen before is not computed again".split()
rng = random.Random(int(time.time() * 1000))
text = f"Session {rng.randrange(10**9)}. "
while len(text) < n:
    text += rng.choice(words) + " "
print(text[:n])
PY
)
body=$(python3 -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "prompt": sys.argv[2], "max_tokens": 1, "temperature": 0}))' "$model" "$prompt")

ask() {
    # time_starttransfer: until the first byte of the answer, i.e. the time to first token of a 1-token completion.
    curl -s -o /tmp/lmcache_query_twice.json -w '%{time_starttransfer}' -H 'Content-Type: application/json' -d "$body" "$base/v1/completions"
}
first=$(ask)
cached1=$(python3 -c 'import json; print(json.load(open("/tmp/lmcache_query_twice.json"))["usage"]["prompt_tokens_details"]["cached_tokens"])')
second=$(ask)
read -r tokens cached2 < <(python3 -c 'import json; u=json.load(open("/tmp/lmcache_query_twice.json"))["usage"]; print(u["prompt_tokens"], u["prompt_tokens_details"]["cached_tokens"])')
printf 'prompt: %s tokens\n' "$tokens"
printf 'first request:  TTFT %6.3f s  (cached tokens: %s)\n' "$first" "$cached1"
printf 'second request: TTFT %6.3f s  (cached tokens: %s)\n' "$second" "$cached2"
python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"speed-up: {a/b:.1f}x")' "$first" "$second"
