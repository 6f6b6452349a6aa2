"""Hunyuan's quantized checkpoints (Tencent FP8 static W8A8, GPTQ-Int4 W4A16) and MoE backends on
SGLang 0.5.23's quantization-method and MoE-layer interfaces.

How the config reaches the layers. SGLang builds the quantization config in
``model_loader/loader.py::_get_quantization_config`` from ``model_config.quantization`` (read from
the checkpoint's ``quantization_config``) and then REFUSES any model dtype its config class does
not list (``Fp8Config.get_supported_act_dtypes() == [bf16, fp16]``, ``CPUGPTQConfig``: the same;
``GPTQConfig``: fp16): ``float32 is not supported for quantization method fp8``. The plugin
registers an AROUND hook on that function in SGLang's own ``HookRegistry``
(:func:`quant_config_hook`): for OUR model classes and the ``fp8`` / ``gptq`` (``gptq_marlin``)
methods it returns :class:`HunyuanFp8Config` / :class:`HunyuanGPTQConfig` -- subclasses of SGLang's
``Fp8Config`` / ``GPTQConfig`` built by their own ``from_config`` from the same dict -- which accept
fp32 too. Every other model and method goes through SGLang's function untouched. No flag, override
or environment variable is involved.

What each layer kind gets (the start-up log line names it; :class:`KernelChoice`):

* quantized linears: SGLang's own parameter creation and weight loaders -- ``Fp8LinearMethod.
  create_weights`` (e4m3 weight, one ``weight_scale`` and one ``input_scale`` per fused shard),
  ``GPTQLinearScheme.create_weights`` (qweight / qzeros / scales / g_idx, packed-column shard
  loading) -- and SGLang's kernel where it has one for the checkpoint's semantics on this platform
  (CUDA + bf16/fp16: ``Fp8LinearMethod`` / Marlin; Intel AMX + bf16/fp16: SGLang's AMX GPTQ),
  else ``torch.ops.hunyuan.linear_fp8`` (exact per-shard W8A8) / ``linear_gptq`` (W4A16). SGLang's
  CPU fp8 GEMM (AMX only) is weight-only: it never quantizes the input with ``input_scale``, so it
  is not used for these checkpoints.
* routed experts (``FusedMoE`` with an explicit ``quant_method``): ``HUNYUAN_MOE_BACKEND``
  (``hunyuan_plugins.ops.backend.moe_backend``) picks SGLang's method or ours. Ours reuse SGLang's
  parameter creation and ``FusedMoE.weight_loader`` (expert sharding, per-shard scales):
  ``UnquantizedFusedMoEMethod`` / ``Fp8MoEMethod.create_weights`` (plus an exact ``[E, 2]`` gate/up
  input scale; SGLang keeps one per expert, last shard wins) / ``GPTQMarlinMoEScheme.create_weights``
  (the GPTQ tensors as stored, with g_idx), then compute with ``hunyuan::moe_experts`` /
  ``moe_experts_fp8`` / ``moe_experts_int4`` (layout made once after loading by
  ``hunyuan_plugins.quant.gptq.int4_expert_layout``), routed by ``hunyuan::moe_route``. SGLang's
  standard dispatcher hands our methods local expert ids (-1 = another EP rank: skipped by the ops).
* router (fp32) and lm_head: unquantized, as every Hunyuan quantization config lists them.

A tensor missing after loading (a scale still at its fill value) raises, naming the parameter,
the expert and the shard; nothing half-loaded runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from sglang.srt.layers.linear import WEIGHT_LOADER_V2_SUPPORTED, LinearBase
from sglang.srt.layers.moe.fused_moe_triton import FusedMoE, FusedMoeWeightScaleSupported
from sglang.srt.layers.moe.token_dispatcher import StandardCombineInput
from sglang.srt.layers.quantization.base_config import FusedMoEMethodBase
from sglang.srt.layers.quantization.fp8 import Fp8Config, Fp8LinearMethod, Fp8MoEMethod
from sglang.srt.layers.quantization.gptq import GPTQConfig
from sglang.srt.layers.quantization.gptq.gptq import GPTQLinearMethod, GPTQMarlinConfig
from sglang.srt.layers.quantization.gptq.schemes.gptq_linear import GPTQLinearScheme
from sglang.srt.layers.quantization.gptq.schemes.gptq_moe import GPTQMarlinMoEScheme
from sglang.srt.layers.quantization.unquant import UnquantizedFusedMoEMethod, UnquantizedLinearMethod
from sglang.srt.utils import cpu_has_amx_support, is_cuda, set_weight_attrs
from torch.nn import Parameter

from hunyuan_plugins import ops
from hunyuan_plugins.ops.backend import moe_backend
from hunyuan_plugins.quant import QuantSpec
from hunyuan_plugins.quant.gptq import int4_expert_layout

logger = logging.getLogger("sglang.hunyuan_plugins")

ENGINE = "sglang"
#: ``model_config.quantization`` values whose checkpoints our configs serve (gptq_marlin: SGLang's
#: override for a Marlin-compatible GPTQ checkpoint on CUDA)
HUNYUAN_METHODS = ("fp8", "gptq", "gptq_marlin")
QUANT_CONFIG_TARGET = "sglang.srt.model_loader.loader._get_quantization_config"
_HALF = (torch.float16, torch.bfloat16)
_DTYPE_FMT = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def dtype_format(dtype: torch.dtype) -> str:
    if dtype not in _DTYPE_FMT:
        raise ValueError(f"hunyuan_plugins: model dtype {dtype} is not supported (float32, float16, bfloat16)")
    return _DTYPE_FMT[dtype]


def _platform() -> str:
    return "cuda" if is_cuda() else "cpu"


def _device_name() -> str | None:
    return torch.cuda.get_device_name() if is_cuda() else None


def ops_implementation() -> str:
    """Which implementation ``torch.ops.hunyuan`` runs on this platform (for the log line)."""
    return ops.implementation("cuda" if is_cuda() else "cpu")


@dataclass(frozen=True)
class KernelChoice:
    """What computes one layer kind: ``ours`` (torch.ops.hunyuan) or SGLang's, and why."""

    ours: bool
    kernel: str
    reason: str

    def describe(self, kind: str) -> str:
        return f"{kind} -> {self.kernel} ({self.reason})"


