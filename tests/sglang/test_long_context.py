"""Context as trained: a Hunyuan config with alpha-NTK RoPE serves the --context-length the user asks
for past ``max_position_embeddings`` (A13B's config says 32768, the model is trained to 256K), with no
environment variable: the plugin's AROUND hook on SGLang's ``ModelConfig._derive_context_length``.

End to end: tiny A13B and Large (CLA) checkpoints whose config says max_position_embeddings 64, served
with context_length 512, a 150-token prompt prefilled in chunks of 64, 8 greedy tokens (decode at
positions 150-157): tokens equal the reference core, prompt logprobs within 1e-4, SGLang's limits
(context_len, req_to_token pool, max_req_input_len) follow the served context, a prompt longer than
it is still refused. In-process: SGLang's own refusal still applies to a Hunyuan config without
alpha RoPE and, without our plugin, to one with it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import (
    LONG_CHUNK,
    LONG_CONTEXT,
    LONG_PROMPT_IDS,
    LONG_RUN,
    MAX_NEW_TOKENS,
    SHORT_MAX_POSITION,
    TOO_LONG,
    sglang_env,
)

from hunyuan_plugins.core.model import generate, load_model, prompt_logprobs

ARCH = {"a13b-tencent": "HunYuanMoEV1ForCausalLM", "large-cla": "HunYuanForCausalLM"}


@pytest.mark.parametrize("name", LONG_RUN)
def test_long_prompt_past_max_position_embeddings_matches_core(name, short_checkpoints, long_context_run):
    results, _ = long_context_run
    got = results[name]
    assert len(LONG_PROMPT_IDS) > 2 * SHORT_MAX_POSITION
    ref = load_model(short_checkpoints[name], torch.float32)
    want_tokens = generate(ref, LONG_PROMPT_IDS, MAX_NEW_TOKENS)
    want_lp = prompt_logprobs(ref, LONG_PROMPT_IDS)
    got_lp = torch.tensor(got["prompt_logprobs"], dtype=torch.float32)
    assert got_lp.shape == want_lp.shape == (len(LONG_PROMPT_IDS) - 1,)
    delta = (got_lp - want_lp).abs().max().item()
    tail = (got_lp[SHORT_MAX_POSITION:] - want_lp[SHORT_MAX_POSITION:]).abs().max().item()
    print(f"\n{name} (max_position_embeddings {SHORT_MAX_POSITION}, context_length {LONG_CONTEXT}, "
          f"{len(LONG_PROMPT_IDS)}-token prompt in chunks of {LONG_CHUNK}): tokens {got['tokens']} "
          f"(core {want_tokens}); max |Δ prompt logprob| = {delta:.2e} (positions >= {SHORT_MAX_POSITION}: "
          f"{tail:.2e}); SGLang limits {got['server_info']}; {TOO_LONG}-token prompt: {got['too_long']}")
    assert got["tokens"] == want_tokens
    assert delta < 1e-4
    info = got["server_info"]
    assert info["context_length"] == LONG_CONTEXT and info["chunked_prefill_size"] == LONG_CHUNK
    # SGLang's request limit is min(context_len - 1, KV pool - 1) - 5 (tp_worker.get_worker_info)
    assert info["max_req_input_len"] == min(LONG_CONTEXT, info["max_total_num_tokens"]) - 1 - 5
    # the served context is a limit, not "anything goes": SGLang still refuses a longer prompt
    assert got["too_long"]["served"] is False
    assert f"context length ({LONG_CONTEXT} tokens)" in got["too_long"]["error"]


def test_long_context_log(long_context_run):
    """The plugin says why and what the model was trained to; SGLang's pools follow the served context."""
    _, log = long_context_run
    for name in LONG_RUN:
        line = (f"hunyuan_plugins: {ARCH[name]} context_length {LONG_CONTEXT} served past "
                f"max_position_embeddings={SHORT_MAX_POSITION} (alpha-NTK RoPE")
        assert line in log, line
    # the trained length is known by architecture AND shape (config.TRAINED_CONTEXT): not for tiny models
    for name in LONG_RUN:
        assert re.search(rf"{ARCH[name]} context_length {LONG_CONTEXT} served past .*; trained context not known",
                         log), name
    assert "published with a trained context" not in log
    tables = re.findall(r"RoPE table covers (\d+) positions \(served context (\d+), max_position_embeddings (\d+)",
                        log)
    assert tables == [(str(LONG_CONTEXT), str(LONG_CONTEXT), str(SHORT_MAX_POSITION))] * len(LONG_RUN)
    sched = re.findall(r"chunked_prefill_size=(\d+), .*context_len=(\d+)", log)
    assert sched == [(str(LONG_CHUNK), str(LONG_CONTEXT))] * len(LONG_RUN)
    assert "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN" not in log


_MODEL_CONFIG = """
import json, sys
from sglang.srt.plugins import load_plugins
load_plugins()
from sglang.srt.configs.model_config import ModelConfig
for path, length in json.loads(sys.argv[1]):
    try:
        got = ModelConfig(path, context_length=length, dtype="float32").context_len
    except ValueError as e:
        got = str(e)
    print("RESULT", json.dumps([path, length, got]))
"""


def _model_configs(cases: list[tuple[str, int]], **env) -> list:
    """SGLang's ModelConfig (where it checks the context length) in a fresh process -> context_len or error."""
    out = subprocess.run([sys.executable, "-c", _MODEL_CONFIG, json.dumps(cases)], env={**sglang_env(), **env},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line[len("RESULT "):])[2] for line in out.stdout.splitlines() if line.startswith("RESULT ")]


def test_sglang_refusal_still_applies_without_alpha_rope_or_without_the_plugin(short_checkpoints):
    alpha, plain = short_checkpoints["a13b-tencent"], short_checkpoints["plain-rope"]
    with_plugin = _model_configs([(alpha, LONG_CONTEXT), (alpha, 32), (plain, LONG_CONTEXT), (plain, 32)])
    # without the plugin: the transformers-native A13B config (the Tencent dialect needs the plugin to load at all)
    without_plugin = _model_configs([(short_checkpoints["native"], LONG_CONTEXT)], SGLANG_PLUGINS="none")
    print(f"\nwith the plugin: alpha RoPE {with_plugin[:2]}, plain RoPE {with_plugin[2:]}; without: {without_plugin}")
    assert with_plugin[0] == LONG_CONTEXT and with_plugin[1] == 32 and with_plugin[3] == 32
    for refused in (with_plugin[2], without_plugin[0]):
        assert isinstance(refused, str)
        assert f"User-specified context_length ({LONG_CONTEXT}) is greater than the derived context_length " \
               f"({SHORT_MAX_POSITION})" in refused
        assert "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1" in refused
