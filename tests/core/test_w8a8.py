"""Tencent FP8 in the reference core is W8A8 as the checkpoint specifies: every quantized projection
quantizes its input with its own stored static input_scale. And the errors for quantized checkpoints
whose tensors do not match their config."""

import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from hunyuan_plugins import ops
from hunyuan_plugins.core.checkpoint import CheckpointError
from hunyuan_plugins.core.model import Fp8Experts, Fp8Linear, load_model
from hunyuan_plugins.quant import fp8, gptq

PROMPT = torch.tensor([[303, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 307]])


def edited_copy(src: str, dst: str, edit_tensors=None, edit_config=None) -> str:
    """A copy of checkpoint `src` at `dst` with `edit_tensors(dict)` / `edit_config(dict)` applied."""
    shutil.copytree(src, dst)
    for name in os.listdir(dst):
        if name.endswith(".safetensors") and edit_tensors is not None:
            tensors = load_file(os.path.join(dst, name))
            edit_tensors(tensors)
            save_file(tensors, os.path.join(dst, name))
    if edit_config is not None:
        with open(os.path.join(dst, "config.json")) as f:
            cfg = json.load(f)
        edit_config(cfg)
        with open(os.path.join(dst, "config.json"), "w") as f:
            json.dump(cfg, f)
    return dst


@torch.no_grad()
def logits(path: str, **kw) -> torch.Tensor:
    return load_model(path, torch.float32, **kw)(PROMPT)[0]


def test_fp8_linear_quantizes_its_input_with_the_stored_scale():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(24, 32, generator=g), torch.randn(5, 32, generator=g)
    q, ws = fp8.quantize(w)
    s_in = torch.tensor(0.004)
    lin = Fp8Linear(32, 24)
    lin.weight.data, lin.weight_scale.data, lin.input_scale.data = q, ws, s_in
    w8a8 = F.linear(fp8.fake_quant_activation(x, s_in), fp8.dequantize(q, ws))
    torch.testing.assert_close(lin(x), w8a8, rtol=0, atol=1e-6)
    assert (lin(x) - F.linear(x, fp8.dequantize(q, ws))).abs().max() > 1e-3  # not weight-only


