#!/usr/bin/env bash
# Installs everything the project needs, pinned, from the package registries only; skips what
# is already there. Safe to run any number of times.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

for tool in cargo rustup npm; do
  command -v "$tool" >/dev/null || { echo "setup: '$tool' is required but not on PATH" >&2; exit 1; }
done

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if [ ! -x "$WASM_BINDGEN_BIN" ]; then
  step "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (once per machine, a few minutes)"
  # Not --locked: its lock file names a webpki-roots version the registry does not serve.
  cargo install wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION" --root "$WASM_BINDGEN_ROOT"
fi

if [ ! -x "$WORKER_BUILD_ROOT/bin/worker-build" ]; then
  step "installing worker-build $WORKER_BUILD_VERSION (once per machine, a few minutes)"
  cargo install worker-build --version "=$WORKER_BUILD_VERSION" --root "$WORKER_BUILD_ROOT"
fi

# npm dependencies, reinstalled only when package.json or package-lock.json changed. (`npm ci`
# refuses this lock file: it lacks the other platforms' optional workerd packages.)
stamp="$ROOT/node_modules/.edge-router-lock"
npm_sum() { cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1; }
if [ ! -x node_modules/.bin/wrangler ] || [ "$(cat "$stamp" 2>/dev/null)" != "$(npm_sum)" ]; then
  step "installing npm dev dependencies (wrangler, Node 22, wasm-opt, esbuild)"
  npm install --no-audit --no-fund --loglevel=error
  npm_sum > "$stamp"
fi

# Debian's Chromium for the browser end-to-end test (playwright-core drives it; it downloads no
# browser of its own).
if [ -z "${CHROMIUM_BIN:-}" ] && ! command -v chromium >/dev/null; then
  step "installing Debian's chromium (for the browser test)"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends chromium
  else
    echo "setup: the browser test needs Chromium: install Debian's 'chromium' package or set CHROMIUM_BIN" >&2
    exit 1
  fi
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 22 ]; then
  echo "setup: node_modules/.bin/node should be Node 22, found $(node --version)" >&2
  exit 1
fi
