"""Our TensorRT-LLM model classes, run on the TEST-ONLY stand-in of TensorRT-LLM 1.2.1's API.

What this shows: the classes construct through TensorRT-LLM's module signatures, load every dialect
through the core, and compute exactly what the reference core computes (greedy tokens equal, prompt
logprobs within 1e-4, fp32), including CLA with half the KV-cache layers. What it does not show:
anything about TensorRT-LLM's real kernels, KV-cache manager or executor (see docs/trtllm.md).
"""


import os

import pytest
import torch
from trtllm_helpers import hf_config, load_weights_dict

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.model import KVCache, generate, load_model, prompt_logprobs

PROMPT = [1, 17, 42, 99, 5, 300, 77, 12, 250, 8]
NEW = 8



def build(trt_standin, path, **mc):
    stand_in, mod = trt_standin
    pc = hf_config(path)
    model_config = stand_in.ModelConfig(pretrained_config=pc, **mc)
    model = stand_in.AutoModelForCausalLM.from_config(model_config)
    model.load_weights(load_weights_dict(path))
    return model.eval()


def test_registered_names(trt_standin):
    stand_in, mod = trt_standin
    for arch in ("HunYuanMoEV1ForCausalLM", "HunYuanForCausalLM", "HunYuanDenseV1ForCausalLM"):
        assert stand_in.MODEL_CLASS_MAPPING[arch].__module__ == "hunyuan_plugins.trtllm.model"
    # the registering import is the one TRT-LLM's --custom_module_dirs performs
    assert mod.REGISTERED == ["HunYuanMoEV1ForCausalLM", "HunYuanForCausalLM", "HunYuanDenseV1ForCausalLM"]


@pytest.mark.parametrize("model,dialect", [("a13b", "tencent"), ("a13b", "native"), ("a13b", "fused"),
                                           ("large", "tencent"), ("dense", "tencent"), ("dense", "native")])
def test_matches_reference(trt_standin, tiny, model, dialect):
    stand_in, _ = trt_standin
    path = tiny(model, dialect)
    ref = load_model(path, torch.float32)
    trt = build(trt_standin, path)
    ref_tokens = generate(ref, PROMPT, NEW)
    assert stand_in.generate(trt, PROMPT, NEW) == ref_tokens
    ref_lp, trt_lp = prompt_logprobs(ref, PROMPT + ref_tokens), stand_in.prompt_logprobs(trt, PROMPT + ref_tokens)
    assert torch.allclose(trt_lp, ref_lp, atol=1e-4, rtol=0), float((trt_lp - ref_lp).abs().max())


def test_cla_halves_kv_cache_and_shares_it(trt_standin, tiny):
    stand_in, mod = trt_standin
    path = tiny("large")
    trt = build(trt_standin, path)
    cfg = trt.hy_config
    assert cfg.num_layers == 4 and cfg.num_kv_layers == 2
    # the real KV-cache creator reads num_hidden_layers and num_key_value_heads (a per-layer list,
    # None = no pool): cross layers get none and use their partner's pool
    assert trt.model_config.pretrained_config.num_key_value_heads == [cfg.num_kv_heads, None] * 2
    assert [layer.self_attn.layer_idx for layer in trt.model.layers] == [0, 0, 2, 2]
    # cross layers have a query projection only, each layer keeps its own key norm
    for i, layer in enumerate(trt.model.layers):
        assert layer.self_attn.qkv_proj.weight.shape[0] == (cfg.q_size + 2 * cfg.kv_size if i % 2 == 0 else cfg.q_size)
    k0 = trt.model.layers[0].self_attn.key_layernorm.weight
    k1 = trt.model.layers[1].self_attn.key_layernorm.weight
    assert not torch.equal(k0, k1)
    cache = stand_in.new_cache(trt)
    assert cache.num_kv_heads_per_layer == [cfg.num_kv_heads, 0, cfg.num_kv_heads, 0]
    full = stand_in.new_cache(build(trt_standin, tiny("a13b")))  # same attention shapes, no CLA
    assert cache.num_elements * 2 == full.num_elements  # half the KV memory
    assert KVCache(cfg, 1, 4, torch.float32).k.shape[0] == 2  # as the reference core
    stand_in.run_forward(trt, cache, PROMPT, 0, False)
    assert cache.writes == [2, 0, 2, 0]  # owner and cross layer both write into the owner's pool ...
    for slot in (cache.written[0], cache.written[2]):  # ... and what they write is identical
        (k_own, v_own), (k_cross, v_cross) = slot
        assert torch.equal(k_own, k_cross) and torch.equal(v_own, v_cross)
    # a model with a full cache would disagree if the cross layers' K/V were not the owners'
    assert cache.k[0][:len(PROMPT)].abs().sum() > 0