# --------------------------------------------------------------------------- the config hook


def quant_config_hook(original, model_config, load_config, *args, **kwargs):
    """AROUND hook on SGLang's ``_get_quantization_config``: our quant configs for our classes."""
    from sglang.srt.model_loader.utils import get_model_architecture

    model_class, _ = get_model_architecture(model_config)
    if (not getattr(model_class, "hunyuan_plugins_model", False)
            or model_config.quantization not in HUNYUAN_METHODS):
        return original(model_config, load_config, *args, **kwargs)
    return build_quant_config(model_config.hf_config, model_config.dtype,
                              getattr(model_class, "packed_modules_mapping", {}))


def build_quant_config(hf_config, dtype: torch.dtype, packed_modules_mapping: dict):
    """Our SGLang quant config for a Hunyuan checkpoint's ``quantization_config``."""
    qc = getattr(hf_config, "quantization_config", None)
    qc = dict(qc.to_dict() if hasattr(qc, "to_dict") else qc or {})
    qc.pop("hf_config", None)
    qc.pop("packed_modules_mapping", None)
    spec = QuantSpec.from_hf(qc)  # validates every field, naming quantization_config.<field>
    cls = {"fp8": HunyuanFp8Config, "gptq": HunyuanGPTQConfig}.get(spec.method)
    if cls is None:
        raise ValueError(f"hunyuan_plugins: no SGLang quant config for quant_method={spec.method!r}")
    config = cls.from_config({**qc, "packed_modules_mapping": dict(packed_modules_mapping)})
    config.setup(spec, qc, dtype, dict(packed_modules_mapping))
    return config


