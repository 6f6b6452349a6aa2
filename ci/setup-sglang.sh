#!/usr/bin/env bash
# SGLang 0.5.23 on CPU plus our package, in its own venv. Usage: bash ci/setup-sglang.sh -> $VENVS/sglang
#
# Recipe (docs/sglang.md): PyPI's torch 2.14.1 wheel (a CUDA build; it runs on CPU, and
# torchvision 0.29.1 needs it: the +cpu 2.13 wheel breaks torchvision), triton 3.8.0 (imported
# unconditionally by SGLang), then sglang==0.5.23 with --no-deps plus exactly the pure-python
# dependencies it imports (pinned below). A plain `pip install sglang` would pull flashinfer,
# sglang-kernel, cutlass-dsl, deep-ep..., CUDA-only packages that cannot work here; if any of them
# is present it is removed. SGLang's CUDA/Intel `sgl_kernel` extension is replaced in the tests
# by tests/sglang/stub_sgl_kernel (test-only, never installed here).
#
# Reuse: the venv counts as fresh when its stamp matches this script AND it still imports with the
# pinned versions. An existing venv without a stamp (e.g. built by hand) is brought to the pins
# (pip is a no-op for what already matches) and verified before it is stamped.
# Fresh build on this machine: ~6 GB, measured 4 min (233 s + the editable install); reuse: ~30 s.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
VENV="${SGLANG_VENV:-$VENVS/sglang}"

TORCH=("torch==2.14.1" "torchvision==0.29.1" "triton==3.8.0")
SGLANG="sglang==0.5.23"
# `pip freeze` of the working environment (minus torch, its nvidia-*/cuda-* wheels and sglang).
DEPS=(
  aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiosignal==1.4.0 annotated-doc==0.0.7 annotated-types==0.8.0
  anyio==4.16.0 apache-tvm-ffi==0.1.11 asttokens==3.0.2 attrs==26.1.0 certifi==2026.10.18
  cffi==2.1.1 charset-normalizer==3.5.2 click==8.5.1 compressed-tensors==0.18.0 dill==0.4.1 distro==1.9.0
  einops==0.8.2 executing==2.3.0 fastapi==0.165.0 filelock==4.2.11 frozenlist==1.8.0 fsspec==2026.9.0
  gguf==0.19.0 h11==0.16.0 hf-xet==1.8.0 httpcore==1.0.9 httpx==0.28.1 huggingface_hub==1.33.0 idna==3.20
  iniconfig==2.3.1 interegular==0.3.3 ipython==9.18.1 ipython_pygments_lexers==1.1.1 jedi==0.20.1
  Jinja2==3.1.6 jiter==0.19.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 loguru==0.7.3
  markdown-it-py==4.3.0 MarkupSafe==3.0.4 matplotlib-inline==0.2.2 mdurl==0.1.2 mpmath==1.3.0
  msgspec==0.22.0 multidict==7.2.1 networkx==3.6.1 numpy==2.4.6 openai==2.8.0 opentelemetry-api==1.45.2
  orjson==3.13.0 packaging==26.3 parso==0.8.7 partial-json-parser==0.2.1.1.post7 pexpect==4.9.0
  pillow==13.0.0 pluggy==1.7.0 prometheus_client==0.26.0 prompt_toolkit==3.0.53 propcache==0.5.4
  psutil==7.2.2 ptyprocess==0.7.0 pure_eval==0.2.4 pybase64==1.5.1 pycparser==3.12 pydantic==2.14.3 pydantic_core==2.50.4
  Pygments==2.21.0 pytest==9.2.0 python-dateutil==2.9.0.post0 python-multipart==0.0.34 PyYAML==6.0.3
  pyzmq==27.3.0 referencing==0.37.0 regex==2026.11.15 requests==2.34.2 rich==15.0.0 rpds-py==2026.9.1
  safetensors==0.8.0 sentencepiece==0.2.1 setproctitle==1.3.8 shellingham==1.5.4 six==1.17.0
  sniffio==1.3.1 soundfile==0.13.1 stack-data==0.6.3 starlette==1.10.0 sympy==1.14.0 tokenizers==0.23.2 tqdm==4.70.1
  traitlets==5.16.1 transformers==5.19.0 typer==0.29.2 typing-inspection==0.4.5 typing_extensions==4.16.0
  tzdata==2026.6 urllib3==2.8.0 uvicorn==0.54.0 uvloop==0.23.0 watchfiles==1.3.0 wcwidth==0.9.4
  xgrammar==0.2.7 xxhash==4.1.0 yarl==1.25.1 zstandard==0.25.0
)
# CUDA-only packages that a dependency-resolving install would bring; they break import on CPU.
CUDA_ONLY=(sglang-kernel sgl-kernel flashinfer-python flashinfer-cubin flashinfer-jit-cache
           nvidia-cutlass-dsl deep-ep torchaudio torchcodec vllm)

verify() {  # imports SGLang's CPU path with the pinned versions (the stub stands in for sgl_kernel)
  PYTHONPATH="$ROOT/tests/sglang/stub_sgl_kernel" SGLANG_USE_CPU_ENGINE=1 "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md, sys
want = {"sglang": "0.5.23", "torch": "2.14.1", "torchvision": "0.29.1", "triton": "3.8.0",
        "transformers": "5.19.0"}
bad = {k: md.version(k) for k in want if md.version(k).split("+")[0] != want[k]}
if bad:
    sys.exit(f"[setup-sglang] wrong versions: {bad}")
import torch, torchvision, sglang  # noqa: F401  (torchvision: sglang.srt.configs imports it)
import sglang.srt.entrypoints.engine, sglang.srt.entrypoints.http_server  # noqa: F401,E401
import sglang.srt.managers.scheduler, sglang.srt.model_executor.model_runner  # noqa: F401,E401
EOF
}

fresh=0
if venv_fresh "$VENV" ci/setup-sglang.sh && verify >/dev/null 2>&1; then
  fresh=1
fi
if [ "$fresh" = 0 ]; then
  t0=$(date +%s)
  echo "[setup-sglang] building/repairing $VENV (fresh: ~6 GB of wheels, several minutes)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  pip_q "$VENV" "${TORCH[@]}" "${DEPS[@]}"
  pip_q "$VENV" --no-deps "$SGLANG"
  present=$("$VENV/bin/pip" list --format=freeze 2>/dev/null | cut -d= -f1 | tr 'A-Z_' 'a-z-')
  for p in "${CUDA_ONLY[@]}"; do
    if grep -qx "$p" <<<"$present"; then
      echo "[setup-sglang] removing CUDA-only $p"; "$VENV/bin/pip" uninstall -q -y "$p"
    fi
  done
  verify
  venv_stamp "$VENV" ci/setup-sglang.sh
  echo "[setup-sglang] environment ready in $(( $(date +%s) - t0 )) s"
fi
pip_q "$VENV" -e . --no-deps
echo "[setup-sglang] ready: $VENV"
