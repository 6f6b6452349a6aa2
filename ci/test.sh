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

# Kernels ahead of time for the GPUs (no GPU needed; TRITON_INTERPRET must be unset): every shipped
# tile config of every kernel compiled for sm_90a (fails on a compile error, a spill or too much
# shared memory), sm_89 and sm_100a, with each Triton we support (supported range: pyproject's
# `kernels` extra). The dev venv's report is printed in full.
REPORTS="${TMPDIR:-/tmp}/hunyuan-ci-reports"
compile_report() {  # compile_report NAME PYTHON [ARGS...]
  local name="$1" py="$2"; shift 2
  env -u TRITON_INTERPRET "$py" -m hunyuan_plugins_kernels.compile_report --out "$REPORTS/$name" "$@"
}
compile_report triton-dev "$VENVS/dev/bin/python"
OVERLAY="$(bash ci/setup-triton-overlay.sh)"  # Triton 3.6.0, the GPU machine's
PYTHONPATH="$OVERLAY" compile_report triton-3.6.0 "$VENVS/dev/bin/python" --targets sm_90a > /dev/null

if [ "$what" = "all" ] && [ -d tests/vllm ]; then
  bash ci/setup-vllm.sh
  "$VENVS/vllm/bin/python" "${PYTEST[@]}" tests/vllm
  "$VENVS/vllm/bin/python" "${PYTEST[@]}" tests/kernels  # vLLM's Triton
  compile_report triton-vllm "$VENVS/vllm/bin/python" --targets sm_90a > /dev/null
fi

if [ "$what" = "all" ] && [ -d tests/sglang ]; then
  bash ci/setup-sglang.sh
  "$VENVS/sglang/bin/python" "${PYTEST[@]}" tests/sglang
  "$VENVS/sglang/bin/python" "${PYTEST[@]}" tests/kernels  # SGLang's Triton
  compile_report triton-sglang "$VENVS/sglang/bin/python" --targets sm_90a > /dev/null
fi

# Rehearsal of the GPU machine's script on CPU, under its Triton (3.6.0): kernel tests, the MoE
# layer benchmark (with the vLLM/SGLang peer kernels extracted from their venvs when built) and the
# tile sweep, at tiny shapes in the interpreter.
if [ "$what" = "all" ]; then bash benchmarks/prepare_device.sh; fi
PYTHONPATH="$OVERLAY" PYTHON="$VENVS/dev/bin/python" OUT="$REPORTS/device-check" \
  bash benchmarks/device_check.sh --check
