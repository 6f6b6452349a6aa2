"""The HTTP server (``python -m sglang.launch_server``) with our class and A13B parsers.

The tiny model's weights are random, so its free-running text is noise: to exercise the parsers
through the real serving path, the chat tests force decoding to A13B-format text with a custom
logit processor (conftest.forced_decoding); the engine still generates it token by token and
SGLang's serving layer runs our parsers on it, streaming and not. (A grammar ``regex`` cannot do
this: with a reasoning parser SGLang applies grammars only after ``</think>``.)
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import torch
from conftest import MAX_NEW_TOKENS, PROMPT_IDS, forced_decoding, post, post_stream

from hunyuan_plugins.core.model import generate, load_model

MESSAGES = [{"role": "user", "content": "Hello"}]
THINK = "<think>\nThe user greets me.\n</think>\n<answer>\nHello there.\n</answer>"
NO_THINK = "<think>\n\n</think>\n<answer>\nHello there.\n</answer>"  # A13B with thinking off
TOOL = '<answer>\n<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>\n</answer>'
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def _body(checkpoints, forced: str, **extra) -> dict:
    return {"model": "x", "messages": MESSAGES, "max_tokens": 200, "temperature": 0,
            **forced_decoding(checkpoints["a13b-tencent"], forced), **extra}


def _chat(base: str, checkpoints, forced: str, **extra) -> dict:
    return post(base + "/v1/chat/completions", _body(checkpoints, forced, **extra))


def test_generate_matches_reference(server, checkpoints):
    base, log = server
    out = post(base + "/generate", {"input_ids": PROMPT_IDS, "sampling_params": {
        "max_new_tokens": MAX_NEW_TOKENS, "temperature": 0, "ignore_eos": True}})
    ref = load_model(checkpoints["a13b-tencent"], torch.float32)
    assert out["output_ids"] == generate(ref, PROMPT_IDS, MAX_NEW_TOKENS)
    assert "served by hunyuan_plugins.sglang.model.HunYuanMoEV1ForCausalLM" in log.read_text()


def test_chat_thinking_on(server, checkpoints):
    base, _ = server
    msg = _chat(base, checkpoints, THINK, chat_template_kwargs={"enable_thinking": True})["choices"][0]["message"]
    assert msg["reasoning_content"] == "The user greets me."
    assert msg["content"] == "Hello there."  # <answer> tags stripped


def test_chat_thinking_on_streaming(server, checkpoints):
    base, _ = server
    chunks = post_stream(base + "/v1/chat/completions", _body(checkpoints, THINK))
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert reasoning.strip() == "The user greets me."
    assert content.strip() == "Hello there."
    assert "<" not in content + reasoning


def test_chat_thinking_off(server, checkpoints):
    base, _ = server
    msg = _chat(base, checkpoints, NO_THINK, chat_template_kwargs={"enable_thinking": False})["choices"][0]["message"]
    assert not msg.get("reasoning_content")
    assert msg["content"] == "Hello there."


def test_chat_tool_call_parsed(server, checkpoints):
    base, _ = server
    choice = _chat(base, checkpoints, TOOL, tools=TOOLS, tool_choice="auto")["choices"][0]
    calls = choice["message"]["tool_calls"]
    assert len(calls) == 1
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert not choice["message"].get("content")
    assert choice["finish_reason"] == "tool_calls"


def test_chat_tool_call_streaming(server, checkpoints):
    base, _ = server
    chunks = post_stream(base + "/v1/chat/completions", _body(checkpoints, TOOL, tools=TOOLS, tool_choice="auto"))
    calls = [tc for c in chunks if c.get("choices") for tc in (c["choices"][0]["delta"].get("tool_calls") or [])]
    assert [tc["function"].get("name") for tc in calls if tc["function"].get("name")] == ["get_weather"]
    args = "".join(tc["function"].get("arguments") or "" for tc in calls)
    assert json.loads(args) == {"city": "Paris"}


def test_32_concurrent_requests_complete(server):
    base, _ = server

    def one(i: int) -> dict:
        return post(base + "/generate", {"input_ids": PROMPT_IDS[: 3 + i % 7], "sampling_params": {
            "max_new_tokens": 4, "temperature": 0, "ignore_eos": True}})

    with ThreadPoolExecutor(32) as pool:
        outs = list(pool.map(one, range(32)))
    assert len(outs) == 32
    assert all(len(o["output_ids"]) == 4 for o in outs)
    assert all(o["meta_info"]["finish_reason"]["type"] == "length" for o in outs)
