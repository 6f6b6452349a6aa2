#!/usr/bin/env bash
# The main job on the built-in default (README): a tiny generated Hunyuan-A13B checkpoint
# answers a chat request. Extra arguments go to `hunyuan-plugins chat`.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
bash ci/setup-dev.sh >&2
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$VENVS/dev/bin/hunyuan-plugins" chat "$@"