def test_cla_without_partner_kv_fails_loudly(trt_standin, tiny):
    stand_in, _ = trt_standin
    trt = build(trt_standin, tiny("large"))
    trt.model.kv_readers = {i: [] for i in trt.model.kv_readers}  # break the hand-over
    with pytest.raises(RuntimeError, match="CLA layer 1 ran without its partner"):
        stand_in.run_forward(trt, stand_in.new_cache(trt), PROMPT, 0, False)


def test_top1_routing_is_not_renormalised(trt_standin, tiny):
    stand_in, mod = trt_standin
    large = build(trt_standin, tiny("large"))
    a13b = build(trt_standin, tiny("a13b"))
    assert type(large.model.layers[0].mlp.experts.routing_method).__name__ == "DefaultMoeRoutingMethod"
    assert type(a13b.model.layers[0].mlp.experts.routing_method).__name__ == "RenormalizeMoeRoutingMethod"
    assert large.model.layers[0].mlp.gate.weight.dtype == torch.float32  # fp32 router


def test_missing_tensor_is_named(trt_standin, tiny):
    stand_in, _ = trt_standin
    path = tiny("dense")
    model = stand_in.AutoModelForCausalLM.from_config(stand_in.ModelConfig(pretrained_config=hf_config(path)))
    w = load_weights_dict(path)
    del w["model.layers.2.mlp.down_proj.weight"]
    with pytest.raises(ValueError, match="model.layers.2.mlp.down_proj"):
        model.load_weights(w)