class _HunyuanQuantConfig:
    """What our two configs share: dtype support, the ignore list, the per-kind kernel choices."""

    moe_format: str

    def setup(self, spec: QuantSpec, hf_quant_config: dict, dtype: torch.dtype, packed_modules_mapping: dict) -> None:
        self.spec, self.hf_quant_config, self.dtype = spec, hf_quant_config, dtype
        self.packed_modules_mapping = packed_modules_mapping  # GPTQConfig.from_config drops it
        self.linear_choice = self._linear_choice()
        engine_moe = self._engine_has_moe_kernel()
        backend = moe_backend(ENGINE, self.moe_format, engine_has_kernel=engine_moe, device_name=_device_name())
        self.moe_choice = (KernelChoice(True, self._our_moe_kernel, backend.reason) if backend.ours
                           else KernelChoice(False, self._engine_moe_kernel, backend.reason))

    @classmethod
    def get_supported_act_dtypes(cls) -> list[torch.dtype]:
        return [torch.bfloat16, torch.float16, torch.float32]

    def is_skipped(self, prefix: str) -> bool:
        """True when the module at ``prefix`` is on the checkpoint's ignore list (a fused module:
        all of its parts, which must agree)."""
        head, _, last = prefix.rpartition(".")
        parts = self.packed_modules_mapping.get(last)
        names = [f"{head}.{p}" if head else p for p in parts] if parts else [prefix]
        skipped = {n: not self.spec.is_quantized(n) for n in names}
        if len(set(skipped.values())) > 1:
            raise ValueError(f"hunyuan_plugins: the fused module {prefix} has quantized and unquantized parts: "
                             f"{skipped}; the ignore list must name all of them or none")
        return next(iter(skipped.values()))

    def get_quant_method(self, layer: torch.nn.Module, prefix: str):
        if isinstance(layer, LinearBase):
            if self.is_skipped(prefix):
                return UnquantizedLinearMethod()
            return self._linear_method(layer, prefix)
        if isinstance(layer, FusedMoE):
            if self.is_skipped(prefix):
                return UnquantizedFusedMoEMethod(layer.use_triton_kernels, layer.use_flashinfer_trtllm_moe)
            if self.moe_choice.ours:
                return self._our_moe_method()
            return self._engine_moe_method(layer, prefix)
        return None  # attention: no fp8 KV cache from these checkpoints

    def moe_method(self, prefix: str):
        """(method to hand FusedMoE or None = ask :meth:`get_quant_method`, KernelChoice)."""
        if self.is_skipped(prefix):
            return unquantized_moe_method(self.dtype)
        return (self._our_moe_method() if self.moe_choice.ours else None), self.moe_choice

    def kernels(self) -> dict[str, KernelChoice]:
        return {f"linear {self.moe_format}": self.linear_choice, f"moe {self.moe_format}": self.moe_choice}


class HunyuanFp8Config(_HunyuanQuantConfig, Fp8Config):
    """Tencent FP8 (static per-tensor W8A8): SGLang's ``Fp8Config`` that also takes fp32."""

    moe_format = "fp8_w8a8"
    _our_moe_kernel = "hunyuan::moe_experts_fp8"
    _engine_moe_kernel = "SGLang Fp8MoEMethod"

    def _linear_choice(self) -> KernelChoice:
        if is_cuda() and self.dtype in _HALF:
            return KernelChoice(False, "SGLang Fp8LinearMethod", f"SGLang's static fp8 GEMM on cuda for {self.dtype}")
        why = ("SGLang's CPU fp8 GEMM (AMX) is weight-only, no static input scale" if _platform() == "cpu"
               else f"SGLang's fp8 GEMM does not take {self.dtype}")
        return KernelChoice(True, "hunyuan::linear_fp8", why)

    def _engine_has_moe_kernel(self) -> bool:
        return is_cuda() and self.dtype in _HALF

    def _linear_method(self, layer, prefix):
        return HunyuanFp8LinearMethod(self, prefix) if self.linear_choice.ours else Fp8LinearMethod(self)

    def _our_moe_method(self):
        return HunyuanFp8MoEMethod(self)

    def _engine_moe_method(self, layer, prefix):
        return Fp8MoEMethod(self)


