#!/usr/bin/env bash
# Sets everything up and runs the router locally: `wrangler dev` on workerd, listening on
# 127.0.0.1 (PORT, default 8787), local state under .wrangler/state. Extra arguments go to
# wrangler.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh

port="${PORT:-8787}"
if [ ! -f .dev.vars ]; then
  step "no .dev.vars: the router starts; requests answer 503 and its log names the secret to set"
  echo "    cp .dev.vars.example .dev.vars   # then put your provider keys in it"
fi
step "starting the router on http://127.0.0.1:$port (Ctrl-C stops it); try:"
echo "    curl http://127.0.0.1:$port/v1/chat/completions -H 'content-type: application/json' \\"
echo "      -H 'authorization: Bearer sk-local-dev' \\"
echo "      -d '{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'"
exec wrangler dev --ip 127.0.0.1 --port "$port" --persist-to .wrangler/state "$@"
