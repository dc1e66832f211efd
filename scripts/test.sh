#!/usr/bin/env bash
# Sets everything up and runs every test layer, then prints the counts of each:
#   1. native:  `cargo test` of the core;
#   2. wasm:    `wasm-bindgen-test` of the JS-facing glue, in Node;
#   3. e2e:     the release build in workerd (Miniflare), called over HTTP, fake upstreams;
#   4. load:    a few thousand requests under injected faults (tests/load), with its report.
# All layers run even when one fails; the exit status is non-zero if any failed.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh || exit 1

# Wrangler and Miniflare keep their own files inside the project during tests.
export XDG_CONFIG_HOME="$ROOT/.wrangler/config"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

names=() passed=() failed=() total_passed=0 total_failed=0 status=0

# record NAME LOG EXIT: counts from a runner's closing lines; a layer that exits non-zero without
# reporting a failed test (a build error) counts as one failure.
record() {
  local name=$1 log=$2 code=$3 p f
  p=$(awk '/^test result: / { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
  f=$(awk '/^test result: / { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")
  if grep -aqE '^(ℹ|#) pass [0-9]+' "$log"; then
    p=$(grep -aE '^(ℹ|#) pass [0-9]+' "$log" | tail -1 | awk '{print $3}')
    f=$(grep -aE '^(ℹ|#) fail [0-9]+' "$log" | tail -1 | awk '{print $3}')
  fi
  p=${p:-0} f=${f:-0}
  if [ "$code" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  if [ "$code" -ne 0 ]; then status=1; fi
  names+=("$name") passed+=("$p") failed+=("$f")
  total_passed=$((total_passed + p)) total_failed=$((total_failed + f))
}

layer() {
  local name=$1; shift
  step "$name"
  "$@" 2>&1 | tee "$logs/$name.log"
  record "$name" "$logs/$name.log" "${PIPESTATUS[0]}"
}

layer native cargo test --locked

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
layer wasm cargo test --locked --target wasm32-unknown-unknown --lib

e2e() {
  bash scripts/build.sh && node --test --test-reporter=spec tests/e2e/*.test.mjs
}
layer e2e e2e

# The release build from the e2e layer; the load test prints its report before its verdict.
layer load node --test --test-reporter=spec tests/load/*.test.mjs

printf '\n%-8s %8s %8s\n' layer passed failed
for i in "${!names[@]}"; do
  printf '%-8s %8s %8s\n' "${names[$i]}" "${passed[$i]}" "${failed[$i]}"
done
echo "total: $total_passed passed, $total_failed failed"
exit "$status"
