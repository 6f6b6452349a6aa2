"""Our vLLM quantization backend ("hunyuan"): which checkpoints it claims, and bad checkpoints.

The claim is checked in this process against vLLM's registry (no engine starts); the bad
checkpoints are served by a real engine (subprocess) and must fail naming the tensor, before
anything is half-loaded.
"""

import json
import os
import shutil
from types import SimpleNamespace

import pytest
import torch
from conftest import run_llm
from safetensors.torch import load_file, save_file

FP8 = {"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ["lm_head"]}
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": True}


@pytest.fixture(scope="module")
def backend():
    from hunyuan_plugins import vllm as plugin

    plugin.register()
    plugin.register()  # idempotent
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS, get_quantization_config

    assert QUANTIZATION_METHODS.count("hunyuan") == 1
    return get_quantization_config("hunyuan")


def _hf(arch: str, model_type: str = "hunyuan"):
    return SimpleNamespace(architectures=[arch], model_type=model_type)


@pytest.mark.parametrize("arch", ["HunYuanMoEV1ForCausalLM", "HunYuanForCausalLM", "HunYuanDenseV1ForCausalLM"])
def test_claims_tencent_fp8_static_and_gptq_int4_of_hunyuan(backend, arch):
    assert backend.override_quantization_method(FP8, None, hf_config=_hf(arch)) == "hunyuan"
    assert backend.override_quantization_method(GPTQ, None, hf_config=_hf(arch)) == "hunyuan"
    assert {torch.float32, torch.float16, torch.bfloat16} <= set(backend.get_supported_act_dtypes())


@pytest.mark.parametrize("qc", [
    {**FP8, "activation_scheme": "dynamic"},
    {**FP8, "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
    {**GPTQ, "bits": 8},
    {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"},
    {"quant_method": "compressed-tensors"},
])
def test_leaves_other_formats_to_vllm(backend, qc):
    assert backend.override_quantization_method(qc, None, hf_config=_hf("HunYuanMoEV1ForCausalLM")) is None


def test_leaves_other_models_and_explicit_choices_to_vllm(backend):
    assert backend.override_quantization_method(FP8, None, hf_config=_hf("LlamaForCausalLM", "llama")) is None
    assert backend.override_quantization_method(GPTQ, None, hf_config=_hf("Qwen3MoeForCausalLM", "qwen3_moe")) is None
    assert backend.override_quantization_method(FP8, None, hf_config=None) is None
    # --quantization fp8 / gptq_marlin given by the user: vLLM's own method, as asked
    assert backend.override_quantization_method(FP8, "fp8", hf_config=_hf("HunYuanMoEV1ForCausalLM")) is None
    assert backend.override_quantization_method(GPTQ, "gptq_marlin", hf_config=_hf("HunYuanMoEV1ForCausalLM")) is None


def _broken_copy(src: str, dst, edit=None, edit_config=None) -> str:
    shutil.copytree(src, dst)
    if edit is not None:
        path = os.path.join(dst, "model.safetensors")
        tensors = load_file(path)
        edit(tensors)
        save_file(tensors, path)
    if edit_config is not None:
        cfg_path = os.path.join(dst, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        edit_config(cfg)
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
    return str(dst)


def test_bad_fp8_checkpoints_fail_naming_the_tensor(tiny, tmp_path):
    """One engine start per broken checkpoint; the error names the tensor (nothing half-loaded:
    the whole checkpoint is validated from its headers before the first tensor loads)."""
    src = tiny("a13b", "tencent", "fp8")
    missing = "model.layers.1.mlp.experts.3.up_proj.input_scale"
    wrong = "model.layers.2.self_attn.k_proj.weight_scale"

    def drop(t):
        del t[missing]

    def reshape(t):
        t[wrong] = t[wrong].reshape(1).repeat(4)

    for edit, name, what in ((drop, missing, "missing"), (reshape, wrong, "shape")):
        path = _broken_copy(src, tmp_path / edit.__name__, edit)
        run = run_llm(path, expect_failure=True, timeout=300)
        err = next((x for x in run.log.splitlines() if name in x), None)
        print(f"\nbroken fp8 checkpoint ({edit.__name__} {name}) refused: {err}")
        assert err is not None and what in err, run.log[-4000:]
        assert "Loading weights took" not in run.log


def test_fp8_ignored_layers_entry_naming_no_module_fails_naming_it(tiny, tmp_path):
    entry = "model.layers.7.self_attn.q_proj"  # the tiny model has 4 layers

    def add_entry(cfg):
        cfg["quantization_config"]["ignored_layers"].append(entry)

    path = _broken_copy(tiny("a13b", "tencent", "fp8"), tmp_path / "fp8-bad-ignore", edit_config=add_entry)
    run = run_llm(path, expect_failure=True, timeout=300)
    err = next((x for x in run.log.splitlines() if entry in x and "names no module" in x), None)
    print(f"\nfp8 ignored_layers entry naming no module refused: {err}")
    assert err is not None, run.log[-4000:]


def test_gptq_g_idx_not_matching_desc_act_fails_naming_it(tiny, tmp_path):
    """desc_act: true promises every group holds exactly group_size input rows; a g_idx that
    does not (here: one row moved to a group that does not exist) is refused naming it."""
    src = tiny("a13b", "tencent", "gptq-int4")
    name = "model.layers.0.self_attn.q_proj.g_idx"

    def corrupt(t):
        t[name][5] = t[name].max() + 1

    path = _broken_copy(src, tmp_path / "gptq-bad-g_idx", corrupt)
    run = run_llm(path, expect_failure=True, timeout=300)
    err = next((x for x in run.log.splitlines() if name in x), None)
    print(f"\ngptq g_idx vs desc_act refused: {err}")
    assert err is not None and "desc_act" in err, run.log[-4000:]
    assert "Loading weights took" not in run.log
