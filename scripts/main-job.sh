#!/usr/bin/env bash
# The main job end to end on a fresh machine: install, build the example repository, serve it with
# a real Triton locally, validate the served answers, benchmark one model briefly, and stop.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
TSREPO=.venv/bin/tsrepo
HTTP_PORT=${HTTP_PORT:-8000} GRPC_PORT=${GRPC_PORT:-8001} METRICS_PORT=${METRICS_PORT:-8002}
REPORTS=${REPORTS:-reports}
mkdir -p "$REPORTS"

echo "== build"
$TSREPO build tsrepo.toml --out model_repository --force

echo "== serve"
$TSREPO serve --repo model_repository --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" \
  --metrics-port "$METRICS_PORT" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  if curl -fsS "http://127.0.0.1:$HTTP_PORT/v2/health/ready" >/dev/null 2>&1; then break; fi
  kill -0 $SERVER 2>/dev/null || { echo "tsrepo serve exited" >&2; exit 1; }
  sleep 0.5
done

echo "== validate (HTTP and gRPC)"
$TSREPO validate --repo model_repository --url "127.0.0.1:$HTTP_PORT" --json > "$REPORTS/validate-http.json"
$TSREPO validate --repo model_repository --url "127.0.0.1:$GRPC_PORT" --protocol grpc > /dev/null

echo "== bench din"
$TSREPO bench din --repo model_repository --url "127.0.0.1:$HTTP_PORT" --concurrency 1,4,16 --duration 6 \
  --json "$REPORTS/bench-din.json" --csv "$REPORTS/bench-din.csv" --plot "$REPORTS/bench-din.png"

echo "== reports in $REPORTS/: validate-http.json, bench-din.json, bench-din.csv, bench-din.png"
