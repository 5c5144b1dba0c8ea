#!/usr/bin/env bash
# Create .venv with torch (CPU build, installed first so nothing pulls a CUDA build) and the project.
# Says what it is doing (the first install takes minutes); pip's own output goes to .venv/setup.log and is shown
# only when a step fails. A second run with unchanged pyproject.toml and this script returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
LOG=.venv/setup.log
STAMP=.venv/.setup-done

say() { printf 'setup: %s\n' "$*"; }
fingerprint() { cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16; }

if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(fingerprint)" ] \
    && .venv/bin/python -c "import data_prep, partner_kit, consortium" 2>/dev/null; then
  say ".venv is up to date (rm $STAMP to reinstall)"
  exit 0
fi

step() {  # step "what it does" cmd...: one line before, the seconds after, pip's output only on failure
  local what=$1 t0=$SECONDS
  shift
  say "$what ..."
  if ! "$@" >>"$LOG" 2>&1; then
    echo "setup failed while: $what; last lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
  say "  done ($((SECONDS - t0)) s)"
}

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
: >"$LOG"
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
step "upgrading pip" "${PIP[@]}" --upgrade pip
step "installing torch 2.13.0, CPU build (the largest download: minutes the first time)" "${PIP[@]}" torch==2.13.0
# setuptools reports every editable install with an "Editable installation" notice (all three editable modes
# do; `compat` adds a deprecation warning): it lands in the log, not on the screen.
step "installing fedqsar (editable) with RDKit, Flower and the test tools" "${PIP[@]}" -e ".[test]"
step "checking that torch, RDKit, Flower and the three packages import" \
  .venv/bin/python -c "import torch, rdkit, flwr, data_prep, partner_kit, consortium"
fingerprint >"$STAMP"
say "ready: activate with 'source .venv/bin/activate' (or call .venv/bin/data-prep, partner-kit, consortium)"
