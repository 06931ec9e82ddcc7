#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, builds, runs every test project and prints
# one closing line "N passed, N failed, N skipped". Usage: scripts/test.sh [extra dotnet test arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# --- what the tests need, from Debian's packages -------------------------------------------------------------------
# redis-server / redis-sentinel: real Redis, Sentinel and Cluster topologies for the connector tests.
# python3: the independent lm:// protocol client under test/python (standard library only).
# openssl: throw-away certificates for the rediss:// (TLS) connector test.
# chromium: the headless browser the controller dashboard test drives through Playwright (ExecutablePath, no download).
packages=()
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || packages+=(redis-sentinel)
command -v redis-benchmark >/dev/null 2>&1 || packages+=(redis-tools)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
if ((${#packages[@]} > 0)); then
    echo "test.sh: installing ${packages[*]}" >&2
    sudo_cmd=()
    [[ "$(id -u)" != 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
# Debian starts a system redis-server on 6379 after installing; tests never use fixed ports, so it is left alone.

# --- build and test ------------------------------------------------------------------------------------------------
results="$root/artifacts/test-results"
rm -rf "$results"
mkdir -p "$results"
dotnet build LMCache.slnx -c Release --nologo -v quiet -clp:ErrorsOnly
status=0
dotnet test LMCache.slnx -c Release --no-build --nologo \
    --logger "trx" --logger "console;verbosity=normal" --results-directory "$results" "$@" || status=$?

# --- one closing line across all test projects ---------------------------------------------------------------------
passed=0; failed=0; skipped=0
shopt -s nullglob
for trx in "$results"/*.trx; do
    counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
    p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters")
    f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
    t=$(sed -n 's/.* total="\([0-9]*\)".*/\1/p' <<<"$counters")
    e=$(sed -n 's/.* executed="\([0-9]*\)".*/\1/p' <<<"$counters")
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${t:-0} - ${e:-0}))
done
# Every skipped test with its reason (the only allowed skips are CPU features this machine lacks).
if ((skipped > 0)); then
    echo "skipped tests:"
    python3 - "$results" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
for trx in sorted(glob.glob(sys.argv[1] + "/*.trx")):
    for result in ET.parse(trx).getroot().iterfind(".//t:UnitTestResult", ns):
        if result.get("outcome") == "NotExecuted":
            message = result.find("t:Output/t:ErrorInfo/t:Message", ns)
            reason = (message.text or "").strip() if message is not None else "(no reason given)"
            print(f"  {result.get('testName')}: {reason}")
PY
fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
if [[ $status -ne 0 || $failed -ne 0 ]]; then
    exit 1
fi
