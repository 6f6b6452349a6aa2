"""Offline Engine vs the reference core, for every tiny checkpoint (fp32, no flag / override / env):
tokens equal, prompt logprobs within 1e-4. Quantized checkpoints load quantized through SGLang's
quantized layers (W8A8 FP8, W4A16 GPTQ-Int4), the log names the kernel of each layer kind."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import BACKEND_RUN, BAD_FP8, CHECKPOINTS, HIDDEN, MAX_NEW_TOKENS, PROMPT_IDS, QUANTIZED

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.model import generate, load_model, prompt_logprobs

ARCH = {"a13b": "HunYuanMoEV1ForCausalLM", "large": "HunYuanForCausalLM", "dense": "HunYuanDenseV1ForCausalLM"}
SERVED = re.compile(r"hunyuan_plugins: (\w+) served by hunyuan_plugins\.sglang\.model\.(\w+) "
                    r"\(\d+ layers, \d+ KV-cache layers(?:, CLA)?, (.*)\)")
# what the start-up log must say per format on this CPU machine (fp32)
KERNELS = {
    "fp8": ["linear fp8_w8a8 -> hunyuan::linear_fp8 (",
            "moe fp8_w8a8 -> hunyuan::moe_experts_fp8 (sglang has no fp8_w8a8 MoE kernel on cpu), "
            "routed by hunyuan::moe_route"],
    "gptq": ["linear int4_w4a16 -> hunyuan::linear_gptq (",
             "moe int4_w4a16 -> hunyuan::moe_experts_int4 (sglang has no int4_w4a16 MoE kernel on cpu), "
             "routed by hunyuan::moe_route"],
}


def _compare(name: str, got: dict, path: str, **ref_kwargs) -> float:
    """Assert tokens equal and prompt logprobs within 1e-4 of the core; print and return max |Δ|."""
    ref = load_model(path, torch.float32, **ref_kwargs)
    want_tokens = generate(ref, PROMPT_IDS, MAX_NEW_TOKENS)
    want_lp = prompt_logprobs(ref, PROMPT_IDS)
    got_lp = torch.tensor(got["prompt_logprobs"], dtype=torch.float32)
    assert got_lp.shape == want_lp.shape
    delta = (got_lp - want_lp).abs().max().item()
    print(f"\n{name}: tokens {got['tokens']} (core {want_tokens}); max |Δ prompt logprob| = {delta:.2e} "
          f"over {len(got_lp)} tokens; engine start {got['init_seconds']:.1f} s")
    assert got["tokens"] == want_tokens
    assert delta < 1e-4
    return delta


def _served(log: str) -> list[tuple[str, str, str]]:
    return SERVED.findall(log)


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_greedy_and_prompt_logprobs_match_reference(name, checkpoints, engine_run):
    results, _ = engine_run
    # the core: W8A8 exact for FP8 (its default), exact W4A16 for GPTQ-Int4
    _compare(name, results[name], checkpoints[name])


@pytest.mark.parametrize("name", [n for n, f in QUANTIZED.items() if f == "fp8"])
def test_fp8_runs_w8a8_not_weight_only(name, checkpoints, engine_run):
    """The weight-only reading of the same checkpoint is far off: the engine quantized its inputs."""
    results, _ = engine_run
    weight_only = prompt_logprobs(load_model(checkpoints[name], torch.float32, fp8_activations="none"), PROMPT_IDS)
    delta = (torch.tensor(results[name]["prompt_logprobs"]) - weight_only).abs().max().item()
    print(f"\n{name}: max |Δ prompt logprob| vs the weight-only (W8A16) core = {delta:.2e}")
    assert delta > 1e-2


def test_hidden_quant_config_dequantises_at_load(checkpoints, engine_run):
    """--json-model-override-args '{"quantization_config": null}': the plugin's old weight-only path."""
    results, log = engine_run
    for name, (ckpt, _) in HIDDEN.items():
        _compare(name, results[name], checkpoints[ckpt], fp8_activations="none")
    notes = [q for _, _, q in _served(log) if "dequantised at load" in q]
    assert len(notes) == len(HIDDEN)
    assert notes[0].startswith("fp8 checkpoint dequantised at load (the engine was not given the quantization "
                               "config); kernels: moe fp32 -> SGLang UnquantizedFusedMoEMethod (")


