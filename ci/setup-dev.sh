#!/usr/bin/env bash
# The core/test environment: torch 2.13.0 CPU (the wheel on local disk), transformers, triton.
# Reused when present and up to date. Usage: bash ci/setup-dev.sh  -> $VENVS/dev
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
VENV="${DEV_VENV:-$VENVS/dev}"
if ! venv_fresh "$VENV" pyproject.toml ci/setup-dev.sh; then
  echo "[setup-dev] building $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  # torch first, pinned: 2.13.0 is the CPU wheel on this machine's disk (a bare 'torch' pulls CUDA builds)
  pip_q "$VENV" "torch==2.13.0"
  pip_q "$VENV" -e ".[dev]"
  venv_stamp "$VENV" pyproject.toml ci/setup-dev.sh
fi
# Always (cheap): the editable install must point at *this* checkout, not one CI cloned earlier.
pip_q "$VENV" -e . --no-deps
echo "[setup-dev] ready: $VENV"
