"""Helpers shared by the TensorRT-LLM adapter tests."""

import json
import os

import torch
from safetensors.torch import save_file

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.tiny import random_weights, tiny_config, to_dialect
from hunyuan_plugins.core.tokenizer import write_tokenizer
from hunyuan_plugins.quant import QuantSpec


def hf_config(path: str, dtype: str = "float32"):
    """The transformers config object TensorRT-LLM hands to models (a PretrainedConfig)."""
    from transformers import PretrainedConfig

    with open(os.path.join(path, "config.json")) as f:
        raw = json.load(f)
    raw["torch_dtype"] = dtype
    cls = type("HunyuanTestConfig", (PretrainedConfig,), {"model_type": raw["model_type"]})
    pc = cls(**{k: v for k, v in raw.items() if k != "model_type"})
    pc.torch_dtype = getattr(torch, dtype)
    return pc


def make_gptq_contiguous(out_dir, model="a13b", group_size=None, extra_ignored=()):
    """A GPTQ-Int4 tiny checkpoint without act-order (the tiny fixture uses desc_act=true);
    ``extra_ignored``: more modules the quantizer leaves in full precision."""
    raw = tiny_config(model, "tencent", "gptq-int4")
    raw["quantization_config"]["desc_act"] = False
    if group_size is not None:
        raw["quantization_config"]["group_size"] = group_size
    if extra_ignored:
        qc = raw["quantization_config"]
        # the default ignore list, spelled out per layer as AngelSlim writes it (every entry must name a module)
        default = QuantSpec.default_ignored(raw["num_hidden_layers"])
        qc["modules_to_not_convert"] = list(qc.get("modules_to_not_convert", default)) + list(extra_ignored)
    cfg = HunyuanConfig.from_dict(raw)
    tensors = to_dialect(random_weights(cfg, 0), cfg, "tencent", "gptq-int4")
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, "model.safetensors"))
    json.dump(raw, open(os.path.join(out_dir, "config.json"), "w"))
    write_tokenizer(out_dir, cfg.vocab_size)
    return out_dir


def fp8_as_trtllm_loads_it(src: str, dst: str, experts: bool = False) -> str:
    """A copy of the Tencent FP8 checkpoint ``src`` rescaled the way TensorRT-LLM's FP8 QDQ loaders
    rescale it (tensorrt_llm/_torch/modules/linear.py FP8QDQLinearMethod.load_weights_fused_*;
    fused_moe/quantization.py FP8QDQFusedMoEMethod), written as a checkpoint of its own, so that the
    reference core -- exact per projection -- computes what TensorRT-LLM computes:

    * each fused group (q/k/v; gate/up of the shared expert and of dense MLPs) takes the max of its
      input scales, and its weights are requantised to the group's max weight scale
      (``(w.float() * s_i / s_max)`` to e4m3, the loader's formula in fp32);
    * ``experts=True``: every routed expert's gate/up input scale becomes the layer's max over all
      experts' gate and up input scales, every down input scale the layer's max down input scale, and
      each expert's gate/up weights are requantised to max(gate scale, up scale).
    """
    import glob
    import shutil

    from safetensors.torch import load_file

    w: dict = {}
    for f in sorted(glob.glob(os.path.join(src, "*.safetensors"))):
        w.update(load_file(f))
    f8 = torch.float8_e4m3fn

    def requant(prefixes):
        prefixes = [p for p in prefixes if f"{p}.weight" in w]
        if not prefixes:
            return
        s_max = max(w[f"{p}.weight_scale"].float() for p in prefixes)
        i_max = max(w[f"{p}.input_scale"].float() for p in prefixes)
        for p in prefixes:
            w[f"{p}.weight"] = ((w[f"{p}.weight"].float() * w[f"{p}.weight_scale"].float()) / s_max).to(f8)
            w[f"{p}.weight_scale"] = s_max.clone().reshape(w[f"{p}.weight_scale"].shape)
            w[f"{p}.input_scale"] = i_max.clone().reshape(w[f"{p}.input_scale"].shape)

    cfg = HunyuanConfig.from_pretrained(src)
    for i in range(cfg.num_layers):
        layer = f"model.layers.{i}"
        requant([f"{layer}.self_attn.{p}_proj" for p in "qkv"])
        for mlp in (f"{layer}.mlp", f"{layer}.mlp.shared_mlp"):
            requant([f"{mlp}.gate_proj", f"{mlp}.up_proj"])
        if experts and cfg.layers[i].moe:
            ex = [f"{layer}.mlp.experts.{e}" for e in range(cfg.num_experts)]
            a13 = max(w[f"{x}.{p}_proj.input_scale"].float() for x in ex for p in ("gate", "up"))
            a2 = max(w[f"{x}.down_proj.input_scale"].float() for x in ex)
            for x in ex:
                g, u = f"{x}.gate_proj", f"{x}.up_proj"
                s_max = max(w[f"{g}.weight_scale"].float(), w[f"{u}.weight_scale"].float())
                for p in (g, u):
                    w[f"{p}.weight"] = ((w[f"{p}.weight"].float() * w[f"{p}.weight_scale"].float()) / s_max).to(f8)
                    w[f"{p}.weight_scale"] = s_max.clone().reshape(w[f"{p}.weight_scale"].shape)
                    w[f"{p}.input_scale"] = a13.clone().reshape(w[f"{p}.input_scale"].shape)
                w[f"{x}.down_proj.input_scale"] = a2.clone().reshape(w[f"{x}.down_proj.input_scale"].shape)
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if not f.endswith(".safetensors") and f != "model.safetensors.index.json":
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    save_file({k: v.contiguous() for k, v in w.items()}, os.path.join(dst, "model.safetensors"))
    return dst


def load_weights_dict(path):
    """Every stored tensor of a checkpoint directory (single-file or sharded), by stored name."""
    from safetensors.torch import load_file

    from hunyuan_plugins.core.checkpoint import safetensors_files

    out = {}
    for file in sorted(set(safetensors_files(path).values())):
        out.update(load_file(file))
    return out
