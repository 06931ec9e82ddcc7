#!/usr/bin/env bash
# Sends one chat request to a running `./lmcache serve` and prints the answer as it streams.
# The default request is the one of LMCache's Redis guide; the built-in model (lmcache-demo-coder, trained on Python
# code) answers it with Python.
#
#   ./lmcache serve &                 # the built-in model on 127.0.0.1:8000
#   examples/ask.sh                   # or: examples/ask.sh "Write a binary search in python" http://127.0.0.1:8000
set -euo pipefail
question="${1:-Write a segment tree implementation in python}"
base="${2:-http://127.0.0.1:8000}"

for _ in $(seq 1 300); do
    curl -sf "$base/health" >/dev/null && break
    sleep 1
done
curl -sf "$base/health" >/dev/null || { echo "no server at $base (start it with ./lmcache serve)" >&2; exit 1; }
model=$(curl -s "$base/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
body=$(python3 -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "stream": True, "max_tokens": 400, "temperature": 0,
    "messages": [{"role": "system", "content": "You are a helpful AI coding assistant."}, {"role": "user", "content": sys.argv[2]}]}))' "$model" "$question")
printf '> %s\n\n' "$question"
curl -sN -H 'Content-Type: application/json' -d "$body" "$base/v1/chat/completions" | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("data: ") or line == "data: [DONE]":
        continue
    delta = json.loads(line[6:])["choices"][0].get("delta", {}).get("content")
    if delta:
        print(delta, end="", flush=True)
print()'
