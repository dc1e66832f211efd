# Sourced by the other scripts: where the pinned tools live and the environment every build,
# dev and test run shares. Nothing here downloads anything.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# worker-build is pinned here; wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock.
WORKER_BUILD_VERSION=0.8.7
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock")

# Cargo-installed tools live outside the clone, keyed by version, so a fresh clone (and CI)
# reuses them while a fresh machine builds them once.
TOOLS_DIR="${EDGE_ROUTER_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-router/tools}"
WORKER_BUILD_ROOT="$TOOLS_DIR/worker-build-$WORKER_BUILD_VERSION"
WASM_BINDGEN_ROOT="$TOOLS_DIR/wasm-bindgen-cli-$WASM_BINDGEN_VERSION"

# node_modules/.bin first: Node 22 (the `node` package) for wrangler, wasm-opt, esbuild.
export PATH="$ROOT/node_modules/.bin:$WORKER_BUILD_ROOT/bin:$WASM_BINDGEN_ROOT/bin:$PATH"

# worker-build's three binary overrides: without them it downloads from GitHub.
export WASM_BINDGEN_BIN="$WASM_BINDGEN_ROOT/bin/wasm-bindgen"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"

# Nothing may wait on the network: no telemetry, no request.cf download; wrangler's logs stay
# in the (git-ignored) .wrangler folder.
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
export WRANGLER_LOG_PATH="$ROOT/.wrangler/logs"

step() { printf '\n==> %s\n' "$*"; }