def test_quantized_checkpoints_load_quantized_and_log_kernels(engine_run):
    _, log = engine_run
    served = _served(log)
    assert len(served) == len(CHECKPOINTS) + len(HIDDEN)
    by_run = dict(zip(list(CHECKPOINTS) + list(HIDDEN), served))
    for name, fmt in QUANTIZED.items():
        line = by_run[name][2]
        print(f"\n{name}: {line}")
        assert line.startswith(f"{fmt} (") and ") loaded quantized; kernels: " in line
        for phrase in KERNELS[fmt]:
            assert phrase in line, (name, phrase)
        assert "torch.ops.hunyuan runs the torch reference" in line
    for name in set(CHECKPOINTS) - set(QUANTIZED) - {"dense"}:
        assert "unquantized; kernels: moe fp32 -> SGLang UnquantizedFusedMoEMethod" in by_run[name][2]
    # SGLang's own loader ran with the checkpoint's quantization (its "Load weight end" line)
    assert len(re.findall(r"Load weight end\..*quant=fp8,", log)) == 2
    assert len(re.findall(r"Load weight end\..*quant=gptq,", log)) == 1


def test_plugin_classes_serve_every_checkpoint(checkpoints, engine_run):
    """Our class won (SGLang's own would log nothing of ours, or crash on the first prefill)."""
    _, log = engine_run
    served = _served(log)
    models = [m for m, _, _ in CHECKPOINTS.values()] + [CHECKPOINTS[c][0] for c, _ in HIDDEN.values()]
    assert sorted(a for a, _, _ in served) == sorted(ARCH[m] for m in models)
    assert all(a == b for a, b, _ in served)
    assert "Ignore import error" not in log


def test_moe_backend_hunyuan_with_triton_interpreter(checkpoints, backend_run):
    """HUNYUAN_MOE_BACKEND=hunyuan: our MoE ops (Triton kernels in Triton's interpreter) serve the
    experts of an fp32, an fp8 and a GPTQ-Int4 checkpoint; tokens equal the core."""
    results, log = backend_run
    for name in BACKEND_RUN:
        _compare(f"{name} (HUNYUAN_MOE_BACKEND=hunyuan, Triton interpreter)", results[name], checkpoints[name])
    lines = [q for _, _, q in _served(log)]
    assert len(lines) == len(BACKEND_RUN)
    kernels = ["moe fp32 -> hunyuan::moe_experts (HUNYUAN_MOE_BACKEND=hunyuan), routed by hunyuan::moe_route",
               "moe fp8_w8a8 -> hunyuan::moe_experts_fp8 (HUNYUAN_MOE_BACKEND=hunyuan), routed by hunyuan::moe_route",
               "moe int4_w4a16 -> hunyuan::moe_experts_int4 (HUNYUAN_MOE_BACKEND=hunyuan), routed by "
               "hunyuan::moe_route"]
    for line, kernel in zip(lines, kernels):
        assert kernel in line
        assert "torch.ops.hunyuan runs the Triton interpreter" in line


@pytest.mark.parametrize("name", list(BAD_FP8))
def test_bad_fp8_checkpoint_is_refused_naming_the_tensor(name, bad_fp8_runs):
    tensor, _, what = BAD_FP8[name]
    rc, log = bad_fp8_runs[name]
    assert rc != 0
    assert "RESULT " not in log
    line = next((ln for ln in log.splitlines() if f"'{tensor}'" in ln), None)
    print(f"\n{name}: exit {rc}; {line}")
    assert line is not None and what in line
    assert "CheckpointError" in log


def _kv_pools(log: str) -> list[tuple[int, int, int, int]]:
    """(layer buffers, layers, bytes, token slots) per engine, in run order."""
    return [tuple(map(int, m)) for m in
            re.findall(r"KV pool: (\d+) layer buffers for (\d+) layers, (\d+) bytes, (\d+) token slots", log)]


def test_cla_halves_kv_cache_memory(checkpoints, engine_run):
    _, log = engine_run
    pools = dict(zip(list(CHECKPOINTS) + list(HIDDEN), _kv_pools(log)))
    assert len(pools) == len(CHECKPOINTS) + len(HIDDEN)
    large, a13b = pools["large-cla"], pools["a13b-tencent"]
    assert pools["large-fp8"] == large  # CLA's shared slots with the quantized path too
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