def test_linear_fp8_keeps_each_shard_scale():
    """A fused q/k/v or gate/up weight: every shard keeps its own weight and input scale."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 16, generator=g)
    parts = [torch.randn(n, 16, generator=g) * a for n, a in ((8, 1.0), (4, 3.0), (4, 0.2))]
    quantized = [fp8.quantize(p) for p in parts]
    in_scales = torch.tensor([0.002, 0.01, 0.005])
    out = ops.linear_fp8(x, torch.cat([q for q, _ in quantized]), torch.stack([s for _, s in quantized]),
                         in_scales, [8, 4, 4])
    want = torch.cat([F.linear(fp8.fake_quant_activation(x, si), fp8.dequantize(q, s))
                      for (q, s), si in zip(quantized, in_scales)], dim=-1)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="do not add up"):
        ops.linear_fp8(x, torch.cat([q for q, _ in quantized]), in_scales, in_scales, [8, 4])
    with pytest.raises(ValueError, match="one scale per shard"):
        ops.linear_fp8(x, torch.cat([q for q, _ in quantized]), in_scales[:2], in_scales, [8, 4, 4])


def test_linear_gptq_is_exact_w4a16():
    g = torch.Generator().manual_seed(2)
    w, x = torch.randn(16, 256, generator=g), torch.randn(3, 256, generator=g)
    t = gptq.quantize(w, 128, desc_act=True)
    out = ops.linear_gptq(x, t["qweight"], t["qzeros"], t["scales"], t["g_idx"])
    torch.testing.assert_close(out, F.linear(x, gptq.dequantize(t["qweight"], t["qzeros"], t["scales"], t["g_idx"])),
                               rtol=0, atol=0)


@pytest.mark.parametrize("model", ["a13b", "large", "dense"])
def test_core_runs_fp8_as_w8a8_with_weight_only_as_an_option(tiny, model):
    path = tiny(model, fmt="fp8")
    m = load_model(path, torch.float32)
    kinds = {type(mod) for mod in m.modules()}
    assert Fp8Linear in kinds and (Fp8Experts in kinds) == (model != "dense")
    assert not any(isinstance(mod, torch.nn.Linear) and name != "lm_head" for name, mod in m.named_modules())
    w8a8, weight_only = logits(path), logits(path, fp8_activations="none")
    assert (w8a8 - weight_only).abs().max() > 1e-3
    with pytest.raises(ValueError, match="fp8_activations='dynamic'"):
        load_model(path, fp8_activations="dynamic")


def test_tiny_fp8_input_scales_are_per_input(tiny):
    """Like a calibrated release: q/k/v (and an expert's gate/up) read one input and share its
    scale; each expert's and each down projection's scale is its own."""
    t = load_file(os.path.join(tiny("a13b", fmt="fp8"), "model.safetensors"))
    p = "model.layers.1"
    s = {k: float(v) for k, v in t.items() if k.startswith(p) and k.endswith("input_scale")}
    assert s[f"{p}.self_attn.q_proj.input_scale"] == s[f"{p}.self_attn.k_proj.input_scale"] \
        == s[f"{p}.self_attn.v_proj.input_scale"]
    assert s[f"{p}.mlp.experts.0.gate_proj.input_scale"] == s[f"{p}.mlp.experts.0.up_proj.input_scale"]
    per_expert = {s[f"{p}.mlp.experts.{e}.gate_proj.input_scale"] for e in range(8)}
    assert len(per_expert) == 8


def _routed_experts(path: str, layer: int) -> torch.Tensor:
    """How many (token, slot)s of PROMPT layer `layer` routes to each expert."""
    m = load_model(path, torch.float32)
    seen = {}
    moe = m.model.layers[layer].mlp
    moe.gate.register_forward_hook(lambda mod, args, out: seen.setdefault("logits", out))
    m(PROMPT)
    _, ids = ops.moe_route(seen["logits"], moe.top_k, moe.renormalize)
    return torch.bincount(ids.reshape(-1).long(), minlength=moe.experts.w13.shape[0])


def test_each_projection_uses_its_own_input_scale(tiny, tmp_path):
    """Perturbing one stored input_scale changes the output, for every kind of projection; an
    unrouted expert's scale changes nothing (scales are per expert, never collapsed to a max)."""
    path = tiny("a13b", fmt="fp8")
    base = logits(path)
    counts = _routed_experts(path, 1)
    used, unused = int(counts.argmax()), [e for e in range(len(counts)) if counts[e] == 0]
    assert unused, f"every expert is routed ({counts.tolist()}); the prompt needs to leave one out"
    p = "model.layers.1"
    changed = {}
    for name in (f"{p}.self_attn.k_proj", f"{p}.self_attn.o_proj", f"{p}.mlp.shared_mlp.down_proj",
                 f"{p}.mlp.experts.{used}.gate_proj", f"{p}.mlp.experts.{used}.up_proj",
                 f"{p}.mlp.experts.{used}.down_proj", f"{p}.mlp.experts.{unused[0]}.up_proj"):
        def halve(t, name=name):
            t[f"{name}.input_scale"] = t[f"{name}.input_scale"] * 0.5
        out = logits(edited_copy(path, str(tmp_path / name), halve))
        changed[name] = float((out - base).abs().max().detach())
    print("max |d logit| after halving one input_scale:", changed)
    for name, d in changed.items():
        if name.endswith(f"experts.{unused[0]}.up_proj"):
            assert d == 0.0, name
        else:
            assert d > 1e-4, name


# ---- bad input -------------------------------------------------------------------------------


def test_fp8_missing_or_misshaped_input_scale_is_named(tiny, tmp_path):
    path = tiny("a13b", fmt="fp8")
    name = "model.layers.0.mlp.experts.2.down_proj.input_scale"
    missing = edited_copy(path, str(tmp_path / "missing"), lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match=f"missing tensor '{name}'"):
        load_model(missing)

    def widen(t):
        t[name] = t[name].reshape(1).repeat(4)
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' has shape \[4\], expected \[\]"):
        load_model(edited_copy(path, str(tmp_path / "shape"), widen))


def test_gptq_g_idx_must_match_desc_act(tiny, tmp_path):
    act_order = tiny("a13b", fmt="gptq-int4", size="mid")  # desc_act true; hidden 512: 4 permuted groups
    said_no_act_order = edited_copy(act_order, str(tmp_path / "no-desc-act"),
                                    edit_config=lambda c: c["quantization_config"].update(desc_act=False))
    with pytest.raises(CheckpointError, match=r"g_idx' is not contiguous groups .* desc_act: false requires "
                                              r"\(it looks like act order: set desc_act: true\)"):
        load_model(said_no_act_order)

    def unbalance(t):
        g_idx = t["model.layers.0.self_attn.q_proj.g_idx"]
        g_idx[:3] = 0
        t["model.layers.0.self_attn.q_proj.g_idx"] = g_idx
    with pytest.raises(CheckpointError, match=r"'model.layers.0.self_attn.q_proj.g_idx' does not put exactly "
                                              r"\d+ input rows in each"):
        load_model(edited_copy(act_order, str(tmp_path / "unbalanced"), unbalance))


def test_an_ignored_layers_entry_that_names_no_module_is_refused(tiny, tmp_path):
    path = tiny("a13b", fmt="fp8")

    def typo(cfg):
        cfg["quantization_config"]["ignored_layers"].append("model.layers.0.mlp.share_mlp.down_proj")
    bad = edited_copy(path, str(tmp_path / "typo"), edit_config=typo)
    with pytest.raises(CheckpointError, match=r"ignored_layers entry 'model.layers.0.mlp.share_mlp.down_proj' "
                                              r"names no module"):
        load_model(bad)
