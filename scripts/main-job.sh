#!/usr/bin/env bash
# The main job end to end on a fresh machine: install, build the example repository.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/tsrepo build tsrepo.toml --out model_repository --force
