#!/usr/bin/env bash
# Creates .venv and installs tsrepo with its test extras. Idempotent; sourced by the other scripts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch is pinned exactly in pyproject.toml (an unpinned torch pulls a multi-GB CUDA build).
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, tsrepo; print('tsrepo', tsrepo.__version__, 'torch', torch.__version__)"
