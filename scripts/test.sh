#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# The compose tests validate docker/ with Debian's docker-compose (works without a Docker engine).
if ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) >/dev/null
  else
    echo "docker-compose is missing: sudo apt-get install docker-compose" >&2
  fi
fi
.venv/bin/ruff check src tests benchmarks examples
exec .venv/bin/python -m pytest "$@"
