#!/usr/bin/env bash
# How many sessions one `duplex serve` holds: a fresh server per N, then the
# benchmark with N concurrent sessions over /v1/stream, 54 scenarios (12 per category;
# PER_CATEGORY=n for more or fewer). Reports go to out/load/nN.
# Usage: benchmarks/load.sh [N ...]   (default: 1 2 3 4 6)
set -euo pipefail
cd "$(dirname "$0")/.."
duplex=${DUPLEX:-.venv/bin/duplex}
mkdir -p out/load
[ $# -gt 0 ] || set -- 1 2 3 4 6
for n in "$@"; do
  port=$((8800 + n))
  "$duplex" serve --port "$port" --max-sessions $((n + 1)) > "out/load/serve-$n.log" 2>&1 &
  server=$!
  for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break; sleep 1; done
  "$duplex" bench --server "ws://127.0.0.1:$port/v1/stream" --sessions "$n" --policies duplex \
    --per-category "${PER_CATEGORY:-12}" --out "out/load/n$n" > "out/load/n$n.md"
  kill "$server"; wait "$server" 2> /dev/null || true
  sed -n '7p' "out/load/n$n.md"; grep '^Server' "out/load/n$n.md"
done
