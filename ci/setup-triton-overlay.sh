#!/usr/bin/env bash
# Triton 3.6.0, the GPU machine's version (as last seen), as a PYTHONPATH overlay on the dev venv:
# the kernel tests, the device script's rehearsal and the sm_90a compile report run against it too
# (the engines' venvs bring 3.9.0 for vLLM and 3.8.0 for SGLang, the dev venv pins 3.7.1).
# numpy < 2.3 in the overlay: Triton 3.6's interpreter turns 1-element arrays into loop bounds with
# int(), which NumPy >= 2.3 rejects ("only 0-dimensional arrays can be converted").
# Usage: bash ci/setup-triton-overlay.sh  -> prints the overlay directory (reused when up to date)
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
DIR="$VENVS/triton-3.6.0"
want="$(sha256sum ci/setup-triton-overlay.sh | cut -d' ' -f1)"
if [ "$(cat "$DIR/.stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$DIR"
  pip_q "$VENVS/dev" --no-deps --target "$DIR" "triton==3.6.0" "numpy<2.3" >&2
  echo "$want" > "$DIR/.stamp"
fi
echo "$DIR"
