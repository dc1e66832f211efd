#!/usr/bin/env bash
# Runs every benchmark and ends with one table of all the figures (docs/performance.md says what
# each means):
#   1. criterion benchmarks of the core, natively (`cargo bench --bench core`);
#   2. the bundle's size and its gzip budget (scripts/size.sh, which also builds the release
#      Worker through wrangler's [build] step);
#   3. the end-to-end overhead: the release build in workerd through Miniflare, a fake upstream
#      on 127.0.0.1, a fixed load, CPU time per request (bench/overhead.mjs).
# Extra arguments go to criterion (e.g. `--measurement-time 3`, or a filter such as `quota`).
# Exits non-zero if a step fails or the bundle is over its budget; every step runs regardless.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh || exit 1

# The machine's load before anything here runs (the 1-minute average), for the report.
BENCH_LOADAVG_START=$(cut -d' ' -f1 /proc/loadavg)
export BENCH_LOADAVG_START
export XDG_CONFIG_HOME="$ROOT/.wrangler/config"
out="$ROOT/target/bench"
mkdir -p "$out"
rm -f "$out/overhead.json" "$out/size.log"
status=0

# Busy clock ticks of the whole machine, and CPU ticks of this script's finished children: what
# other processes used while criterion ran is the difference (the machine may be shared).
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
children_ticks() { sed 's/^.*) //' "/proc/$$/stat" | awk '{ print $14 + $15 }'; }

step "criterion benchmarks of the core (cargo bench --bench core)"
busy0=$(busy_ticks) own0=$(children_ticks) t0=$(date +%s.%N)
cargo bench --locked --bench core -- "$@" || status=1
busy1=$(busy_ticks) own1=$(children_ticks) t1=$(date +%s.%N)
BENCH_CRITERION_OTHER_LOAD=$(awk -v b="$((busy1 - busy0))" -v o="$((own1 - own0))" \
  -v hz="$(getconf CLK_TCK)" -v s="$(echo "$t1 $t0" | awk '{ print $1 - $2 }')" \
  'BEGIN { l = (b - o) / hz / s; printf "%.2f", l < 0 ? 0 : l }')
export BENCH_CRITERION_OTHER_LOAD

step "bundle size and budget (scripts/size.sh, which builds through wrangler's [build])"
stamp="$out/.size-start"
touch "$stamp"
bash scripts/size.sh 2>&1 | tee "$out/size.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "end-to-end overhead (bench/overhead.mjs)"
# The dry run above built the release Worker; build only if it did not get that far.
if [ build/index_bg.wasm -nt "$stamp" ] || bash scripts/build.sh; then
  node bench/overhead.mjs --json "$out/overhead.json" || status=1
else
  status=1
fi

node bench/report.mjs "$ROOT/target/criterion" "$out/overhead.json" "$out/size.log" || status=1
exit "$status"
