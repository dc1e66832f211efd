#!/usr/bin/env bash
# Prints the size of what `wrangler deploy` would upload (raw and gzip), from a dry run that
# bundles exactly the deployable files into dist/ without an account.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
export XDG_CONFIG_HOME="$ROOT/.wrangler/config"
rm -rf dist
mkdir -p "$ROOT/.wrangler"
wrangler deploy --dry-run --outdir dist </dev/null >"$ROOT/.wrangler/dry-run.log" 2>&1 || {
  cat "$ROOT/.wrangler/dry-run.log"; exit 1;
}
grep -a 'Total Upload' "$ROOT/.wrangler/dry-run.log"
node - dist <<'JS'
const fs = require("node:fs");
const path = require("node:path");
const zlib = require("node:zlib");
const dir = process.argv[2];
let raw = 0, gz = 0;
console.log(`${"file".padEnd(14)} ${"raw KiB".padStart(9)} ${"gzip KiB".padStart(9)}`);
for (const name of fs.readdirSync(dir).sort()) {
  if (!/\.(js|wasm)$/.test(name)) continue;
  const bytes = fs.readFileSync(path.join(dir, name));
  const z = zlib.gzipSync(bytes, { level: 9 }).length;
  raw += bytes.length; gz += z;
  const label = name.endsWith(".wasm") ? "index_bg.wasm" : name;
  console.log(`${label.padEnd(14)} ${(bytes.length / 1024).toFixed(1).padStart(9)} ${(z / 1024).toFixed(1).padStart(9)}`);
}
console.log(`${"bundle".padEnd(14)} ${(raw / 1024).toFixed(1).padStart(9)} ${(gz / 1024).toFixed(1).padStart(9)}`);
JS
