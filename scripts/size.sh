#!/usr/bin/env bash
# Prints the size of what `wrangler deploy` would upload (raw and gzip), from a dry run that
# bundles exactly the deployable files into dist/ without an account, and fails when the gzip
# size of the bundle is over the budget below (docs/performance.md says why this figure).
set -euo pipefail

# The budget: gzip KiB of the bundle (worker JS + wasm, gzip -9). The free plan's limit is 3 MB
# compressed; the budget is far tighter so that cold starts stay fast and growth is noticed.
# (The environment may set another one, to try the check.)
BUNDLE_GZIP_BUDGET_KIB=${BUNDLE_GZIP_BUDGET_KIB:-510}

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
node - dist "$BUNDLE_GZIP_BUDGET_KIB" <<'JS'
const fs = require("node:fs");
const path = require("node:path");
const zlib = require("node:zlib");
const dir = process.argv[2];
const budgetKib = Number(process.argv[3]);
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
const used = gz / 1024;
if (!(budgetKib > 0)) {
  console.error(`size: the budget must be a positive number of KiB, not '${process.argv[3]}'`);
  process.exit(2);
}
if (used > budgetKib) {
  console.error(
    `size: the bundle is ${used.toFixed(1)} KiB gzip, over its budget of ${budgetKib} KiB ` +
      `(BUNDLE_GZIP_BUDGET_KIB in scripts/size.sh; see docs/performance.md)`,
  );
  process.exit(1);
}
console.log(`gzip budget    ${budgetKib.toFixed(1).padStart(19)} KiB: ${(budgetKib - used).toFixed(1)} KiB left`);
JS
