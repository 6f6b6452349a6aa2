"""How our vLLM classes serve Tencent FP8 and GPTQ-Int4 checkpoints: vLLM's side of ``quant.plan``.

Quantized checkpoints load *quantized* on every platform, through our quantization backend
``hunyuan`` (``hunyuan_plugins.vllm.quant_methods``, registered with vLLM's
``register_quantization_config`` by ``register()``): vLLM's ``_verify_quantization`` asks it first
(``override_quantization_method``), it claims Tencent FP8 static / GPTQ-Int4 checkpoints of our
three architectures, accepts fp32/fp16/bf16, and its methods create vLLM's parameters and loaders,
then compute per layer kind with vLLM's kernel where vLLM has one for the format on this platform,
else with ``torch.ops.hunyuan.*``. No flag, override or variable is needed.

Load-time dequantisation (weight-only: for FP8 it drops the W8A8 activation quantization) remains
only where ``quant.plan`` says so: the config hidden from vLLM (``--hf-overrides
'{"quantization_config": null}'``; the plugin then reads the files' own config.json) or
``HUNYUAN_VLLM_DEQUANTIZE=1``.

Unquantized MoE layers (and those of a dequantised checkpoint) get the same backend as a
layer-level quant config: ``HUNYUAN_MOE_BACKEND=engine|hunyuan|auto`` picks vLLM's fused MoE or
``hunyuan::moe_experts`` (``hunyuan_plugins.ops.backend.moe_backend``).
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
    """The quant config our linear layers are built with (None when we dequantise at load)."""
    return None if plan.dequantize else vllm_config.quant_config


def moe_quant_config(vllm_config, plan: quant.QuantPlan):
    """The quant config our MoE layers are built with: the model's, else (unquantized or
    dequantised) our backend with no checkpoint format, which installs vLLM's unquantized fused
    MoE method or ours on each MoE layer as ``HUNYUAN_MOE_BACKEND`` decides.

    Why a layer-level QuantizationConfig: ``get_quant_method`` is the interface through which vLLM
    installs a ``FusedMoEMethodBase`` on a ``RoutedExperts`` layer, per layer. The alternative vLLM
    offers plugins, ``CustomOp.register_oot`` on ``UnquantizedFusedMoEMethod``, replaces that class
    for every model in the process, not just ours.
    """
    qc = layer_quant_config(vllm_config, plan)
    if qc is not None:
        return qc
    from hunyuan_plugins.vllm.quant_methods import HunyuanQuantConfig

    return HunyuanQuantConfig(None)


def reset_kernels() -> None:
    from hunyuan_plugins.vllm import quant_methods

    quant_methods.KERNELS.clear()


def describe(vllm_config, plan: quant.QuantPlan) -> str:
    """The quantization part of the start-up log line: the plan and, per layer kind, what computes it."""
    from hunyuan_plugins.vllm.quant_methods import KERNELS

    kinds = dict(KERNELS)
    qc = vllm_config.quant_config
    if "linear" not in kinds:
        kinds["linear"] = (f"vLLM {qc.get_name()}" if qc is not None and not plan.dequantize
                           else "vLLM unquantized")
    return plan.describe(", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())))
