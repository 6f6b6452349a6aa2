"""Hunyuan's quantization backend for vLLM: one ``QuantizationConfig`` registered through vLLM's own
registry (``register_quantization_config("hunyuan")``) that claims Tencent FP8 (static per-tensor
W8A8) and GPTQ-Int4 checkpoints of the three Hunyuan architectures, and nothing else.

Why a config of our own rather than vLLM's ``fp8`` / ``gptq``:

* vLLM accepts only fp16/bf16 with them (``get_supported_act_dtypes``); ours accepts fp32 too;
* vLLM's fp8 per-tensor path collapses the per-shard input scales of a fused qkv / gate_up linear
  to their max and requantises the weight shards to one scale, and its MoE collapses the gate/up
  and per-expert input scales likewise: not the checkpoint's semantics (each projection quantizes
  its input with its own ``input_scale``);
* vLLM 0.32's GPTQ refuses ``desc_act: true`` (act order) and drops ``g_idx``; Tencent's
  GPTQ-Int4 releases use act order.

Every method keeps vLLM's parameter creation and weight loaders (``Fp8LinearMethod`` /
``Fp8MoEMethod`` / ``AutoGPTQMoEMethod`` / ``UnquantizedFusedMoEMethod.create_weights``, vLLM's
parameter classes for GPTQ linears), so TP/EP sharding, fused qkv/gate_up shards and the expert
mapping are vLLM's. Per layer kind it then computes with vLLM's kernel where vLLM has one for the
format on this platform (:func:`vllm_has_moe_kernel`, ``HUNYUAN_MOE_BACKEND`` for MoE, see
``hunyuan_plugins.ops.backend``), else with ``torch.ops.hunyuan.*``. What ran is recorded in
:data:`KERNELS` for the start-up log line.

MoE routing in our methods is ``hunyuan::moe_route`` (fp32 softmax -> top-k -> renormalise when
k > 1; top-1 keeps the raw probability), so the methods are *monolithic* in vLLM's terms (they get
the router logits); the shared expert still runs in vLLM's MoE runner. Expert parallel: global
expert ids are mapped to this rank's local ids with the layer's ``expert_map`` (-1 = another rank).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.logger import init_logger
from vllm.model_executor.layers.fused_moe import FusedMoEMethodBase, RoutedExperts
from vllm.model_executor.layers.fused_moe.unquantized_fused_moe_method import UnquantizedFusedMoEMethod
from vllm.model_executor.layers.linear import (
    LinearBase,
    LinearMethodBase,
    UnquantizedLinearMethod,
    register_weight_loader_v2_supported_method,
)
from vllm.model_executor.layers.quantization import register_quantization_config
from vllm.model_executor.layers.quantization.auto_gptq import AutoGPTQConfig, AutoGPTQMoEMethod
from vllm.model_executor.layers.quantization.base_config import QuantizationConfig
from vllm.model_executor.layers.quantization.fp8 import Fp8Config, Fp8LinearMethod, Fp8MoEMethod
from vllm.model_executor.parameter import (
    ChannelQuantScaleParameter,
    GroupQuantScaleParameter,
    PackedColumnParameter,
    PackedvLLMParameter,
)
from vllm.model_executor.utils import set_weight_attrs

from hunyuan_plugins import ops
from hunyuan_plugins.config import ARCHITECTURES
from hunyuan_plugins.ops.backend import moe_backend
from hunyuan_plugins.ops.reference import apply_expert_map
from hunyuan_plugins.quant import QuantSpec
from hunyuan_plugins.quant.gptq import int4_expert_layout

logger = init_logger("vllm.hunyuan_plugins")

NAME = "hunyuan"
MODEL_TYPES = ("hunyuan", "hunyuan_v1_moe", "hunyuan_v1_dense")
#: layer kind ("linear", "moe") -> what computes it in this process (for the start-up log line)
KERNELS: dict[str, str] = {}
#: prefixes of vLLM's fused linears -> the checkpoint modules they hold
PACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _model_dtype() -> torch.dtype:
    from vllm.config import get_current_vllm_config

    return get_current_vllm_config().model_config.dtype


def _device_name() -> str | None:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def _record(kind: str, what: str) -> None:
    if KERNELS.get(kind) not in (None, what):
        what = f"{KERNELS[kind]} / {what}"
    KERNELS[kind] = what


def is_hunyuan(hf_config: Any) -> bool:
    archs = set(getattr(hf_config, "architectures", None) or ())
    return bool(archs & set(ARCHITECTURES)) or getattr(hf_config, "model_type", None) in MODEL_TYPES


def claims(hf_quant_cfg: dict | None) -> bool:
    """True for the formats this backend serves: Tencent FP8 static per-tensor, GPTQ 4-bit."""
    if not hf_quant_cfg:
        return False
    method = str(hf_quant_cfg.get("quant_method", "")).lower()
    if method == "fp8":
        return hf_quant_cfg.get("activation_scheme") == "static" and hf_quant_cfg.get("weight_block_size") is None
    return method == "gptq" and hf_quant_cfg.get("bits") == 4


def vllm_has_moe_kernel(fmt: str, spec: QuantSpec | None, dtype: torch.dtype) -> tuple[bool, str]:
    """Whether vLLM 0.32 has a MoE kernel for ``fmt`` on this platform that computes the
    checkpoint's semantics, and why (read in vLLM's fused_moe/oracle and experts sources)."""
    cpu = _on_cpu()
    if fmt == "fp8_w8a8":
        if cpu:
            return False, "no vLLM fp8 W8A8 MoE kernel on cpu (its CPU fp8 MoE is W8A16, W8A8 needs AMX-FP8)"
        if dtype == torch.float32:
            return False, "vLLM's fp8 MoE kernels need fp16/bf16 activations"
        return True, "vLLM fp8 MoE (per-tensor W8A8; gate/up and per-expert input scales collapsed to their max)"
    if fmt == "int4_w4a16":
        if spec is not None and spec.desc_act and not spec.static_groups:
            return False, "vLLM 0.32's GPTQ refuses desc_act (act order)"
        if cpu and not (dtype == torch.bfloat16 and torch.cpu._is_amx_tile_supported()):
            return False, "vLLM's CPU int4 MoE needs bf16 activations and AMX"
        return True, "vLLM GPTQ MoE"
    return True, "vLLM fused MoE"


def moe_choice(fmt: str, spec: QuantSpec | None, dtype: torch.dtype):
    """(backend, reason for the log): ``HUNYUAN_MOE_BACKEND`` applied to what vLLM has here."""
    has, why = vllm_has_moe_kernel(fmt, spec, dtype)
    backend = moe_backend("vllm", fmt, engine_has_kernel=has, device_name=_device_name())
    if backend.ours and not has and not backend.reason.startswith("HUNYUAN_"):
        return backend, why  # why vLLM has none
    return backend, backend.reason


def _float_fmt(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


# --------------------------------------------------------------------------- the config


@register_quantization_config(NAME)
class HunyuanQuantConfig(QuantizationConfig):
    """Tencent FP8 / GPTQ-Int4 Hunyuan checkpoints (``hf_quant_config``), or, with None, an
    unquantized model whose MoE runs on our ops (installed by our model on its MoE layers)."""

    def __init__(self, hf_quant_config: dict | None = None):
        super().__init__()
        self.hf_quant_config = dict(hf_quant_config) if hf_quant_config else None
        self.spec = QuantSpec.from_hf(self.hf_quant_config)  # validates; raises naming a bad field

    def __repr__(self) -> str:
        return f"HunyuanQuantConfig({self.spec})"

    @classmethod
    def get_name(cls) -> str:
        return NAME

    @classmethod
    def get_supported_act_dtypes(cls) -> list[torch.dtype]:
        return [torch.float32, torch.float16, torch.bfloat16]

    @classmethod
    def get_min_capability(cls) -> int:
        return 0

    @classmethod
    def get_config_filenames(cls) -> list[str]:
        return []

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HunyuanQuantConfig:
        return cls(config)

    @classmethod
    def override_quantization_method(cls, hf_quant_cfg, user_quant, hf_config=None) -> str | None:
        if user_quant not in (None, NAME) or hf_config is None or not is_hunyuan(hf_config):
            return None
        return NAME if claims(hf_quant_cfg) else None

    # ---- which method per layer
    def _quantized(self, prefix: str) -> bool:
        head, _, last = prefix.rpartition(".")
        parts = [f"{head}.{p}" for p in PACKED[last]] if last in PACKED else [prefix]
        flags = {self.spec.is_quantized(p) for p in parts}
        if len(flags) > 1:
            raise ValueError(f"{prefix}: quantization_config.{self.spec.format.ignore_field} lists some but not all "
                             f"of {', '.join(parts)}, which vLLM fuses into one linear")
        return flags.pop()

    def get_quant_method(self, layer: torch.nn.Module, prefix: str):
        spec = self.spec
        if isinstance(layer, LinearBase):
            if spec is None or not self._quantized(prefix):
                return UnquantizedLinearMethod()
            if spec.method == "fp8":
                if _on_cpu() or _model_dtype() == torch.float32:
                    _record("linear", "hunyuan linear_fp8 (W8A8 static, per-shard scales; " + (
                        "vLLM's CPU fp8 linears are W8A16 or collapse fused shards to one scale)" if _on_cpu()
                        else "vLLM's fp8 GEMMs need fp16/bf16)"))
                    return HunyuanFp8LinearMethod(Fp8Config.from_config(self.hf_quant_config))
                _record("linear", "vLLM Fp8LinearMethod (W8A8 static)")
                return Fp8LinearMethod(Fp8Config.from_config(self.hf_quant_config))
            if spec.desc_act and not spec.static_groups:
                _record("linear", "hunyuan linear_gptq (W4A16, act order; vLLM 0.32's GPTQ refuses desc_act)")
                return HunyuanGPTQLinearMethod(spec)
            if _on_cpu():
                _record("linear", "hunyuan linear_gptq (W4A16; vLLM's CPU WNA16 kernel is not used for "
                                  "GPTQ checkpoints by this backend)")
                return HunyuanGPTQLinearMethod(spec)
            cfg = AutoGPTQConfig.from_config({**self.hf_quant_config, "desc_act": False})
            cfg.packed_modules_mapping = self.packed_modules_mapping
            _record("linear", "vLLM AutoGPTQLinearMethod (W4A16)")
            return cfg.get_quant_method(layer, prefix)
        if isinstance(layer, RoutedExperts):
            return self._moe_method(layer, prefix)
        if spec is not None and spec.method == "fp8":
            from vllm.model_executor.layers.attention import Attention
            from vllm.model_executor.layers.quantization.fp8 import Fp8KVCacheMethod

            if isinstance(layer, Attention):  # k/v scales of an fp8 KV cache, as vLLM's fp8 loads them
                return Fp8KVCacheMethod(Fp8Config.from_config(self.hf_quant_config))
        return None

    def _moe_method(self, layer: RoutedExperts, prefix: str) -> FusedMoEMethodBase:
        spec = self.spec
        if spec is None or not spec.is_quantized(prefix):
            fmt = _float_fmt(layer.params_dtype)
            backend, why = moe_choice(fmt, None, layer.params_dtype)
            if backend.ours:
                _record("moe", f"hunyuan moe_experts ({fmt}; {why})")
                return HunyuanMoEMethod(layer.moe_config)
            _record("moe", f"vLLM fused MoE ({fmt}; {why})")
            return UnquantizedFusedMoEMethod(layer.moe_config)
        if spec.method == "fp8":
            backend, why = moe_choice("fp8_w8a8", spec, layer.params_dtype)
            if backend.ours:
                _record("moe", f"hunyuan moe_experts_fp8 (W8A8 static, exact per expert and gate/up; {why})")
                return HunyuanFp8MoEMethod(Fp8Config.from_config(self.hf_quant_config), layer)
            _record("moe", f"vLLM Fp8MoEMethod (W8A8 static; gate/up and per-expert input scales collapsed to "
                           f"their max; {why})")
            return Fp8MoEMethod(Fp8Config.from_config(self.hf_quant_config), layer)
        backend, why = moe_choice("int4_w4a16", spec, layer.params_dtype)
        if backend.ours:
            _record("moe", f"hunyuan moe_experts_int4 (W4A16; {why})")
            return HunyuanInt4MoEMethod(spec, layer)
        _record("moe", f"vLLM GPTQ MoE (W4A16; {why})")
        cfg = AutoGPTQConfig.from_config({**self.hf_quant_config, "desc_act": False})
        return cfg.get_quant_method(layer, prefix)


# --------------------------------------------------------------------------- linears


def _check_loaded(layer: torch.nn.Module, name: str, what: str) -> torch.Tensor:
    t = getattr(layer, name)
    if not bool(torch.isfinite(t.data.float()).all()):
        raise ValueError(f"{getattr(layer, 'prefix', type(layer).__name__)}.{name}: {what} was not loaded from the "
                         f"checkpoint (a shard's tensor is missing)")
    return t


@register_weight_loader_v2_supported_method  # vLLM's parameter loaders (per-shard scales)
class HunyuanFp8LinearMethod(Fp8LinearMethod):
    """vLLM's Fp8LinearMethod parameters and loaders (fp8 ``weight`` [N, K], ``weight_scale`` [S],
    ``input_scale`` [S] for the S logical shards), computed with ``hunyuan::linear_fp8``: each
    shard quantizes its input with its own ``input_scale`` and dequantizes with its own
    ``weight_scale`` (nothing collapsed, nothing requantised)."""

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra_weight_attrs):
        super().create_weights(layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                               params_dtype, **extra_weight_attrs)
        # NaN until loaded: a shard whose scale never arrives is an error, not a silent 1.0
        layer.weight_scale.data.fill_(float("nan"))
        layer.input_scale.data.fill_(float("nan"))

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        _check_loaded(layer, "weight_scale", "weight_scale")
        _check_loaded(layer, "input_scale", "input_scale (static activation scale)")
        layer.hunyuan_output_sizes = [int(s) for s in layer.logical_widths]

    def apply(self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        out = ops.linear_fp8(x, layer.weight, layer.weight_scale, layer.input_scale, layer.hunyuan_output_sizes)
        return out if bias is None else out + bias


@register_weight_loader_v2_supported_method
class HunyuanGPTQLinearMethod(LinearMethodBase):
    """GPTQ v1 int4 (AutoGPTQ) with ``g_idx``: vLLM's parameter classes and loaders for
    ``qweight`` [K/8, N], ``qzeros`` [K/G, N/8], ``scales`` [K/G, N] (as vLLM's AutoGPTQ creates them)
    plus ``g_idx`` per logical shard [S, K] (GPTQ orders each projection's inputs by its own
    activation order, so q/k/v and gate/up of a fused linear differ). Computed with
    ``hunyuan::linear_gptq`` on the tensors as stored (W4A16), one call per distinct act order."""

    PACK = 8

    def __init__(self, spec: QuantSpec):
        self.spec = spec

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra_weight_attrs):
        from vllm.distributed import get_tensor_model_parallel_rank

        loader = extra_weight_attrs.get("weight_loader")
        n = sum(output_partition_sizes)
        G = input_size if self.spec.group_size in (None, -1) else self.spec.group_size
        row_parallel = input_size != input_size_per_partition
        # act order: a rank's input rows belong to any group, so every rank keeps all group scales
        full_groups = row_parallel and self.spec.desc_act and not self.spec.static_groups
        n_groups = (input_size if full_groups else input_size_per_partition) // G
        layer.register_parameter("qweight", PackedvLLMParameter(
            data=torch.empty(input_size_per_partition // self.PACK, n, dtype=torch.int32), input_dim=0, output_dim=1,
            packed_dim=0, packed_factor=self.PACK, weight_loader=loader))
        scales = dict(data=torch.empty(n_groups, n, dtype=params_dtype), weight_loader=loader)
        zeros = dict(data=torch.empty(n_groups, n // self.PACK, dtype=torch.int32), weight_loader=loader)
        if full_groups:
            layer.register_parameter("scales", ChannelQuantScaleParameter(output_dim=1, **scales))
            layer.register_parameter("qzeros", PackedColumnParameter(output_dim=1, packed_dim=1,
                                                                     packed_factor=self.PACK, **zeros))
        else:
            layer.register_parameter("scales", GroupQuantScaleParameter(output_dim=1, input_dim=0, **scales))
            layer.register_parameter("qzeros", PackedvLLMParameter(input_dim=0, output_dim=1, packed_dim=1,
                                                                   packed_factor=self.PACK, **zeros))
        shards = len(output_partition_sizes)
        g_idx = torch.nn.Parameter(torch.full((shards, input_size_per_partition), -1, dtype=torch.int32),
                                   requires_grad=False)
        tp_rank = get_tensor_model_parallel_rank() if row_parallel else 0

        def load_g_idx(param, loaded_weight, loaded_shard_id=None):
            rows = param.shape[1]
            loaded = loaded_weight.narrow(0, tp_rank * rows, rows) if row_parallel else loaded_weight
            param.data[_shard_row(loaded_shard_id)].copy_(loaded)

        set_weight_attrs(g_idx, {"weight_loader": load_g_idx})
        layer.register_parameter("g_idx", g_idx)
        layer.logical_widths = list(output_partition_sizes)

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        if bool((layer.g_idx.data < 0).any()):
            raise ValueError(f"{getattr(layer, 'prefix', type(layer).__name__)}.g_idx was not loaded from the "
                             "checkpoint for every shard")
        g = layer.g_idx.data
        if all(torch.equal(g[0], g[i]) for i in range(1, g.shape[0])):
            layer.hunyuan_splits = None  # one act order: one call
        else:
            layer.hunyuan_splits = [int(s) for s in layer.logical_widths]

    def apply(self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if layer.hunyuan_splits is None:
            out = ops.linear_gptq(x, layer.qweight, layer.qzeros, layer.scales, layer.g_idx[0])
        else:
            outs, start = [], 0
            for s, width in enumerate(layer.hunyuan_splits):
                cols = slice(start, start + width)
                zcols = slice(start // self.PACK, (start + width) // self.PACK)
                outs.append(ops.linear_gptq(x, layer.qweight[:, cols], layer.qzeros[:, zcols], layer.scales[:, cols],
                                            layer.g_idx[s]))
                start += width
            out = torch.cat(outs, dim=-1)
        return out if bias is None else out + bias


def _shard_row(shard_id) -> int:
    """vLLM's loaded_shard_id ("q"/"k"/"v", 0/1 for gate/up, None) -> row of a per-shard tensor."""
    if shard_id is None:
        return 0
    if isinstance(shard_id, str):
        return {"q": 0, "k": 1, "v": 2}[shard_id]
    return int(shard_id)


# --------------------------------------------------------------------------- MoE


class _HunyuanMoEBase(FusedMoEMethodBase):
    """Our ops compute the routed experts: routing from the router logits (monolithic), global
    expert ids mapped to this rank's local ones."""

    @property
    def is_monolithic(self) -> bool:
        return True

    @property
    def supports_eplb(self) -> bool:
        return False

    def get_fused_moe_quant_config(self, layer):
        return None

    def _route(self, layer: RoutedExperts, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights, ids = ops.moe_route(router_logits.float(), layer.top_k, layer.renormalize)
        expert_map = layer.expert_map
        if expert_map is not None:
            ids = apply_expert_map(ids, expert_map)
        return weights, ids

    def apply(self, layer, x, topk_weights, topk_ids, shared_experts, shared_experts_input):
        raise RuntimeError("hunyuan MoE methods route themselves (apply_monolithic)")

    def _ran(self, op: str, x: torch.Tensor) -> None:
        """Log once per process which implementation of our op served the first MoE call."""
        if _RAN or torch.compiler.is_compiling():
            return
        _RAN.add(op)
        logger.info("hunyuan_plugins: MoE ran torch.ops.hunyuan.%s on %s via %s", op, x.device.type,
                    ops.implementation(x.device))


_RAN: set[str] = set()


class HunyuanMoEMethod(_HunyuanMoEBase):
    """Unquantized experts (vLLM's ``UnquantizedFusedMoEMethod`` parameters) on ``hunyuan::moe_experts``."""

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype,
                       **extra_weight_attrs):
        UnquantizedFusedMoEMethod.create_weights(self, layer, num_experts, hidden_size,
                                                 intermediate_size_per_partition, params_dtype, **extra_weight_attrs)

    def apply_monolithic(self, layer, x, router_logits, input_ids=None):
        w, ids = self._route(layer, router_logits)
        out = ops.moe_experts(x, layer.w13_weight, layer.w2_weight, w, ids)
        self._ran("moe_experts", x)
        return out


class HunyuanFp8MoEMethod(_HunyuanMoEBase, Fp8MoEMethod):
    """vLLM's ``Fp8MoEMethod`` parameters and loaders (``w13_weight`` [E, 2I, H] e4m3, ``w13_weight_scale``
    [E, 2] gate/up, ``w2_weight_scale`` [E], ``w2_input_scale`` [E]) with ``w13_input_scale`` widened to
    [E, 2] (gate, up: vLLM keeps one per expert), on ``hunyuan::moe_experts_fp8``, exact."""

    def __init__(self, quant_config: Fp8Config, layer: RoutedExperts):
        FusedMoEMethodBase.__init__(self, layer.moe_config)  # no vLLM kernel selection: ours computes
        self.quant_config = quant_config
        self.weight_block_size = None
        self.block_quant = False
        self.weight_scale_name = "weight_scale"
        self.weight_scale_refine = None
        self.moe_block_shape = None

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype,
                       **extra_weight_attrs):
        Fp8MoEMethod.create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition,
                                    params_dtype, **extra_weight_attrs)
        a13 = torch.nn.Parameter(torch.full((num_experts, 2), float("nan")), requires_grad=False)

        def load_a13(param, loaded_weight, weight_name, shard_id, expert_id, return_success=False):
            local = layer._map_global_expert_id_to_local_expert_id(expert_id)
            if local == -1:
                return False if return_success else None
            if loaded_weight.numel() != 1:
                raise ValueError(f"{weight_name} (expert {expert_id}, {shard_id}): a per-tensor input_scale must "
                                 f"have one element, got shape {list(loaded_weight.shape)}")
            param.data[local, 0 if shard_id == "w1" else 1] = loaded_weight.reshape(())
            return True if return_success else None

        layer.register_parameter("w13_input_scale", a13)
        set_weight_attrs(a13, {"weight_loader": load_a13})
        for name in ("w13_weight_scale", "w2_weight_scale", "w2_input_scale"):
            getattr(layer, name).data.fill_(float("nan"))

    def process_weights_after_loading(self, layer) -> None:
        prefix = layer.layer_name
        for name in ("w13_weight_scale", "w2_weight_scale", "w13_input_scale", "w2_input_scale"):
            if not bool(torch.isfinite(getattr(layer, name).data).all()):
                bad = (~torch.isfinite(getattr(layer, name).data)).nonzero()[0].tolist()
                raise ValueError(f"{prefix}.{name}: not loaded for local expert {bad[0]} (a per-expert "
                                 f"{'input_scale' if 'input' in name else 'weight_scale'} is missing)")

    def apply_monolithic(self, layer, x, router_logits, input_ids=None):
        w, ids = self._route(layer, router_logits)
        out = ops.moe_experts_fp8(x, layer.w13_weight, layer.w2_weight, layer.w13_weight_scale,
                                  layer.w2_weight_scale, layer.w13_input_scale, layer.w2_input_scale, w, ids)
        self._ran("moe_experts_fp8", x)
        return out


