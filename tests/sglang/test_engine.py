"""Offline Engine vs the reference core, for every tiny checkpoint (fp32): tokens equal, logprobs 1e-4."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import CHECKPOINTS, MAX_NEW_TOKENS, PROMPT_IDS

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.model import generate, load_model, prompt_logprobs

ARCH = {"a13b": "HunYuanMoEV1ForCausalLM", "large": "HunYuanForCausalLM", "dense": "HunYuanDenseV1ForCausalLM"}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_greedy_and_prompt_logprobs_match_reference(name, checkpoints, engine_run):
    results, _ = engine_run
    got = results[name]
    ref = load_model(checkpoints[name], torch.float32)  # quantized checkpoints: dequantised, as the plugin does
    want_tokens = generate(ref, PROMPT_IDS, MAX_NEW_TOKENS)
    want_lp = prompt_logprobs(ref, PROMPT_IDS)
    assert got["tokens"] == want_tokens
    got_lp = torch.tensor(got["prompt_logprobs"], dtype=torch.float32)
    assert got_lp.shape == want_lp.shape
    assert (got_lp - want_lp).abs().max().item() < 1e-4


def test_plugin_classes_serve_every_checkpoint(checkpoints, engine_run):
    """Our class won (SGLang's own would log nothing of ours, or crash on the first prefill)."""
    _, log = engine_run
    served = re.findall(r"hunyuan_plugins: (\w+) served by hunyuan_plugins\.sglang\.model\.(\w+) \(.*\)", log)
    assert len(served) == len(CHECKPOINTS)
    assert sorted(a for a, _ in served) == sorted(ARCH[m] for m, _, _ in CHECKPOINTS.values())
    assert all(a == b for a, b in served)
    assert "Ignore import error" not in log


def test_quantized_checkpoints_dequantised_on_cpu(engine_run):
    _, log = engine_run
    assert "fp8 checkpoint dequantised at load" in log
    assert "gptq checkpoint dequantised at load" in log


def _kv_pools(log: str) -> list[tuple[int, int, int, int]]:
    """(layer buffers, layers, bytes, token slots) per engine, in run order."""
    return [tuple(map(int, m)) for m in
            re.findall(r"KV pool: (\d+) layer buffers for (\d+) layers, (\d+) bytes, (\d+) token slots", log)]


def test_cla_halves_kv_cache_memory(checkpoints, engine_run):
    _, log = engine_run
    pools = dict(zip(CHECKPOINTS, _kv_pools(log)))
    assert len(pools) == len(CHECKPOINTS)
    large, a13b = pools["large-cla"], pools["a13b-tencent"]
    cfg_large = HunyuanConfig.from_pretrained(checkpoints["large-cla"])
    cfg_a13b = HunyuanConfig.from_pretrained(checkpoints["a13b-tencent"])
    # same attention shape, same number of token slots: only CLA differs
    assert (cfg_large.num_layers, cfg_large.kv_size) == (cfg_a13b.num_layers, cfg_a13b.kv_size)
    assert large[3] == a13b[3]
    assert large[0] == cfg_large.num_kv_layers == cfg_large.num_layers // 2
    assert a13b[0] == cfg_a13b.num_layers
    assert 2 * large[2] == a13b[2]
    # bytes = 2 (K, V) x buffers x slots x kv_size x 4 (fp32)
    assert large[2] == 2 * large[0] * large[3] * cfg_large.kv_size * 4
