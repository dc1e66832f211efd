#!/usr/bin/env bash
# Builds the release Worker into build/ (index.js + index_bg.wasm). wrangler runs this as its
# [build] command, so `wrangler dev` and `wrangler deploy` build the same way.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
worker-build --release
# The wasm's name section (its function names: about 220 KB raw, 50 KB gzip) serves CPU
# profiles only (bench/profile.mjs): kept with WASM_NAMES=1, stripped from what is deployed.
# The features are worker-build's own (not --all-features, under which binaryen writes newer
# encodings, such as compact imports, that workerd and V8 may not read yet).
if [ "${WASM_NAMES:-}" != "1" ]; then
  features=(mutable-globals sign-ext nontrapping-float-to-int bulk-memory multivalue reference-types exception-handling)
  wasm-opt build/index_bg.wasm "${features[@]/#/--enable-}" --strip-debug -o build/index_bg.stripped.wasm
  mv build/index_bg.stripped.wasm build/index_bg.wasm
fi