def test_unexpected_tensor_is_named(trt_standin, tiny):
    stand_in, _ = trt_standin
    path = tiny("dense")
    model = stand_in.AutoModelForCausalLM.from_config(stand_in.ModelConfig(pretrained_config=hf_config(path)))
    w = load_weights_dict(path)
    w["model.layers.1.self_attn.bogus.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match="bogus"):
        model.load_weights(w)


def test_loads_the_builders_output(trt_standin, tiny, tmp_path):
    """Checkpoint -> hunyuan-trtllm-build -> our classes: the path `trtllm-serve OUT/pytorch` takes."""
    from hunyuan_plugins.trtllm.build import build

    stand_in, _ = trt_standin
    src = tiny("large", "tencent")
    build(src, str(tmp_path / "out"), dtype="float32", progress=False)
    trt = build_model_from(trt_standin, str(tmp_path / "out" / "pytorch"))
    ref = load_model(src, torch.float32)
    tokens = generate(ref, PROMPT, NEW)
    assert stand_in.generate(trt, PROMPT, NEW) == tokens
    assert torch.allclose(stand_in.prompt_logprobs(trt, PROMPT + tokens), prompt_logprobs(ref, PROMPT + tokens),
                          atol=1e-4, rtol=0)


def build_model_from(trt_standin, path, **mc):
    return build(trt_standin, path, **mc)


def test_gptq_int4_w4a16_and_our_int4_experts(trt_standin, tmp_path):
    """GPTQ-Int4 (no act-order) -> builder's W4A16 layout -> TRT-LLM Linear (W4A16_AWQ) for dense
    projections + hunyuan::moe_experts_int4 for the routed experts; fp32 compute vs the reference."""
    from trtllm_helpers import make_gptq_contiguous

    from hunyuan_plugins.trtllm.build import build as trt_build

    stand_in, mod = trt_standin
    # one extra module left in full precision by the quantizer: the builder's exclude_modules must
    # make TensorRT-LLM's post-construction step leave exactly that Linear unquantized
    src = make_gptq_contiguous(str(tmp_path / "gptq"),
                               extra_ignored=["model.layers.0.self_attn.o_proj"])
    trt_build(src, str(tmp_path / "out"), progress=False)
    # the quant config comes from the builder's hf_quant_config.json, read as TensorRT-LLM reads it
    mc = stand_in.ModelConfig.from_pretrained(str(tmp_path / "out" / "pytorch"))
    assert mc.quant_config.quant_algo == stand_in.QuantAlgo.W4A16_AWQ and mc.quant_config.group_size == 128
    mc.pretrained_config.torch_dtype = torch.float32
    trt = stand_in.AutoModelForCausalLM.from_config(mc)
    trt.load_weights(load_weights_dict(str(tmp_path / "out" / "pytorch")))
    trt.eval()
    assert isinstance(trt.model.layers[0].mlp.experts, mod.HunyuanInt4Experts)
    assert trt.model.layers[0].self_attn.qkv_proj.weight.dtype == torch.int8
    assert trt.model.layers[1].self_attn.o_proj.weight.dtype == torch.int8
    assert trt.model.layers[0].self_attn.o_proj.weight.dtype.is_floating_point  # excluded
    ref = load_model(src, torch.float32)
    tokens = generate(ref, PROMPT, 3)
    assert stand_in.generate(trt, PROMPT, 3) == tokens
    assert torch.allclose(stand_in.prompt_logprobs(trt, PROMPT + tokens), prompt_logprobs(ref, PROMPT + tokens),
                          atol=1e-4, rtol=0)


def test_our_expert_ops_inside_trtllm_classes(trt_standin, tiny, monkeypatch):
    """HUNYUAN_MOE_BACKEND=hunyuan: routed experts through hunyuan::moe_route / hunyuan::moe_experts."""
    stand_in, mod = trt_standin
    monkeypatch.setenv("HUNYUAN_MOE_BACKEND", "hunyuan")
    for model in ("a13b", "large"):
        path = tiny(model)
        trt = build(trt_standin, path)
        assert isinstance(trt.model.layers[0].mlp.experts, mod.HunyuanExperts)
        ref = load_model(path, torch.float32)
        tokens = generate(ref, PROMPT, NEW)
        assert stand_in.generate(trt, PROMPT, NEW) == tokens
        assert torch.allclose(stand_in.prompt_logprobs(trt, PROMPT + tokens),
                              prompt_logprobs(ref, PROMPT + tokens), atol=1e-4, rtol=0)


def test_pipeline_parallel_with_cla_is_refused_at_start_up(trt_standin, tiny):
    """A CLA model under PP would lose the partner K/V at a stage boundary at run time: refused when
    the model is built, naming both settings. Models without CLA are not affected."""
    stand_in, _ = trt_standin
    with pytest.raises(NotImplementedError, match=r"pp_size=2.*CLA"):
        build(trt_standin, tiny("large"), mapping=stand_in.Mapping(world_size=2, pp_size=2))
    build(trt_standin, tiny("a13b"), mapping=stand_in.Mapping(world_size=2, pp_size=2))


def test_tp_above_kv_heads_duplicates_kv_weights(trt_standin, tiny):
    """TP 4 over 2 KV heads (A13B at TP 16 has the same shape of problem): each rank holds one KV
    head, rank r the head r // 2, as TensorRT-LLM rounds KV heads per rank up. This failed at load
    before the adapter duplicated the KV weights."""
    stand_in, _ = trt_standin
    path = tiny("dense")
    full = load_weights_dict(path)
    cfg = HunyuanConfig.from_pretrained(path)
    d = cfg.head_dim
    assert cfg.num_kv_heads == 2
    for rank in range(4):
        trt = build(trt_standin, path, mapping=stand_in.Mapping(world_size=4, tp_size=4, rank=rank))
        attn = trt.model.layers[0].self_attn
        assert attn.num_key_value_heads == 1
        w = attn.qkv_proj.weight
        q_rows = w.shape[0] - 2 * d
        head = rank // 2
        k = full["model.layers.0.self_attn.k_proj.weight"][head * d:(head + 1) * d]
        v = full["model.layers.0.self_attn.v_proj.weight"][head * d:(head + 1) * d]
        assert torch.equal(w[q_rows:q_rows + d], k) and torch.equal(w[q_rows + d:], v)


def test_served_context_past_max_position_embeddings(trt_standin, tiny, tmp_path):
    """A config whose max_position_embeddings (64) is below the context served (512): without
    --max-seq-len the RoPE table (RopeParams.max_positions rows, as TensorRT-LLM builds it) ends at
    64 and a 100-token prompt runs past it; hunyuan-trtllm-build --max-seq-len 512 raises the
    written config, and the model then equals the reference core (exact past 64: static alpha RoPE)."""
    import json
    import shutil

    from hunyuan_plugins.trtllm.build import build as trt_build

    stand_in, _ = trt_standin
    src = str(tmp_path / "short")
    shutil.copytree(tiny("a13b"), src)
    cfg_file = os.path.join(src, "config.json")
    raw = json.load(open(cfg_file))
    raw["max_position_embeddings"] = 64
    json.dump(raw, open(cfg_file, "w"))
    prompt = [(7 * i + 3) % 250 + 1 for i in range(100)]

    trt_build(src, str(tmp_path / "as-is"), progress=False)
    short = build(trt_standin, str(tmp_path / "as-is" / "pytorch"))
    with pytest.raises(IndexError, match="past the RoPE table"):
        stand_in.prompt_logprobs(short, prompt)

    trt_build(src, str(tmp_path / "long"), progress=False, max_seq_len=512)
    written = json.load(open(tmp_path / "long" / "pytorch" / "config.json"))
    assert written["max_position_embeddings"] == 512
    assert written["hunyuan_plugins_source_max_position_embeddings"] == 64
    assert "max_seq_len: 512" in open(tmp_path / "long" / "extra_llm_api_options.yaml").read()
    trt = build(trt_standin, str(tmp_path / "long" / "pytorch"))
    ref = load_model(src, torch.float32)
    tokens = generate(ref, prompt, 4)
    assert stand_in.generate(trt, prompt, 4) == tokens
    lp_ref, lp = prompt_logprobs(ref, prompt + tokens), stand_in.prompt_logprobs(trt, prompt + tokens)
    err = float((lp - lp_ref).abs().max())
    print(f"served 104 positions over max_position_embeddings=64: max |dlogprob| {err:.2e}")
    assert torch.allclose(lp, lp_ref, atol=1e-4, rtol=0)