class HunyuanInt4MoEMethod(_HunyuanMoEBase, AutoGPTQMoEMethod):
    """vLLM's ``AutoGPTQMoEMethod`` parameters and loaders (GPTQ K-first stacks ``w13_qweight``,
    ``w13_scales``, ``w13_qzeros``, ``w2_*``) plus per-expert ``g_idx`` stacks (gate, up, down), converted
    once after loading with ``quant.gptq.int4_expert_layout`` for ``hunyuan::moe_experts_int4``."""

    def __init__(self, spec: QuantSpec, layer: RoutedExperts):
        FusedMoEMethodBase.__init__(self, layer.moe_config)  # no vLLM kernel selection: ours computes

        class _Cfg:  # the fields AutoGPTQMoEMethod.create_weights reads
            group_size = spec.group_size or 128
            pack_factor = 8
        self.quant_config = _Cfg()
        self.spec = spec
        self.input_dtype = None

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype,
                       **extra_weight_attrs):
        AutoGPTQMoEMethod.create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition,
                                         params_dtype, **extra_weight_attrs)
        tp_rank, I = layer.moe_config.tp_rank, intermediate_size_per_partition
        w13_g = torch.nn.Parameter(torch.full((num_experts, 2, hidden_size), -1, dtype=torch.int32),
                                   requires_grad=False)
        w2_g = torch.nn.Parameter(torch.full((num_experts, I), -1, dtype=torch.int32), requires_grad=False)

        def load_g_idx(param, loaded_weight, weight_name, shard_id, expert_id, return_success=False):
            local = layer._map_global_expert_id_to_local_expert_id(expert_id)
            if local == -1:
                return False if return_success else None
            if shard_id == "w2":  # down_proj is row parallel: this rank's input rows
                param.data[local].copy_(loaded_weight.narrow(0, tp_rank * I, I))
            else:
                param.data[local, 0 if shard_id == "w1" else 1].copy_(loaded_weight)
            return True if return_success else None

        for name, p in (("w13_g_idx", w13_g), ("w2_g_idx", w2_g)):
            layer.register_parameter(name, p)
            set_weight_attrs(p, {"weight_loader": load_g_idx})

    def process_weights_after_loading(self, layer) -> None:
        prefix = layer.layer_name
        for name in ("w13_g_idx", "w2_g_idx"):
            if bool((getattr(layer, name).data < 0).any()):
                raise ValueError(f"{prefix}.{name}: g_idx was not loaded for every local expert")
        I = layer.w2_qweight.shape[1] * 8  # noqa: E741  (this rank's intermediate size)

        def stack(qweight, qzeros, scales, g_idx):
            return {"qweight": qweight, "qzeros": qzeros, "scales": scales, "g_idx": g_idx}

        # vLLM's w13 stacks hold gate columns then up columns (GPTQ K-first: [E, K/8, 2I])
        q13, z13, s13 = layer.w13_qweight.data, layer.w13_qzeros.data, layer.w13_scales.data
        gate = stack(q13[:, :, :I], z13[:, :, :I // 8], s13[:, :, :I], layer.w13_g_idx.data[:, 0])
        up = stack(q13[:, :, I:], z13[:, :, I // 8:], s13[:, :, I:], layer.w13_g_idx.data[:, 1])
        down = stack(layer.w2_qweight.data, layer.w2_qzeros.data, layer.w2_scales.data, layer.w2_g_idx.data)
        w13_q, w13_s, w2_q, w2_s, w13_perm, w2_perm = int4_expert_layout(gate, up, down)
        for name in ("w13_qweight", "w13_qzeros", "w13_scales", "w2_qweight", "w2_qzeros", "w2_scales",
                     "w13_g_idx", "w2_g_idx", "w13_bias", "w2_bias"):
            if hasattr(layer, name):
                delattr(layer, name)
        layer.hunyuan_int4 = (w13_q, w13_s, w2_q, w2_s, w13_perm, w2_perm)

    def apply_monolithic(self, layer, x, router_logits, input_ids=None):
        w, ids = self._route(layer, router_logits)
        w13_q, w13_s, w2_q, w2_s, w13_perm, w2_perm = layer.hunyuan_int4
        out = ops.moe_experts_int4(x, w13_q, w13_s, w2_q, w2_s, w, ids, w13_perm, w2_perm)
        self._ran("moe_experts_int4", x)
        return out
