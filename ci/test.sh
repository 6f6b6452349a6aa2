#!/usr/bin/env bash
# The project's test command (README): builds/reuses the environments, runs every suite.
#   bash ci/test.sh            everything
#   bash ci/test.sh core       core + kernels only (no engine environments)
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
what="${1:-all}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Triton kernels run in Triton's interpreter here (no GPU in CI); must be set before triton loads.
command -v nvidia-smi >/dev/null || export TRITON_INTERPRET=1
# pytest exits 5 when it collects nothing: that fails this script like any other non-zero exit.
PYTEST=(-m pytest -q -p no:cacheprovider)

bash ci/setup-dev.sh
# lint first (ruff, pinned in the dev extra; config in pyproject.toml): a finding fails the run
"$VENVS/dev/bin/ruff" check .
"$VENVS/dev/bin/python" "${PYTEST[@]}" tests --ignore=tests/vllm --ignore=tests/sglang

if [ "$what" = "all" ] && [ -d tests/vllm ]; then
  bash ci/setup-vllm.sh
  "$VENVS/vllm/bin/python" "${PYTEST[@]}" tests/vllm
fi

if [ "$what" = "all" ] && [ -d tests/sglang ]; then
  bash ci/setup-sglang.sh
  "$VENVS/sglang/bin/python" "${PYTEST[@]}" tests/sglang
fi
