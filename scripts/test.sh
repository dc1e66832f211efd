#!/usr/bin/env bash
# Sets everything up and runs every test layer, then prints the counts of each:
#   1. native:  `cargo test` of the core;
#   2. wasm:    `wasm-bindgen-test` of the JS-facing glue, in Node;
#   3. e2e:     the release build in workerd (Miniflare), called over HTTP, fake upstreams;
#   4. load:    a few thousand requests under injected faults (tests/load), with its report.
# All layers run even when one fails; the exit status is non-zero if any failed. A layer also
# fails when it ran fewer tests than its minimum (a test binary or file that silently ran
# nothing), when a test was skipped, ignored or cancelled, or when it outran its time limit.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh || exit 1

# Wrangler and Miniflare keep their own files inside the project during tests.
export XDG_CONFIG_HOME="$ROOT/.wrangler/config"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# The fewest tests each layer must run. Raise them as tests are added; lower one only with the
# tests it no longer has.
declare -A MINIMUM=([native]=267 [wasm]=15 [e2e]=238 [load]=3)
# Time limits (seconds) for running each layer's tests, compilation not included.
declare -A LIMIT=([native]=900 [wasm]=600 [e2e]=1500 [load]=900)

names=() passed=() failed=() skipped=() notes=() total_passed=0 total_failed=0 status=0

# sum LOG REGEX: the sum of the numbers that precede REGEX on cargo's `test result:` lines.
sum() {
  awk -v want="$2" '/^test result: / { for (i = 1; i < NF; i++) if ($(i + 1) ~ want) s += $i } END { print s + 0 }' "$1"
}
# node_count LOG NAME: the last `ℹ NAME N` summary line of node's test runner.
node_count() {
  grep -aE "^(ℹ|#) $2 [0-9]+" "$1" | tail -1 | awk '{ n = $3 } END { print n + 0 }'
}

# record NAME LOG EXIT: counts from a runner's closing lines. A layer that exits non-zero
# without reporting a failed test (a build error, a time limit) counts as one failure.
record() {
  local name=$1 log=$2 code=$3 p f s note=""
  p=$(sum "$log" '^passed') f=$(sum "$log" '^failed') s=$(sum "$log" '^ignored')
  if grep -aqE '^(ℹ|#) pass [0-9]+' "$log"; then
    p=$(node_count "$log" pass)
    f=$(( $(node_count "$log" fail) + $(node_count "$log" cancelled) ))
    s=$(( $(node_count "$log" skipped) + $(node_count "$log" todo) ))
  fi
  p=${p:-0} f=${f:-0} s=${s:-0}
  if [ "$code" -eq 124 ]; then note="over its ${LIMIT[$name]} s limit"; fi
  if [ "$p" -lt "${MINIMUM[$name]}" ]; then note="${note:+$note; }fewer than ${MINIMUM[$name]} tests"; code=1; fi
  if [ "$s" -ne 0 ]; then note="${note:+$note; }tests skipped"; code=1; fi
  if [ "$code" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  if [ "$code" -ne 0 ]; then status=1; fi
  names+=("$name") passed+=("$p") failed+=("$f") skipped+=("$s") notes+=("$note")
  total_passed=$((total_passed + p)) total_failed=$((total_failed + f))
}

layer() {
  local name=$1; shift
  step "$name"
  "$@" 2>&1 | tee "$logs/$name.log"
  record "$name" "$logs/$name.log" "${PIPESTATUS[0]}"
}

# Compiles first (no limit: a fresh machine compiles everything), then runs every test binary
# even when one fails, within the layer's limit.
cargo_layer() {
  local name=$1; shift
  cargo test --locked --no-run "$@" || return 1
  timeout "${LIMIT[$name]}" cargo test --locked --no-fail-fast "$@"
}

layer native cargo_layer native

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
layer wasm cargo_layer wasm --target wasm32-unknown-unknown --lib

# The release build both Node layers load; built in this run, or they do not run.
e2e() {
  bash scripts/build.sh || return 1
  touch "$logs/built"
  timeout "${LIMIT[e2e]}" node --test --test-timeout=300000 --test-reporter=spec tests/e2e/*.test.mjs
}
layer e2e e2e

# The load test prints its report before its verdict.
load() {
  if [ ! -e "$logs/built" ]; then
    echo "not run: the release build failed, and build/ may be stale"
    return 1
  fi
  # One file at a time: the soak reads workerd's memory, and the deadlines are checked against
  # the machine's clock.
  timeout "${LIMIT[load]}" node --test --test-concurrency=1 --test-reporter=spec tests/load/*.test.mjs
}
layer load load

printf '\n%-8s %8s %8s %8s %8s  %s\n' layer passed failed skipped minimum note
for i in "${!names[@]}"; do
  printf '%-8s %8s %8s %8s %8s  %s\n' "${names[$i]}" "${passed[$i]}" "${failed[$i]}" "${skipped[$i]}" "${MINIMUM[${names[$i]}]}" "${notes[$i]}"
done
echo "total: $total_passed passed, $total_failed failed"
exit "$status"
