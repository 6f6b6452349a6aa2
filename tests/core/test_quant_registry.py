"""The quantization registry: a new format is one module + its registration, and the runtime rule.

The dummy format below (int8 weight-only, one scale per output row) is registered for one test
only; everything downstream -- config parsing, `make-tiny`, checkpoint validation, the reference
model's load-time dequantisation and the engines' streaming dequantisation -- picks it up from the
registry with no other change.
"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from hunyuan_plugins import quant
from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.checkpoint import Checkpoint, CheckpointError, canonical_weights
from hunyuan_plugins.core.model import generate, load_model
from hunyuan_plugins.core.tiny import make_tiny, random_weights
from hunyuan_plugins.quant.stream import dequantized


class Int8PerRow(quant.QuantFormat):
    """Test-only: ``weight`` int8 [out, in] + ``weight_scale`` fp32 [out]; real = q * scale[row]."""

    method = "int8_rows"
    tiny_name = "int8-rows"
    ignore_field = "modules_to_not_convert"
    suffixes = {"weight": (torch.int8,), "weight_scale": (torch.float32,)}
    activations = "unquantized (W8A16)"

    def parse(self, qc):
        if qc.get("bits") != 8:
            raise ValueError(f"quantization_config.bits={qc.get('bits')!r} is not supported; expected 8")
        return {}

    def to_hf(self, spec):
        return {"quant_method": self.method, "bits": 8, "modules_to_not_convert": list(spec.ignored)}

    def tiny_spec(self, ignored):
        return quant.QuantSpec(self.method, None, False, ignored)

    def shapes(self, spec, out_features, in_features):
        return {"weight": (out_features, in_features), "weight_scale": (out_features,)}

    def dequantize(self, spec, tensors, dtype):
        self.require(tensors, ("weight", "weight_scale"))
        return (tensors["weight"].float() * tensors["weight_scale"][:, None]).to(dtype)

    def quantize(self, spec, prefix, w):
        scale = w.abs().amax(dim=1).clamp_min(1e-8) / 127
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return {f"{prefix}.weight": q, f"{prefix}.weight_scale": scale.float()}


@pytest.fixture
def int8_rows(monkeypatch):
    monkeypatch.setitem(quant.FORMATS, Int8PerRow.method, Int8PerRow())
    return quant.FORMATS[Int8PerRow.method]


def test_a_registered_format_runs_end_to_end(tmp_path, int8_rows):
    path = make_tiny(str(tmp_path / "int8"), "a13b", "tencent", "int8-rows")
    ck = Checkpoint(path)  # validated against the format's own suffixes, shapes and dtypes
    assert ck.quant == quant.QuantSpec("int8_rows", None, False, quant.DEFAULT_IGNORED)
    raw = load_file(os.path.join(path, "model.safetensors"))
    prefix = "model.layers.0.mlp.experts.3.down_proj"
    assert raw[f"{prefix}.weight"].dtype == torch.int8 and raw[f"{prefix}.weight_scale"].shape == (128,)
    assert raw["model.layers.0.mlp.gate.wg.weight"].dtype == torch.float32  # ignored: left as is

    sd = ck.state_dict(torch.float32)
    expect = raw[f"{prefix}.weight"].float() * raw[f"{prefix}.weight_scale"][:, None]
    assert torch.equal(sd[f"{prefix}.weight"], expect)
    # close to the weights it was made from (int8 per row: <= scale / 2 per element)
    ref = random_weights(ck.cfg)[f"{prefix}.weight"]
    assert (sd[f"{prefix}.weight"] - ref).abs().max() <= ref.abs().amax() / 254 + 1e-7

    # the engines' streaming dequantisation gives the same tensors as the reference model's load
    streamed = dict(dequantized(canonical_weights(raw.items(), ck.cfg), ck.quant, torch.float32))
    assert streamed.keys() == sd.keys()
    assert all(torch.equal(streamed[k], sd[k].to(streamed[k].dtype)) for k in sd)

    model = load_model(path)
    assert len(generate(model, [1, 5, 9, 33], 4)) == 4


def test_a_registered_format_checks_its_tensors(tmp_path, int8_rows):
    path = make_tiny(str(tmp_path / "int8"), "dense", "tencent", "int8-rows")
    file = os.path.join(path, "model.safetensors")
    raw = load_file(file)
    raw["model.layers.1.mlp.up_proj.weight_scale"] = torch.ones(3)
    raw["model.layers.2.self_attn.o_proj.weight"] = raw["model.layers.2.self_attn.o_proj.weight"].float()
    save_file(raw, file)
    with pytest.raises(CheckpointError) as err:
        Checkpoint(path)
    text = str(err.value)
    assert "model.layers.1.mlp.up_proj.weight_scale' has shape [3], expected [128]" in text
    assert "model.layers.2.self_attn.o_proj.weight' has dtype torch.float32, expected torch.int8" in text


def test_unknown_method_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"quant_method='awq' is not supported; supported: fp8, gptq"):
        quant.QuantSpec.from_hf({"quant_method": "awq", "bits": 4, "group_size": 128})
    with pytest.raises(ValueError, match="'nf4'"):
        quant.get_format("nf4")
    with pytest.raises(ValueError, match="registered twice"):
        quant.register(type(quant.FORMATS["fp8"]))


def test_every_registered_format_is_a_make_tiny_format():
    from hunyuan_plugins.core.tiny import FORMATS

    assert set(FORMATS) == {"bf16", "fp32"} | {f.tiny_name for f in quant.FORMATS.values()}


FP8 = {"quant_method": "fp8", "activation_scheme": "static"}


@pytest.mark.parametrize("qc, kw, env, runtime, reason", [
    (None, dict(on_cpu=True), None, quant.Runtime.UNQUANTIZED, ""),
    (FP8, dict(on_cpu=False), None, quant.Runtime.QUANTIZED, ""),
    # CPU no longer means dequantised: the engines' quantized layers load it, our ops compute it
    (FP8, dict(on_cpu=True), None, quant.Runtime.QUANTIZED, ""),
    (FP8, dict(on_cpu=False, engine_has_config=False), None, quant.Runtime.DEQUANTIZED,
     "the engine was not given the quantization config"),
    (FP8, dict(on_cpu=False), "1", quant.Runtime.DEQUANTIZED, "HUNYUAN_VLLM_DEQUANTIZE=1"),
    (FP8, dict(on_cpu=True), "0", quant.Runtime.QUANTIZED, ""),
    # a config the engine never saw cannot run on its quantized layers, whatever the variable says
    (FP8, dict(on_cpu=True, engine_has_config=False), "0", quant.Runtime.DEQUANTIZED,
     "the engine was not given the quantization config"),
])
def test_the_one_runtime_rule(monkeypatch, qc, kw, env, runtime, reason):
    if env is None:
        monkeypatch.delenv("HUNYUAN_VLLM_DEQUANTIZE", raising=False)
    else:
        monkeypatch.setenv("HUNYUAN_VLLM_DEQUANTIZE", env)
    plan = quant.plan(qc, engine="vllm", **kw)
    assert plan.runtime is runtime and plan.reason == reason
    assert plan.dequantize == (runtime is quant.Runtime.DEQUANTIZED)
    if runtime is quant.Runtime.DEQUANTIZED:
        assert plan.describe("moe: x") == f"fp8 checkpoint dequantised at load ({reason}); moe: x"
    elif runtime is quant.Runtime.QUANTIZED:
        assert plan.describe("moe: x") == ("fp8 (static per-tensor e4m3 with the stored input_scale (W8A8)) "
                                           "loaded quantized; moe: x")


def test_a_bad_dequantize_switch_is_named(monkeypatch):
    monkeypatch.setenv("HUNYUAN_VLLM_DEQUANTIZE", "yes")
    with pytest.raises(ValueError, match="HUNYUAN_VLLM_DEQUANTIZE='yes' must be 0 or 1"):
        quant.plan(FP8, engine="vllm")


def test_each_engine_has_its_own_switch(monkeypatch):
    monkeypatch.setenv("HUNYUAN_SGLANG_DEQUANTIZE", "1")
    monkeypatch.delenv("HUNYUAN_VLLM_DEQUANTIZE", raising=False)
    assert quant.plan(FP8, engine="sglang", on_cpu=False).dequantize
    assert not quant.plan(FP8, engine="vllm", on_cpu=False).dequantize


def test_plan_rejects_a_bad_config_naming_the_field():
    with pytest.raises(ValueError, match=r"quantization_config\.activation_scheme"):
        quant.plan({"quant_method": "fp8", "activation_scheme": "dynamic"}, engine="vllm", on_cpu=True)


def test_kv_slot_matches_the_owner_layers(tiny):
    large = HunyuanConfig.from_pretrained(tiny("large"))
    assert [large.kv_slot(i) for i in range(large.num_layers)] == [0, 0, 1, 1]
    a13b = HunyuanConfig.from_pretrained(tiny("a13b"))
    assert [a13b.kv_slot(i) for i in range(a13b.num_layers)] == [0, 1, 2, 3]


def test_the_trtllm_builder_names_a_format_it_cannot_convert(tmp_path, int8_rows):
    from hunyuan_plugins.trtllm.convert import BuildError, make_plan

    ck = Checkpoint(make_tiny(str(tmp_path / "int8"), "dense", "tencent", "int8-rows"))
    with pytest.raises(BuildError, match=r"quant_method='int8_rows': the TensorRT-LLM builder converts fp8, gptq"):
        make_plan(ck)
