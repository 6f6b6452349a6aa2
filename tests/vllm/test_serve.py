"""`python -m vllm.entrypoints.openai.api_server` with our plugin, on 127.0.0.1, tiny A13B (fp32).

A random tiny model does not write ``<think>`` or ``<tool_calls>`` by itself, so the parser tests
constrain its output with vLLM's structured outputs (a regex matching one exact text; applied
inside the reasoning too, ``enable_in_reasoning``): the text then goes through the server's real
reasoning and tool-call parsing, streaming and not. The server is always stopped (its process
group, which this fixture created) — also when a test fails.
"""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

MODEL = "tiny-hunyuan"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    path = tiny("a13b", "tencent", "fp32")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path,
           "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--enforce-eager", "--max-model-len", "1024", "--max-num-seqs", "32", "--seed", "0",
           "--reasoning-parser", "hunyuan_a13b", "--enable-auto-tool-choice", "--tool-call-parser", "hunyuan_a13b",
           "--structured-outputs-config", json.dumps({"enable_in_reasoning": True})]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 400
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log_path.read_text()[-5000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after 400 s:\n{log_path.read_text()[-5000:]}")
            time.sleep(1)
        yield {"base": base, "log": log_path, "proc": proc}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this fixture started: server, engine, workers
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _forced(text: str) -> dict:
    """Request fields that make the model write exactly `text`."""
    return {"structured_outputs": {"regex": re.escape(text)}, "max_tokens": 400}


def chat(server, content: str, **kw) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": 16, **kw}
    r = httpx.post(f"{server['base']}/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def stream_chat(server, content: str, **kw) -> tuple[dict, list[dict]]:
    """Streams one chat completion; returns the joined message fields and the raw chunks."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}, **kw}
    joined = {"reasoning": "", "content": "", "tool_calls": []}
    chunks = []
    with httpx.stream("POST", f"{server['base']}/v1/chat/completions", json=body, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            chunks.append(chunk)
            for choice in chunk.get("choices", []):
                delta = choice["delta"]
                joined["reasoning"] += delta.get("reasoning") or ""
                joined["content"] += delta.get("content") or ""
                joined["tool_calls"] += delta.get("tool_calls") or []
    return joined, chunks


def test_our_class_serves(server):
    log = server["log"].read_text()
    assert "hunyuan_plugins: HunYuanMoEV1ForCausalLM (4 layers" in log
    models = httpx.get(f"{server['base']}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [MODEL]


def test_chat_thinking_off_appends_empty_think_block(server):
    on = chat(server, "What is the weather in Beijing?")
    off = chat(server, "What is the weather in Beijing?", chat_template_kwargs={"enable_thinking": False})
    # the template closes an empty think block for the model (5 more prompt tokens or so)
    assert off["usage"]["prompt_tokens"] > on["usage"]["prompt_tokens"]
    for r in (on, off):
        assert r["usage"]["completion_tokens"] > 0
        assert r["choices"][0]["message"]["content"] or r["choices"][0]["message"]["reasoning"]


THOUGHT = "<think>\nThe user asks about Beijing.\n</think>\n<answer>\nIt is sunny in Beijing.\n</answer>"
NO_THOUGHT = "<think>\n\n</think>\n<answer>\nSunny.\n</answer>"
TOOL = ('<think>\nI need the weather tool. <tool_calls>[{"name": "ignored", "arguments": {}}]</tool_calls>\n'
        '</think>\n<answer>\n<tool_calls>[{"name": "get_weather", "arguments": {"city": "Beijing"}}]'
        '</tool_calls>\n</answer>')


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_reasoning_is_separated_and_answer_tags_stripped(server, stream):
    if stream:
        msg, _ = stream_chat(server, "What is the weather in Beijing?", **_forced(THOUGHT))
    else:
        msg = chat(server, "What is the weather in Beijing?", **_forced(THOUGHT))["choices"][0]["message"]
    assert msg["reasoning"] == "The user asks about Beijing."
    assert msg["content"] == "It is sunny in Beijing."


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_no_think_gives_answer_only(server, stream):
    kw = {"chat_template_kwargs": {"enable_thinking": False}, **_forced(NO_THOUGHT)}
    if stream:
        msg, _ = stream_chat(server, "/no_think What is the weather in Beijing?", **kw)
    else:
        msg = chat(server, "/no_think What is the weather in Beijing?", **kw)["choices"][0]["message"]
    assert not msg["reasoning"]
    assert msg["content"] == "Sunny."


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tool_call_parsed_outside_think_only(server, stream):
    kw = {"tools": TOOLS, **_forced(TOOL)}
    if stream:
        msg, chunks = stream_chat(server, "What is the weather in Beijing?", **kw)
        calls = [c["function"] for c in msg["tool_calls"]]
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")][-1]
    else:
        resp = chat(server, "What is the weather in Beijing?", **kw)
        msg, finish = resp["choices"][0]["message"], resp["choices"][0]["finish_reason"]
        calls = [c["function"] for c in msg["tool_calls"]]
    assert [c["name"] for c in calls] == ["get_weather"]  # the call inside <think> is not a call
    assert json.loads(calls[0]["arguments"]) == {"city": "Beijing"}
    assert finish == "tool_calls"
    assert "<tool_calls>" not in (msg["content"] or "")
    assert "ignored" in msg["reasoning"]


def test_32_concurrent_streams_and_disconnects(server):
    n_tokens = 12

    async def full(client, i):
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"Request {i}: count to ten."}],
                "max_tokens": n_tokens, "ignore_eos": True, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        usage, pieces = None, 0
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    usage = chunk.get("usage") or usage
                    pieces += sum(1 for c in chunk.get("choices", []) if c["delta"].get("content")
                                  or c["delta"].get("reasoning"))
        return usage, pieces

    async def dropped(client, i):
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"Dropped {i}"}],
                "max_tokens": 400, "ignore_eos": True, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    return  # hang up mid-stream

    async def main():
        async with httpx.AsyncClient(base_url=server["base"], timeout=600) as client:
            return await asyncio.gather(*[full(client, i) for i in range(32)],
                                        *[dropped(client, i) for i in range(8)])

    results = asyncio.run(main())[:32]
    for usage, pieces in results:
        assert usage["completion_tokens"] == n_tokens
        assert 0 < pieces <= n_tokens
    # the server survived the hang-ups: aborted requests are gone and it still answers
    deadline = time.monotonic() + 60
    while True:
        metrics = httpx.get(f"{server['base']}/metrics", timeout=10).text
        running = sum(float(m) for m in re.findall(r"^vllm:num_requests_running\{[^}]*\} (\S+)", metrics, re.M))
        if running == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert running == 0, "requests of disconnected clients are still running"
    assert server["proc"].poll() is None
    assert chat(server, "Still there?")["usage"]["completion_tokens"] > 0
