#!/usr/bin/env bash
# Builds the release Worker into build/ (index.js + index_bg.wasm). wrangler runs this as its
# [build] command, so `wrangler dev` and `wrangler deploy` build the same way.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
worker-build --release
