"""Engine-agnostic load-time dequantisation of a canonical weight stream.

Used by engine adapters on platforms without kernels for a checkpoint's quantized format (CPU):
the layers are built unquantized and each quantized projection (Tencent FP8 static per-tensor:
``weight``/``weight_scale``/``input_scale``; GPTQ-Int4: ``qweight``/``qzeros``/``scales``/``g_idx``)
is turned back into a plain ``weight`` by the core (``core/quant.py``) as it streams in.
Pure torch; imports no engine. (Shared by the vLLM and SGLang adapters.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import torch

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core import quant as Q

SUFFIXES = {"fp8": ("weight", "weight_scale", "input_scale"), "gptq": ("qweight", "qzeros", "scales", "g_idx")}


def checkpoint_quantization(model_path: str) -> dict | None:
    """The ``quantization_config`` of a local checkpoint's own config.json (None if absent)."""
    path = os.path.join(model_path, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f).get("quantization_config")


def quant_method(quantization_config: dict | None) -> str | None:
    spec = Q.QuantSpec.from_hf(quantization_config)
    return None if spec is None else spec.method


def dequantized(stream: Iterator[tuple[str, torch.Tensor]], cfg: HunyuanConfig,
                dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Canonical stream with quantized projections replaced by their ``.weight`` dequantised to `dtype`."""
    spec = Q.QuantSpec.from_hf(cfg.quantization_config)
    if spec is None:
        yield from stream
        return
    needed = SUFFIXES[spec.method]
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in stream:
        prefix, suffix = name.rsplit(".", 1)
        quantized = suffix in needed and (suffix != "weight" or tensor.dtype == torch.float8_e4m3fn)
        if not quantized:
            yield name, tensor
            continue
        parts = pending.setdefault(prefix, {})
        parts[suffix] = tensor
        if all(s in parts for s in needed):
            del pending[prefix]
            yield f"{prefix}.weight", Q.dequantize_linear(spec.method, parts, dtype)
    if pending:
        prefix, parts = next(iter(pending.items()))
        missing = [s for s in needed if s not in parts]
        raise ValueError(f"quantized projection '{prefix}' is missing {missing} in the checkpoint")
