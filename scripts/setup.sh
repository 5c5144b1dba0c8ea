#!/usr/bin/env bash
# Create .venv with torch (CPU build, installed first so nothing pulls a CUDA build) and the project.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import torch, rdkit, flwr, data_prep, partner_kit, consortium" \
  || { echo "setup failed: see pip output above" >&2; exit 1; }