class HunyuanGPTQConfig(_HunyuanQuantConfig, GPTQConfig):
    """GPTQ-Int4 (W4A16, AutoGPTQ v1): SGLang's ``GPTQConfig`` that also takes fp32."""

    moe_format = "int4_w4a16"
    _our_moe_kernel = "hunyuan::moe_experts_int4"

    @property
    def _engine_moe_kernel(self) -> str:
        return f"SGLang {self._engine_config_class().__name__} MoE"

    def _engine_config_class(self):
        from sglang.srt.layers.quantization import get_quantization_config

        return get_quantization_config("gptq_marlin" if is_cuda() else "gptq")

    def _engine_kernel_reason(self) -> str | None:
        """None when SGLang has a GPTQ kernel for this checkpoint, dtype and platform; else why not."""
        if self.dtype not in _HALF:
            return f"SGLang's GPTQ kernels do not take {self.dtype}"
        if is_cuda():
            return None if GPTQMarlinConfig.is_gptq_marlin_compatible(self.hf_quant_config) else \
                "checkpoint not Marlin-compatible"
        if not cpu_has_amx_support():
            return "SGLang's CPU GPTQ kernel needs Intel AMX"
        if self.desc_act and not (self.true_sequential and self.static_groups):
            return "SGLang's AMX GPTQ kernel needs static_groups with desc_act"
        return None

    def _linear_choice(self) -> KernelChoice:
        why = self._engine_kernel_reason()
        if why is None:
            return KernelChoice(False, f"SGLang {self._engine_config_class().__name__}", f"SGLang's GPTQ kernel "
                                f"on {_platform()} for {self.dtype}")
        return KernelChoice(True, "hunyuan::linear_gptq", why)

    def _engine_has_moe_kernel(self) -> bool:
        return self._engine_kernel_reason() is None

    def _engine_config(self):
        return self._engine_config_class().from_config(self.hf_quant_config)

    def _linear_method(self, layer, prefix):
        if not self.linear_choice.ours:
            return self._engine_config().get_quant_method(layer, prefix)
        layer.scheme = HunyuanGPTQLinearScheme(self, prefix)  # before create_weights picks the loader
        return HunyuanGPTQLinearMethod(self)

    def _our_moe_method(self):
        return HunyuanInt4MoEMethod(self)

    def _engine_moe_method(self, layer, prefix):
        return self._engine_config().get_quant_method(layer, prefix)


HUNYUAN_CONFIGS = (HunyuanFp8Config, HunyuanGPTQConfig)


def unquantized_moe_method(dtype: torch.dtype):
    """(method or None = SGLang's UnquantizedFusedMoEMethod, KernelChoice) for unquantized experts.
    SGLang has a kernel for every float dtype on every platform (CUDA: fused_moe_triton; CPU: its
    torch ``moe_forward_native``, or the AMX kernel)."""
    backend = moe_backend(ENGINE, dtype_format(dtype), engine_has_kernel=True, device_name=_device_name())
    if backend.ours:
        return HunyuanUnquantizedMoEMethod(), KernelChoice(True, "hunyuan::moe_experts", backend.reason)
    return None, KernelChoice(False, "SGLang UnquantizedFusedMoEMethod", backend.reason)


# --------------------------------------------------------------------------- linears


def _unloaded(t: torch.Tensor) -> torch.Tensor:
    """Mask of entries still holding the fill value SGLang's scale parameters start with."""
    return (t == torch.finfo(torch.float32).min) | torch.isnan(t)


