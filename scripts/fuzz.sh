#!/usr/bin/env bash
# Fuzzes request, configuration and rate-limit header parsing with cargo-fuzz (libFuzzer):
# every target in fuzz/fuzz_targets, or the one named as $1, for FUZZ_SECONDS seconds each
# (default 60), one after another. Each target starts from its committed seeds
# (fuzz/seeds/<target>, regression inputs included), copied into the git-ignored
# fuzz/corpus/<target>; crashes land in fuzz/artifacts/<target>. Exits non-zero if any target
# crashed.
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer, sanitizer coverage); the stable toolchain
# accepts them with RUSTC_BOOTSTRAP=1, set here for the fuzz build only. FUZZ_SANITIZER picks
# the sanitizer (address by default; `none` builds faster and runs about twice as fast).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

CARGO_FUZZ_VERSION=0.13.2
CARGO_FUZZ_ROOT="$TOOLS_DIR/cargo-fuzz-$CARGO_FUZZ_VERSION"
export PATH="$CARGO_FUZZ_ROOT/bin:$PATH"

if [ ! -x "$CARGO_FUZZ_ROOT/bin/cargo-fuzz" ]; then
  step "installing cargo-fuzz $CARGO_FUZZ_VERSION (once per machine, a minute or two)"
  cargo install cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --root "$CARGO_FUZZ_ROOT"
fi

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
case "$seconds" in
  '' | *[!0-9]*) echo "fuzz: FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" >&2; exit 2 ;;
esac

if [ $# -gt 0 ]; then
  targets=("$1")
  [ -f "fuzz/fuzz_targets/$1.rs" ] || { echo "fuzz: no target '$1' in fuzz/fuzz_targets" >&2; exit 2; }
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

export RUSTC_BOOTSTRAP=1
failed=()
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  # Seeds join whatever earlier runs found; an existing file is not overwritten.
  if [ -d "fuzz/seeds/$target" ]; then
    cp -n "fuzz/seeds/$target"/* "$corpus"/ 2>/dev/null || true
  fi
  # A target's own dictionary when it has one (fuzz/<target>.dict), else the JSON one.
  dict="fuzz/$target.dict"
  [ -f "$dict" ] || dict=fuzz/json.dict
  step "fuzzing $target for ${seconds}s (sanitizer: $sanitizer)"
  # --debug-assertions: overflow checks and debug_assert! count as crashes too.
  if ! cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" --debug-assertions "$target" "$corpus" -- \
      -max_total_time="$seconds" -timeout=10 -dict="$dict" -print_final_stats=1; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
  exit 1
fi
step "fuzz: no crash in ${targets[*]}"
