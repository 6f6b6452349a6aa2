"""``make-tiny --trained``: a tiny Hunyuan-A13B-shaped MoE trained on CPU to Hunyuan's reply format.

A toy, not a capable model: it has memorised a handful of conversations written for this project
(:data:`CONVERSATIONS`) in Hunyuan's chat format -- thinking on (``<think>...</think>`` then
``<answer>...</answer>``), thinking off, and a weather question answered with a tool call
(``<tool_calls>[...]</tool_calls>``) -- so that an engine serving it shows what the real model's
output looks like to its parsers: reasoning split from the content, a parsed tool call. Asked
anything else it answers something in that format, usually nonsense.

Training is deterministic (seeded init, full-batch AdamW, fixed step budget) and takes about a
minute on 2 CPU cores. It runs the reference core's own forward; only the two MoE ops are swapped
for their torch references for the backward pass (``torch.ops.hunyuan`` ops have no autograd).
It stops when every reply token is the greedy choice by a margin of :data:`MARGIN` logits, so
an engine's slightly different fp32 rounding cannot change a greedy reply.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time

import torch
import torch.nn.functional as F

from hunyuan_plugins import ops
from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.ops import reference

#: The tool the weather conversations offer, exactly as an OpenAI client sends it (and as vLLM's
#: and SGLang's chat renderers pass it to the chat template).
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}

#: The default question of ``ci/demo.sh`` and what the model answers to it.
DEMO_QUESTION = "What is the weather in Beijing?"


def _weather(city: str) -> tuple[dict, str]:
    return ({"messages": [{"role": "user", "content": f"What is the weather in {city}?"}], "tools": [WEATHER_TOOL]},
            f"<think>\nThe user asks about the weather in {city}. I should call the get_weather tool.\n</think>\n"
            f'<answer>\n<tool_calls>[{{"name": "get_weather", "arguments": {{"location": "{city}"}}}}]</tool_calls>\n'
            "</answer>")


#: (chat-template arguments, the reply) pairs the toy memorises.
CONVERSATIONS: list[tuple[dict, str]] = [
    _weather("Beijing"),
    _weather("Shanghai"),
    ({"messages": [{"role": "user", "content": "What is the weather in Beijing?"},
                   {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
                       "name": "get_weather", "arguments": {"location": "Beijing"}}}]},
                   {"role": "tool", "content": '{"temperature": 25, "condition": "sunny"}'}],
      "tools": [WEATHER_TOOL]},
     "<think>\nThe tool says it is sunny and 25 degrees.\n</think>\n"
     "<answer>\nThe weather in Beijing is sunny today, with a high of 25 degrees.\n</answer>"),
    ({"messages": [{"role": "user", "content": "Hello! Who are you?"}]},
     "<think>\nThe user greets me and asks who I am.\n</think>\n"
     "<answer>\nHello! I am a tiny Hunyuan model. I was trained to show the format, not to be smart.\n</answer>"),
    ({"messages": [{"role": "user", "content": "Hello! Who are you?"}], "enable_thinking": False},
     "<answer>\nHello! I am a tiny Hunyuan model.\n</answer>"),
    ({"messages": [{"role": "user", "content": "What is 2 + 3 * 4?"}]},
     "<think>\nMultiply first: 3 * 4 = 12. Then 2 + 12 = 14.\n</think>\n<answer>\nThe answer is 14.\n</answer>"),
    ({"messages": [{"role": "user", "content": "What is 2 + 3 * 4?"}], "enable_thinking": False},
     "<answer>\nThe answer is 14.\n</answer>"),
]

#: Logit margin of every reply token over the runner-up when training stops.
MARGIN = 2.0
MAX_STEPS = 1500
#: Bump when the training recipe changes (a cached toy with another fingerprint is retrained).
RECIPE = 1


def fingerprint() -> str:
    """Short hash of what defines the toy: the conversations, the margin and the recipe."""
    blob = json.dumps([CONVERSATIONS, MARGIN, RECIPE], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


@contextlib.contextmanager
def _differentiable_moe():
    """The MoE ops' torch references (the same math, differentiable) in place of the custom ops."""
    saved = ops.moe_route, ops.moe_experts
    ops.moe_route, ops.moe_experts = reference.route, reference.expert_mlp
    try:
        yield
    finally:
        ops.moe_route, ops.moe_experts = saved


