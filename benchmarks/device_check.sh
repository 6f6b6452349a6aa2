#!/usr/bin/env bash
# Every GPU figure in one command, well under 8 minutes on an H100/H200, into $OUT (<= 8 files):
#   device_check.log           environment, each step's output, time and exit status
#   moe_layer-<device>-*.md/.json   the MoE layer benchmark at A13B shape (ours vs torch._grouped_mm
#                              and the extracted vLLM/SGLang Triton kernels; µs, % roofline, ratios)
#   moe_up.json, moe_down.json the decode tile sweep (T <= 64); commit into
#                              kernels/hunyuan_plugins_kernels/configs/ together with the table
#
#   bash benchmarks/device_check.sh            # on the GPU machine (OUT=... or $OUT, else /tmp/...)
#   bash benchmarks/device_check.sh --check    # rehearsal on CPU: same steps, tiny shapes, interpreter
#
# Needs only the repository and the git-ignored _peers/ that benchmarks/prepare_device.sh fills on a
# machine with the engines' venvs (extracted peer kernels; pure-python wheels for pytest, unpacked
# here only when the machine has no pytest). Nothing is installed: src/ and kernels/ go on PYTHONPATH.
# Every step runs under its own time limit and the script goes on after a failed step; the exit
# status is non-zero when any step failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1
PY="${PYTHON:-python3}"
OUT="${OUT:-/tmp/hunyuan-device-check}"
rm -rf "$OUT"/device_check.log "$OUT"/moe_layer-* "$OUT"/moe_up.json "$OUT"/moe_down.json
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
: > "$LOG"
PYLIB="$(mktemp -d /tmp/hunyuan-pylib.XXXXXX)"
trap 'rm -rf "$PYLIB"' EXIT
export PYTHONPATH="$ROOT/src:$ROOT/kernels:$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$CHECK" = 1 ]; then
  export TRITON_INTERPRET=1 HUNYUAN_TRITON_ON_CPU=1
fi

log() { echo "$*" | tee -a "$LOG"; }
failed=0
step() {  # step NAME LIMIT_S CMD...: run with a time limit, log output and status, never abort
  local name="$1" limit="$2"; shift 2
  log "## $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  log "## $name: exit $rc after $((SECONDS - t0))s"
  [ "$rc" = 0 ] || failed=1
}

log "# device_check $( [ "$CHECK" = 1 ] && echo '--check (CPU rehearsal: tiny shapes, interpreter, no timing)') $(date -u +%FT%TZ)"
log "# git $(git rev-parse HEAD 2>/dev/null || echo '?')$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo +dirty)"
"$PY" - >> "$LOG" 2>&1 <<'PYEOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton; print("triton", triton.__version__)
except ImportError as e:
    print("triton missing:", e)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", torch.cuda.get_device_name(0), "SMs", p.multi_processor_count, "GiB", round(p.total_memory / 2**30))
PYEOF
if ! "$PY" -c "import pytest" 2>/dev/null; then
  if ls _peers/wheels/*.whl >/dev/null 2>&1; then
    for w in _peers/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$PYLIB"; done
    log "# pytest: unpacked from _peers/wheels"
  else
    log "# pytest missing and no _peers/wheels (run benchmarks/prepare_device.sh): kernel tests will fail"
  fi
fi

if [ "$CHECK" = 1 ]; then
  step "kernel tests (interpreter)" 300 "$PY" -m pytest -q -p no:cacheprovider --noconftest tests/kernels
  peers=(); [ -d _peers ] && peers=(--peers-dir _peers)
  step "moe layer benchmark (--check)" 300 "$PY" benchmarks/moe_layer.py --check --tokens 1,33 "${peers[@]}" --out "$OUT"
  step "decode tile sweep (--check)" 300 "$PY" benchmarks/tune_moe.py --check --tokens 1,8 --out "$OUT"
else
  # the benchmark's own --check test re-runs the interpreter, which the GPU machine's numpy may break
  step "kernel tests (CUDA, bf16 included)" 150 "$PY" -m pytest -q -p no:cacheprovider --noconftest tests/kernels \
    -k "not test_check_mode"
  step "moe layer benchmark" 200 "$PY" benchmarks/moe_layer.py --peers-dir _peers --inter 3072,384 \
    --tokens 1,8,64,256,1024,4096 --replays 30 --out "$OUT"
  step "decode tile sweep" 130 "$PY" benchmarks/tune_moe.py --grid small --dtypes bf16,fp8,int4 --inter 3072 \
    --tokens 1,8,64 --replays 10 --budget-s 100 --out "$OUT"
fi

n=$(find "$OUT" -maxdepth 1 -type f | wc -l)
log "# $n files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
if [ "$n" -gt 8 ]; then log "# more than 8 files in $OUT (the device returns at most 8): empty it first"; failed=1; fi
log "# device_check: $( [ "$failed" = 0 ] && echo 'all steps passed' || echo 'FAILED (see the steps above)')"
exit "$failed"
