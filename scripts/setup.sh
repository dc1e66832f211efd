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

# The official OpenAI Python client for the Python end-to-end test, in a virtualenv at .venv,
# reinstalled only when tests/e2e/requirements.txt changed.
venv_stamp="$ROOT/.venv/.edge-router-requirements"
req_sum() { sha256sum tests/e2e/requirements.txt | cut -d' ' -f1; }
if [ ! -x .venv/bin/python ] || [ "$(cat "$venv_stamp" 2>/dev/null)" != "$(req_sum)" ]; then
  step "installing the Python test client (openai, tests/e2e/requirements.txt) into .venv"
  command -v python3 >/dev/null || { echo "setup: python3 is required (the Python SDK test)" >&2; exit 1; }
  if [ ! -x .venv/bin/python ] && ! python3 -m venv .venv; then
    # Debian's python3 makes virtualenvs only with its python3-venv package.
    rm -rf .venv
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv
    elif command -v sudo >/dev/null; then
      sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends python3-venv
    else
      echo "setup: python3 -m venv failed: install Debian's 'python3-venv' package" >&2
      exit 1
    fi
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input -r tests/e2e/requirements.txt
  req_sum > "$venv_stamp"
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