class HunyuanFp8LinearMethod(Fp8LinearMethod):
    """SGLang's fp8 linear parameters and loaders; static W8A8 exact per fused shard by
    ``hunyuan::linear_fp8`` (each of q/k/v or gate/up quantizes the input with its own scale)."""

    def __init__(self, quant_config: HunyuanFp8Config, prefix: str):
        super().__init__(quant_config)
        self.prefix = prefix

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        for name in ("weight_scale", "input_scale"):
            t = getattr(layer, name, None)
            if t is None:
                raise ValueError(f"hunyuan_plugins: {self.prefix}.{name} does not exist: the fp8 checkpoint must be "
                                 "static W8A8 (activation_scheme 'static')")
            bad = _unloaded(t.data).nonzero().flatten().tolist()
            if bad:
                raise ValueError(f"hunyuan_plugins: {self.prefix}.{name}: no value loaded for shard(s) {bad} of "
                                 f"{list(layer.logical_widths)}; the checkpoint lacks that tensor")
        # kept exactly as stored: e4m3 [N, K], one weight/input scale per shard
        layer.weight = Parameter(layer.weight.data, requires_grad=False)
        layer.weight_scale = Parameter(layer.weight_scale.data, requires_grad=False)
        layer.input_scale = Parameter(layer.input_scale.data, requires_grad=False)

    def apply(self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        out = ops.linear_fp8(x, layer.weight, layer.weight_scale, layer.input_scale, list(layer.logical_widths))
        return out if bias is None else out + bias


class _Int4LinearKernel:
    """The kernel object a ``GPTQLinearScheme`` delegates to: ``hunyuan::linear_gptq`` on the
    tensors as stored (W4A16, weight dequantised exactly to x.dtype)."""

    use_shuffle = True

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        for name in ("qweight", "qzeros", "scales", "g_idx"):
            setattr(layer, name, Parameter(getattr(layer, name).data, requires_grad=False))

    def apply(self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out = ops.linear_gptq(x, layer.qweight, layer.qzeros, layer.scales, layer.g_idx)
        return out if bias is None else out + bias


class HunyuanGPTQLinearScheme(GPTQLinearScheme):
    """SGLang's GPTQ linear parameters (qweight [K/8, N], qzeros, scales, g_idx) and loaders, our kernel."""

    def __init__(self, quant_config: HunyuanGPTQConfig, prefix: str):
        self.prefix = prefix
        super().__init__(quant_config)

    def _init_kernel(self, quant_config):
        return _Int4LinearKernel()

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, params_dtype,
                       weight_loader, **kwargs):
        super().create_weights(layer, input_size_per_partition, output_partition_sizes, input_size, params_dtype,
                               weight_loader, **kwargs)
        if len(output_partition_sizes) > 1:
            # one g_idx for the fused module: every shard's act order must be the same (it is in GPTQ,
            # whose order comes from the shared input); SGLang would keep the last one silently
            g_idx, inner, first = layer.g_idx, layer.g_idx.weight_loader, {}

            def load_g_idx(param, loaded_weight, *shard, **kw):
                if "g_idx" in first and not torch.equal(first["g_idx"], loaded_weight.to(first["g_idx"].dtype)):
                    raise ValueError(f"hunyuan_plugins: {self.prefix}: the g_idx of shard {shard[:1]} differs from "
                                     "the other fused shards'; a fused linear needs one act order")
                first.setdefault("g_idx", loaded_weight.clone())
                return inner(param, loaded_weight, *shard, **kw)

            g_idx._weight_loader = load_g_idx


class HunyuanGPTQLinearMethod(GPTQLinearMethod):
    """``GPTQLinearMethod`` running :class:`HunyuanGPTQLinearScheme` (set on the layer by the config)."""


# SGLang picks the v2 weight loader (the one that understands packed / per-shard parameters) by the
# quant method's class name; ours are subclasses of methods on that list.
for _cls in (HunyuanFp8LinearMethod, HunyuanGPTQLinearMethod):
    if _cls.__name__ not in WEIGHT_LOADER_V2_SUPPORTED:
        WEIGHT_LOADER_V2_SUPPORTED.append(_cls.__name__)


# --------------------------------------------------------------------------- MoE


class _OurMoE:
    """FusedMoE method contract for a direct kernel: no SGLang runner; the standard dispatcher
    hands ``apply`` local expert ids (-1 = another EP rank) and the standard top-k output."""

    def create_moe_runner(self, layer, moe_runner_config) -> None:
        self.moe_runner_config = moe_runner_config
        self.runner = None

    def get_moe_runner_backend(self, layer):
        return None

    def apply(self, layer: torch.nn.Module, dispatch_output: Any) -> StandardCombineInput:
        x = dispatch_output.hidden_states
        topk_weights, topk_ids = dispatch_output.topk_output[:2]
        out = self.compute(layer, x, topk_weights.float(), topk_ids.to(torch.int32))
        return StandardCombineInput(hidden_states=out)


class HunyuanUnquantizedMoEMethod(_OurMoE, UnquantizedFusedMoEMethod):
    """SGLang's unquantized expert parameters and loader; ``hunyuan::moe_experts``."""

    def __init__(self):
        super().__init__(False, False, False)

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        pass  # [E, 2I, H] / [E, H, I] as loaded (no AMX / aiter repacking)

    def compute(self, layer, x, topk_weights, topk_ids):
        return ops.moe_experts(x, layer.w13_weight, layer.w2_weight, topk_weights, topk_ids)


def _expert_loader(layer, write):
    """A FusedMoE-style loader ``(param, tensor, weight_name, shard_id, expert_id)`` that maps the
    global expert id to this rank's slot (as ``FusedMoE.weight_loader`` does) and calls ``write``."""

    def load(param, loaded_weight, weight_name, shard_id, expert_id):
        local = layer._map_global_expert_id_to_local_expert_id(expert_id)
        if local == -1:
            return
        write(param, loaded_weight, weight_name, shard_id, local)

    return load


class HunyuanFp8MoEMethod(_OurMoE, Fp8MoEMethod):
    """SGLang's fp8 expert parameters and loader (e4m3 w13/w2, w13_weight_scale [E, 2] per gate/up,
    w2_weight_scale [E], w2_input_scale [E]) plus an exact w13_input_scale [E, 2] (gate, up);
    ``hunyuan::moe_experts_fp8`` quantizes each projection's input with its own static scale."""

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype,
                       **extra_weight_attrs):
        if self.quant_config.activation_scheme != "static":
            raise ValueError("hunyuan_plugins: Tencent fp8 checkpoints are static W8A8 (activation_scheme 'static'), "
                             f"got {self.quant_config.activation_scheme!r}")
        super().create_weights(layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype,
                               **extra_weight_attrs)
        self.prefix = getattr(layer, "layer_name", "experts")

        def write_input_scale(param, loaded_weight, weight_name, shard_id, local):
            if loaded_weight.numel() != 1:
                raise ValueError(f"hunyuan_plugins: {weight_name} of expert {local}: input_scale must be a scalar, "
                                 f"got shape {list(loaded_weight.shape)}")
            param.data[local, 0 if shard_id == "w1" else 1] = loaded_weight.reshape(())

        scale = Parameter(torch.full((num_experts, 2), float("nan")), requires_grad=False)
        layer.register_parameter("w13_input_scale", scale)
        set_weight_attrs(scale, {**extra_weight_attrs, "quant_method": FusedMoeWeightScaleSupported.TENSOR.value,
                                 "weight_loader": _expert_loader(layer, write_input_scale)})
        for name in ("w13_weight_scale", "w2_weight_scale", "w2_input_scale"):
            getattr(layer, name).data.fill_(float("nan"))  # a scale never loaded is an error, not 1.0

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        for name in ("w13_weight_scale", "w2_weight_scale", "w13_input_scale", "w2_input_scale"):
            t = getattr(layer, name).data
            bad = _unloaded(t).reshape(t.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
            if bad:
                shards = " (gate, up)" if t.dim() == 2 else ""
                raise ValueError(f"hunyuan_plugins: {self.prefix}.{name}{shards}: no value loaded for local "
                                 f"expert(s) {bad}; the checkpoint lacks those scales")

    def compute(self, layer, x, topk_weights, topk_ids):
        return ops.moe_experts_fp8(x, layer.w13_weight, layer.w2_weight, layer.w13_weight_scale,
                                   layer.w2_weight_scale, layer.w13_input_scale, layer.w2_input_scale,
                                   topk_weights, topk_ids)


class _GPTQExpertParams(GPTQMarlinMoEScheme):
    """SGLang's GPTQ expert parameter creation (the tensors as stored: qweight [E, K/8, N],
    scales / qzeros per group, g_idx) without its CUDA Marlin kernel."""

    def __init__(self, quant_config):
        self.quant_config = quant_config
        self.kernel = type("NoKernel", (), {})()


class HunyuanInt4MoEMethod(_OurMoE, FusedMoEMethodBase):
    """GPTQ-Int4 experts: parameters from SGLang's ``GPTQMarlinMoEScheme.create_weights`` loaded by
    ``FusedMoE.weight_loader``; after loading, converted once by ``int4_expert_layout`` for
    ``hunyuan::moe_experts_int4``."""

    def __init__(self, quant_config: HunyuanGPTQConfig):
        super().__init__()
        self.quant_config = quant_config

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype,
                       **extra_weight_attrs):
        extra_weight_attrs.pop("with_bias", None)
        _GPTQExpertParams(self.quant_config).create_weights(layer, num_experts, hidden_size,
                                                            intermediate_size_per_partition, params_dtype,
                                                            **extra_weight_attrs)
        self.prefix = getattr(layer, "layer_name", "experts")
        # Marlin-only outputs of its post-processing: not in the checkpoint
        del layer.w13_g_idx_sort_indices, layer.w2_g_idx_sort_indices
        # the scheme sizes qzeros for Marlin (which ignores them) in params_dtype; GPTQ stores int32
        for name in ("w13_qzeros", "w2_qzeros"):
            old = getattr(layer, name)
            new = Parameter(torch.empty(old.shape, dtype=torch.int32), requires_grad=False)
            set_weight_attrs(new, {k: v for k, v in vars(old).items() if not k.startswith("_")})
            layer.register_parameter(name, new)

        # gate and up keep their own g_idx (SGLang stores one, the last loaded): int4_expert_layout
        # checks that they agree and names the tensor otherwise
        def write_g_idx(param, loaded_weight, weight_name, shard_id, local):
            param.data[local, 0 if shard_id == "w1" else 1].copy_(loaded_weight)

        g = Parameter(torch.full((num_experts, 2, hidden_size), -1, dtype=torch.int32), requires_grad=False)
        layer.register_parameter("w13_g_idx", g)
        set_weight_attrs(g, {**extra_weight_attrs, "weight_loader": _expert_loader(layer, write_g_idx)})
        layer.w2_g_idx.data.fill_(-1)

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        inter = layer.w2_qweight.shape[1] * 8
        if bool((layer.w13_g_idx.data < 0).any()) or bool((layer.w2_g_idx.data < 0).any()):
            raise ValueError(f"hunyuan_plugins: {self.prefix}: an expert's g_idx was not loaded; the checkpoint "
                             "lacks it")

        def proj(prefix: str, cols: slice, qcols: slice, g_idx: torch.Tensor) -> dict:
            return {"qweight": getattr(layer, f"{prefix}_qweight").data[:, :, cols],
                    "qzeros": getattr(layer, f"{prefix}_qzeros").data[:, :, qcols],
                    "scales": getattr(layer, f"{prefix}_scales").data[:, :, cols], "g_idx": g_idx}

        try:
            w13_q, w13_s, w2_q, w2_s, w13_perm, w2_perm = int4_expert_layout(
                proj("w13", slice(0, inter), slice(0, inter // 8), layer.w13_g_idx.data[:, 0]),
                proj("w13", slice(inter, 2 * inter), slice(inter // 8, inter // 4), layer.w13_g_idx.data[:, 1]),
                proj("w2", slice(None), slice(None), layer.w2_g_idx.data))
        except ValueError as e:
            raise ValueError(f"hunyuan_plugins: {self.prefix}: {e}") from e
        for name in ("w13_qzeros", "w2_qzeros", "w13_g_idx", "w2_g_idx"):
            delattr(layer, name)
        layer.w13_qweight = Parameter(w13_q, requires_grad=False)
        layer.w13_scales = Parameter(w13_s, requires_grad=False)
        layer.w2_qweight = Parameter(w2_q, requires_grad=False)
        layer.w2_scales = Parameter(w2_s, requires_grad=False)
        layer.w13_perm, layer.w2_perm = w13_perm, w2_perm

    def compute(self, layer, x, topk_weights, topk_ids):
        return ops.moe_experts_int4(x, layer.w13_qweight, layer.w13_scales, layer.w2_qweight, layer.w2_scales,
                                    topk_weights, topk_ids, layer.w13_perm, layer.w2_perm)
