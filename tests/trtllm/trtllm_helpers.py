"""Helpers shared by the TensorRT-LLM adapter tests."""

import json
import os

import torch
from safetensors.torch import save_file

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.tiny import random_weights, tiny_config, to_dialect
from hunyuan_plugins.core.tokenizer import write_tokenizer


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
        qc["modules_to_not_convert"] = list(qc.get("modules_to_not_convert", ["lm_head", "mlp.gate.wg"])) + list(
            extra_ignored)
    cfg = HunyuanConfig.from_dict(raw)
    tensors = to_dialect(random_weights(cfg, 0), cfg, "tencent", "gptq-int4")
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, "model.safetensors"))
    json.dump(raw, open(os.path.join(out_dir, "config.json"), "w"))
    write_tokenizer(out_dir, cfg.vocab_size)
    return out_dir
