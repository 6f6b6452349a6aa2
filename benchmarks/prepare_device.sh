#!/usr/bin/env bash
# Run here, before a device session: fills the git-ignored _peers/ that benchmarks/device_check.sh
# needs on the GPU machine (which has torch and triton but no package index):
#   _peers/vllm_fused_moe.py, _peers/sglang_fused_moe.py  the peers' @triton.jit fused-MoE kernels,
#       extracted from the engine venvs ci/setup-{vllm,sglang}.sh built (third-party: never commit)
#   _peers/wheels/*.whl  pure-python wheels of pytest and what it needs (unpacked there only when
#       the machine lacks pytest)
set -euo pipefail
source "$(dirname "$0")/../ci/_venv.sh"
cd "$ROOT"
mkdir -p _peers/wheels
site() { "$VENVS/$1/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
"$VENVS/dev/bin/python" benchmarks/extract_peers.py vllm \
  "$(site vllm)/vllm/model_executor/layers/fused_moe/fused_moe.py"
"$VENVS/dev/bin/python" benchmarks/extract_peers.py sglang \
  "$(site sglang)/sglang/kernels/ops/moe/fused_moe_triton_kernels.py"
"$VENVS/dev/bin/pip" download -q --only-binary=:all: --no-deps --dest _peers/wheels \
  pytest pluggy iniconfig packaging 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
du -sh _peers
