#!/usr/bin/env bash
# The project's test command (README): builds/reuses the environments, runs every suite.
#   bash ci/test.sh            everything
#   bash ci/test.sh core       core + kernels only (no engine environments)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Triton kernels run in Triton's interpreter here (no GPU in CI); must be set before triton loads.
command -v nvidia-smi >/dev/null || export TRITON_INTERPRET=1

bash ci/setup-dev.sh
# pytest exits 5 when it collects nothing: that is a failure here, like any non-zero exit.
.venv/bin/python -m pytest tests --ignore=tests/vllm -q -p no:cacheprovider

if [ "$what" = "all" ] && [ -d tests/vllm ]; then
  bash ci/setup-vllm.sh
  .venv-vllm/bin/python -m pytest tests/vllm -q -p no:cacheprovider
fi