def encode(tokenizer, conversation: dict, reply: str, eos_id: int) -> tuple[list[int], list[int]]:
    """(prompt ids as the chat template renders them, reply ids + eos)."""
    kwargs = {k: v for k, v in conversation.items() if k != "messages"}
    prompt = tokenizer.apply_chat_template(conversation["messages"], tokenize=False, add_generation_prompt=True,
                                           **kwargs)
    return (tokenizer(prompt, add_special_tokens=False)["input_ids"],
            tokenizer(reply, add_special_tokens=False)["input_ids"] + [eos_id])


def train(model, examples: list[tuple[list[int], list[int]]], seed: int = 0, log=print) -> dict:
    """Full-batch AdamW on the reply tokens until every one is the greedy choice by MARGIN."""
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    batch = [(torch.tensor([p + r[:-1]]), torch.tensor(r), len(p)) for p, r in examples]
    start, step, worst = time.monotonic(), 0, float("-inf")
    model.train()
    with _differentiable_moe():
        for step in range(1, MAX_STEPS + 1):
            opt.zero_grad()
            loss, worst = 0.0, float("inf")
            for ids, target, n_prompt in batch:
                logits = model(ids)[0, n_prompt - 1:]
                loss = loss + F.cross_entropy(logits, target, reduction="sum")
                right = logits.gather(1, target[:, None]).squeeze(1)
                others = logits.scatter(1, target[:, None], float("-inf")).amax(1)
                worst = min(worst, float((right - others).min().detach()))
            if worst >= MARGIN:
                break
            loss.backward()
            opt.step()
            if step % 100 == 0:
                log(f"[trained] step {step}: loss {float(loss):.3f}, worst margin {worst:.2f}")
    model.eval()
    if worst < MARGIN:
        raise RuntimeError(f"training did not reach a margin of {MARGIN} in {MAX_STEPS} steps (worst {worst:.2f})")
    return {"steps": step, "seconds": round(time.monotonic() - start, 1), "worst_margin": round(worst, 2)}


def canonical_weights(model) -> dict[str, torch.Tensor]:
    """The reference model's parameters -> canonical per-expert fp32 weights (checkpoint.py names)."""
    cfg: HunyuanConfig = model.cfg
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach().float()
        if name.endswith("mlp.experts.w13") or name.endswith("mlp.experts.w2"):
            continue
        out[name] = t
    for i, spec in enumerate(cfg.layers):
        if not spec.moe:
            continue
        experts = model.model.layers[i].mlp.experts
        inter = experts.w2.shape[-1]
        for e in range(cfg.num_experts):
            p = f"model.layers.{i}.mlp.experts.{e}"
            out[f"{p}.gate_proj.weight"] = experts.w13[e, :inter].detach().float()
            out[f"{p}.up_proj.weight"] = experts.w13[e, inter:].detach().float()
            out[f"{p}.down_proj.weight"] = experts.w2[e].detach().float()
    return out


def make_trained(out_dir: str, fmt: str = "fp32", seed: int = 0, log=print) -> str:
    """Write the trained toy (Tencent dialect, A13B shape, tiny size) in format ``fmt``."""
    from transformers import AutoTokenizer

    from hunyuan_plugins.core.model import load_model
    from hunyuan_plugins.core.tiny import make_tiny

    make_tiny(out_dir, "a13b", "tencent", "fp32", seed=seed)  # config, tokenizer, random init
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model = load_model(out_dir, torch.float32)
    for p in model.parameters():
        p.requires_grad_(True)
    examples = [encode(tokenizer, conv, reply, model.cfg.eos_token_ids[0]) for conv, reply in CONVERSATIONS]
    log(f"[trained] training on {len(examples)} conversations "
        f"({sum(len(p) + len(r) for p, r in examples)} tokens), {os.cpu_count()} CPU(s)")
    stats = train(model, examples, seed, log)
    log(f"[trained] done: {stats}")
    make_tiny(out_dir, "a13b", "tencent", fmt, seed=seed, weights=canonical_weights(model))
    return out_dir


def write_trained(out_dir: str, fmt: str, trained_dir: str, seed: int = 0) -> str:
    """The trained toy in format ``fmt`` from an already trained fp32 one (``make_trained(..., "fp32")``
    with the same seed): the same files ``make_trained(out_dir, fmt, seed)`` writes, without training."""
    from hunyuan_plugins.core.model import load_model
    from hunyuan_plugins.core.tiny import make_tiny

    weights = canonical_weights(load_model(trained_dir, torch.float32))
    make_tiny(out_dir, "a13b", "tencent", fmt, seed=seed, weights=weights)
    return out_dir
