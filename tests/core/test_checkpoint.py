"""Checkpoint loading: every dialect to one canonical layout, quant formats, and every bad-input path."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.checkpoint import Checkpoint, CheckpointError, expected_tensors
from hunyuan_plugins.core.model import load_model
from hunyuan_plugins.core.tiny import make_tiny, random_weights
from hunyuan_plugins.quant import gptq


@pytest.mark.parametrize("model, dialects", [
    ("a13b", ["tencent", "native", "fused"]), ("dense", ["tencent", "native", "fused"]),
    ("large", ["tencent", "fused"]),
])
def test_every_dialect_reads_to_the_same_canonical_tensors(tiny, model, dialects):
    states = [Checkpoint(tiny(model, d, "fp32")).state_dict() for d in dialects]
    ref = random_weights(HunyuanConfig.from_pretrained(tiny(model, "tencent", "fp32")), seed=0)
    for sd in states:
        assert sd.keys() == ref.keys()
        for name in ref:
            assert torch.equal(sd[name], ref[name]), name


def test_names_are_canonical(tiny):
    ck = Checkpoint(tiny("large"))
    names = set(ck.entries)
    assert "model.layers.0.mlp.gate.weight" in names  # renamed from mlp.gate.wg.weight
    assert "model.layers.1.self_attn.k_proj.weight" not in names  # CLA cross layer
    assert "model.layers.0.mlp.experts.7.down_proj.weight" in names
    assert "lm_head.weight" not in names  # tied
    assert names == set(expected_tensors(ck.cfg))


def test_sharded_checkpoint_equals_single_file(tmp_path, tiny):
    sharded = make_tiny(str(tmp_path / "sharded"), "a13b", "tencent", "bf16", shards=3)
    assert len([f for f in os.listdir(sharded) if f.endswith(".safetensors")]) == 3
    a, b = Checkpoint(sharded).state_dict(), Checkpoint(tiny("a13b")).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_router_stays_fp32_and_bf16_weights_are_exact(tiny):
    sd = Checkpoint(tiny("a13b")).state_dict(torch.bfloat16)
    assert sd["model.layers.0.mlp.gate.weight"].dtype == torch.float32
    assert sd["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16


@pytest.mark.parametrize("model", ["a13b", "large", "dense"])
def test_fp8_checkpoint_dequantizes_to_its_own_tensors(tiny, model):
    path = tiny(model, "tencent", "fp8")
    ck = Checkpoint(path)
    assert ck.quant.method == "fp8"
    raw = load_file(os.path.join(path, "model.safetensors"))
    prefix = "model.layers.0.self_attn.q_proj"
    assert raw[f"{prefix}.weight"].dtype == torch.float8_e4m3fn
    assert raw[f"{prefix}.weight_scale"].shape == () and raw[f"{prefix}.input_scale"].dtype == torch.float32
    sd = ck.state_dict()
    want = raw[f"{prefix}.weight"].float() * raw[f"{prefix}.weight_scale"]
    assert torch.equal(sd[f"{prefix}.weight"], want)
    # and close to the unquantized weights it was made from (e4m3: <= 2^-4 relative + subnormals)
    w = random_weights(ck.cfg)[f"{prefix}.weight"]
    assert (sd[f"{prefix}.weight"] - w).abs().max() <= w.abs().max() / 8
    assert raw["model.embed_tokens.weight"].dtype == torch.bfloat16  # not quantized
    if model != "dense":
        assert raw["model.layers.0.mlp.gate.wg.weight"].dtype == torch.float32  # router ignored


@pytest.mark.parametrize("model", ["a13b", "large", "dense"])
def test_gptq_checkpoint_dequantizes(tiny, model):
    path = tiny(model, "tencent", "gptq-int4")
    ck = Checkpoint(path)
    assert (ck.quant.method, ck.quant.group_size, ck.quant.desc_act) == ("gptq", 128, True)
    raw = load_file(os.path.join(path, "model.safetensors"))
    prefix = "model.layers.0.mlp.shared_mlp.down_proj" if model != "dense" else "model.layers.0.mlp.down_proj"
    packed = {s: raw[f"{prefix}.{s}"] for s in ("qweight", "qzeros", "scales", "g_idx")}
    assert packed["qweight"].dtype == torch.int32 and packed["g_idx"].dtype == torch.int32
    assert not torch.equal(packed["g_idx"], torch.arange(packed["g_idx"].numel(), dtype=torch.int32) // 128) or \
        packed["g_idx"].numel() == 128  # desc_act: a real permutation unless a single group
    sd = ck.state_dict()
    assert torch.equal(sd[f"{prefix}.weight"], gptq.dequantize(**packed))
    w = random_weights(ck.cfg)[f"{prefix}.weight"]
    assert (sd[f"{prefix}.weight"] - w).abs().max() <= w.abs().max() / 7  # half a 4-bit step per group


def test_quantized_models_run_and_stay_close(tiny):
    ids = torch.tensor([[303, 10, 20, 30, 40, 307]])
    ref = load_model(tiny("a13b", "tencent", "fp32"))(ids)
    for fmt in ("fp8", "gptq-int4"):
        out = load_model(tiny("a13b", "tencent", fmt))(ids)
        rel = ((out - ref).norm() / ref.norm()).item()
        print(f"\n{fmt} tiny a13b vs fp32: relative logit error {rel:.3f}")
        assert rel < 0.5


# ---- bad input ------------------------------------------------------------------------------
def _copy(src, dst) -> str:
    shutil.copytree(src, dst)
    return str(dst)


def _edit(path, fn):
    f = os.path.join(path, "model.safetensors")
    tensors = load_file(f)
    fn(tensors)
    save_file(tensors, f)


def _edit_config(path, **changes):
    f = os.path.join(path, "config.json")
    raw = json.load(open(f))
    raw.update(changes)
    json.dump(raw, open(f, "w"))


def _problems(path) -> str:
    with pytest.raises(CheckpointError) as err:
        Checkpoint(path)
    return str(err.value)


def test_missing_tensor(tmp_path, tiny):
    p = _copy(tiny("a13b"), tmp_path / "c")
    _edit(p, lambda t: t.pop("model.layers.1.mlp.experts.3.up_proj.weight"))
    assert "missing tensor 'model.layers.1.mlp.experts.3.up_proj.weight'" in _problems(p)


def test_unexpected_tensor(tmp_path, tiny):
    p = _copy(tiny("a13b"), tmp_path / "c")
    _edit(p, lambda t: t.update({"model.layers.0.mlp.experts.8.up_proj.weight": torch.zeros(128, 128)}))
    msg = _problems(p)
    assert "unexpected tensor 'model.layers.0.mlp.experts.8.up_proj.weight'" in msg and "num_experts=8" in msg


def test_wrong_shape_and_dtype(tmp_path, tiny):
    p = _copy(tiny("a13b"), tmp_path / "c")

    def damage(t):
        t["model.layers.0.self_attn.o_proj.weight"] = torch.zeros(128, 64)
        t["model.norm.weight"] = torch.zeros(128, dtype=torch.int32)
    _edit(p, damage)
    msg = _problems(p)
    assert "'model.layers.0.self_attn.o_proj.weight' has shape [128, 64], expected [128, 128]" in msg
    assert "'model.norm.weight' has dtype torch.int32" in msg


def test_wrong_quant_tensor(tmp_path, tiny):
    p = _copy(tiny("a13b", "tencent", "gptq-int4"), tmp_path / "c")

    def damage(t):
        t["model.layers.0.self_attn.q_proj.qweight"] = t["model.layers.0.self_attn.q_proj.qweight"].float()
        del t["model.layers.0.self_attn.k_proj.g_idx"]
    _edit(p, damage)
    msg = _problems(p)
    assert "'model.layers.0.self_attn.q_proj.qweight' has dtype torch.float32, expected torch.int32" in msg
    assert "missing tensor 'model.layers.0.self_attn.k_proj.g_idx'" in msg


def test_fp8_config_with_bf16_weights_is_rejected(tmp_path, tiny):
    p = _copy(tiny("a13b"), tmp_path / "c")
    _edit_config(p, quantization_config={"quant_method": "fp8", "activation_scheme": "static"})
    msg = _problems(p)
    assert "model.layers.0.self_attn.q_proj.weight' has dtype torch.bfloat16, expected torch.float8_e4m3fn" in msg
    assert "missing tensor 'model.layers.0.self_attn.q_proj.weight_scale'" in msg


def test_cla_checkpoint_read_as_non_cla_is_an_error(tmp_path, tiny):
    """The bug we exist to fix: a Large (CLA) checkpoint must never load as if it had no CLA."""
    p = _copy(tiny("large"), tmp_path / "c")
    _edit_config(p, use_cla=False, architectures=["HunYuanMoEV1ForCausalLM"])
    msg = _problems(p)
    assert "missing tensor 'model.layers.1.self_attn.k_proj.weight'" in msg
    assert "missing tensor 'model.layers.3.self_attn.v_proj.weight'" in msg


def test_non_cla_checkpoint_read_as_cla_is_an_error(tmp_path, tiny):
    p = _copy(tiny("a13b"), tmp_path / "c")
    _edit_config(p, use_cla=True, architectures=["HunYuanForCausalLM"])
    msg = _problems(p)
    assert "unexpected tensor 'model.layers.1.self_attn.k_proj.weight': layer 1 is a CLA cross layer" in msg


def test_nothing_loads_half(tmp_path, tiny):
    """Validation happens from headers before any tensor is read."""
    p = _copy(tiny("a13b"), tmp_path / "c")
    _edit(p, lambda t: t.pop("model.norm.weight"))
    with pytest.raises(CheckpointError):
        load_model(p)


def test_index_errors(tmp_path, tiny):
    p = make_tiny(str(tmp_path / "s"), "dense", "tencent", "bf16", shards=2)
    os.remove(os.path.join(p, "model-00002-of-00002.safetensors"))
    assert "shard listed in the index is missing: model-00002-of-00002.safetensors" in _problems(p)
    q = make_tiny(str(tmp_path / "t"), "dense", "tencent", "bf16", shards=2)
    index = json.load(open(os.path.join(q, "model.safetensors.index.json")))
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    json.dump(index, open(os.path.join(q, "model.safetensors.index.json"), "w"))
    assert "'model.layers.9.mlp.up_proj.weight' is listed in the index but not in" in _problems(q)


def test_only_safetensors(tmp_path, tiny):
    p = _copy(tiny("dense"), tmp_path / "c")
    os.rename(os.path.join(p, "model.safetensors"), os.path.join(p, "pytorch_model.bin"))
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        Checkpoint(p)


def test_wrongly_fused_qkv_is_reported(tmp_path, tiny):
    p = _copy(tiny("a13b", "fused", "bf16"), tmp_path / "c")
    _edit(p, lambda t: t.update({"model.layers.0.self_attn.qkv_proj.weight": torch.zeros(100, 128)}))
    msg = _problems(p)
    assert "unexpected tensor 'model.layers.0.self_attn.qkv_proj.weight'" in msg
    assert "missing tensor 'model.layers.0.self_attn.q_proj.weight'" in msg


@pytest.mark.parametrize("dialect", ["tencent", "native", "fused"])
def test_streaming_canonicalisation_equals_checkpoint(tiny, dialect):
    from hunyuan_plugins.core.checkpoint import canonical_weights

    path = tiny("a13b", dialect, "fp32")
    cfg = HunyuanConfig.from_pretrained(path)
    streamed = dict(canonical_weights(load_file(os.path.join(path, "model.safetensors")).items(), cfg))
    ck = dict(Checkpoint(path).iter_tensors())
    assert streamed.keys() == ck.keys()
    assert all(torch.equal(streamed[k], ck[k]) for k in ck)


def test_fused_target_packs_qkv_and_gate_up_but_not_a_cla_cross_layer_query(tiny):
    from hunyuan_plugins.config import HunyuanConfig
    from hunyuan_plugins.core.checkpoint import fused_target

    large = HunyuanConfig.from_pretrained(tiny("large", "tencent", "bf16"))
    p = "model.layers.{}.self_attn.{}_proj.weight"
    assert fused_target(p.format(0, "q"), large) == (p.format(0, "qkv"), "q")
    assert fused_target(p.format(0, "v"), large) == (p.format(0, "qkv"), "v")
    assert fused_target(p.format(1, "q"), large) is None  # CLA cross layer: q_proj alone
    assert fused_target(p.format(1, "o"), large) is None
    assert fused_target("model.layers.2.mlp.shared_mlp.up_proj.weight", large) == (
        "model.layers.2.mlp.shared_mlp.gate_up_proj.weight", 1)
    assert fused_target("model.layers.2.self_attn.k_proj.weight_scale", large) == (
        "model.layers.2.self_attn.qkv_proj.weight_scale", "k")
