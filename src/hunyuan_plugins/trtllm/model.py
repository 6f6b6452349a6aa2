"""Hunyuan A13B, Large (CLA) and dense on TensorRT-LLM 1.2.1's PyTorch backend.

Importing this module registers ``HunYuanMoEV1ForCausalLM``, ``HunYuanForCausalLM`` and
``HunYuanDenseV1ForCausalLM`` with ``register_auto_model`` (the last registration of a name wins in
1.2.x's plain-dict ``MODEL_CLASS_MAPPING``; TRT-LLM's own A13B/dense classes are registered when
its model package is imported, which happens before this module's import of ``modeling_utils``
returns, so ours win).

Everything model-specific comes from :class:`hunyuan_plugins.config.HunyuanConfig` (per-layer
top-k / expert size / shared expert, the static alpha-NTK RoPE base, CLA), and weights are read
through the core's canonical names, so every checkpoint dialect loads.

What is TensorRT-LLM's: ``Linear`` with TP modes (fused QKV, fused gate/up), its ``Attention`` with
its KV-cache backend and ``RotaryEmbedding`` (base = theta * alpha^(d/(d-2)), which is what
Hunyuan's "dynamic alpha" RoPE computes, at every length), ``RMSNorm``, ``Embedding``, ``GatedMLP``
for the shared expert and dense MLPs, and ``create_moe`` for the routed experts with
``RenormalizeMoeRoutingMethod`` (top-k > 1: softmax-topk-renormalise) or ``DefaultMoeRoutingMethod``
(top-1 of Hunyuan-Large: raw softmax probability, no renormalisation). The router is a replicated
fp32 ``Linear`` fed fp32 activations, as Tencent and transformers run it.

What is ours:
* QK-norm after RoPE (``apply_rope`` override, as TRT-LLM's own Hunyuan class does; RoPE fusion off).
* CLA (Hunyuan-Large), exact: each KV-owning layer caches the weight-free normalised key
  k_hat = k / rms(k) and every layer folds its own ``key_layernorm`` weight into its query
  (docs/architecture.md; ``core.model.fold_key_norm``). A cross layer's ``Attention`` is built with its
  partner's layer index as ``layer_idx`` and receives the partner's (k_hat, v) of the same step, so it
  writes identical values into the shared pool and attends over it. A cross layer's attention
  ``layer_idx`` is its partner's layer index, and ``pretrained_config.num_key_value_heads`` becomes
  a per-layer list with ``None`` for cross layers, which TensorRT-LLM's KV-cache creator (it reads
  ``num_hidden_layers`` and ``num_key_value_heads``, no model hook) turns into no pool for them:
  half the KV-cache memory.
* Quantization: :func:`hunyuan_plugins.quant.plan` decides, as in every engine, whether the checkpoint
  runs quantized (TensorRT-LLM built its quantized layers from ``hf_quant_config.json``) or is
  dequantised at load (TensorRT-LLM was not given a quantization config it reads, e.g. a raw Tencent
  FP8 directory; or ``HUNYUAN_TRTLLM_DEQUANTIZE=1``). Quantized linears are TensorRT-LLM's own
  (``FP8QDQLinearMethod``: static per-tensor W8A8; its fused q/k/v and gate/up take the max of the
  shards' input scales and requantise the shards to the max weight scale -- docs/trtllm.md).
* Routed experts: :func:`hunyuan_plugins.ops.backend.moe_backend` (``HUNYUAN_MOE_BACKEND=engine|hunyuan|auto``)
  picks TensorRT-LLM's ``create_moe`` or ours per layer format: ``hunyuan::moe_route`` +
  ``hunyuan::moe_experts`` / ``moe_experts_fp8`` (exact per expert and per gate/up input scale) /
  ``moe_experts_int4``. TensorRT-LLM 1.2.1's fused MoE has no W4A16 path, so GPTQ-Int4 experts are
  always ours. Ours support TP = EP = 1 only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re

import torch
from torch import nn
from transformers import PretrainedConfig

from hunyuan_plugins import ops, quant
from hunyuan_plugins.config import ARCH_DENSE, ARCH_LARGE, ARCH_MOE, HunyuanConfig
from hunyuan_plugins.core.checkpoint import canonical_weights
from hunyuan_plugins.core.model import fold_key_norm
from hunyuan_plugins.ops.backend import MOE_BACKEND_ENV, MoEBackend, moe_backend
from hunyuan_plugins.quant import gptq
from hunyuan_plugins.quant.stream import dequantized
from hunyuan_plugins.trtllm._api import (
    Attention,
    AttentionMetadata,
    DecoderLayer,
    DecoderModel,
    DecoderModelForCausalLM,
    DefaultMoeRoutingMethod,
    Embedding,
    GatedMLP,
    Linear,
    ModelConfig,
    PositionalEmbeddingParams,
    PositionEmbeddingType,
    RenormalizeMoeRoutingMethod,
    RMSNorm,
    RopeParams,
    TensorParallelMode,
    create_moe,
    register_auto_model,
)
from hunyuan_plugins.trtllm.convert import unpack_w4a16

REGISTERED: list[str] = []
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_FMT_OF_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
#: TensorRT-LLM quant_algo -> the MoE weight format of ops.backend
_FMT_OF_ALGO = {"FP8": "fp8_w8a8", "W4A16_AWQ": "int4_w4a16"}
#: MoE formats TensorRT-LLM 1.2.1's create_moe has a kernel for (CUTLASS fused MoE: fp32/fp16/bf16 and
#: FP8 QDQ, fused_moe/quantization.py FP8QDQFusedMoEMethod); it has no W4A16 (ModelOpt int4 AWQ) MoE
_ENGINE_MOE_FORMATS = ("fp32", "fp16", "bf16", "fp8_w8a8")
#: the variable HUNYUAN_MOE_BACKEND replaced (set, it is refused with the replacement named)
_OLD_MOE_ENV = "HUNYUAN_TRTLLM_MOE"
logger = logging.getLogger("hunyuan_plugins.trtllm")


def hunyuan_config(model_config: ModelConfig) -> HunyuanConfig:
    pc = model_config.pretrained_config
    raw = pc.to_dict() if hasattr(pc, "to_dict") else dict(vars(pc))
    return HunyuanConfig.from_dict(raw)


def _dtype(model_config: ModelConfig, cfg: HunyuanConfig) -> torch.dtype:
    d = getattr(model_config.pretrained_config, "torch_dtype", None)
    if isinstance(d, torch.dtype):
        return d
    return _DTYPES.get(d if isinstance(d, str) else cfg.torch_dtype, torch.bfloat16)


def _quant_algo(model_config: ModelConfig) -> str | None:
    qc = getattr(model_config, "quant_config", None)
    algo = getattr(qc, "quant_algo", None)
    return None if algo is None else str(getattr(algo, "value", algo))


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How one model build runs: the quantization plan (the same rule in every engine) and, for MoE
    models, which implementation runs the routed experts."""

    plan: quant.QuantPlan
    algo: str | None            # TensorRT-LLM's quant_algo: what its layers were built for
    moe_format: str             # ops.backend format of the routed experts
    moe: MoEBackend | None      # None: no MoE layer

    def describe(self) -> str:
        linears = {None: "TensorRT-LLM Linear (unquantized)",
                   "FP8": "TensorRT-LLM FP8QDQLinearMethod (static per-tensor W8A8; fused q/k/v and gate/up "
                          "take the max input scale and the max weight scale)",
                   "W4A16_AWQ": "TensorRT-LLM W4A16_AWQ_LinearMethod"}.get(self.algo, f"TensorRT-LLM {self.algo}")
        kinds = [f"linears: {linears}", "attention: TensorRT-LLM Attention backend", "router: fp32 Linear"]
        if self.moe is not None:
            op = {"fp32": "moe_experts", "fp16": "moe_experts", "bf16": "moe_experts",
                  "fp8_w8a8": "moe_experts_fp8", "int4_w4a16": "moe_experts_int4"}[self.moe_format]
            what = (f"torch.ops.hunyuan.moe_route + {op}" if self.moe.ours
                    else "TensorRT-LLM create_moe (" + ("FP8QDQFusedMoEMethod: one input scale per layer, "
                                                        "the max over experts" if self.moe_format == "fp8_w8a8"
                                                        else "unquantized") + ")")
            kinds.append(f"routed experts [{self.moe_format}]: {what} ({self.moe.reason})")
        return self.plan.describe("; ".join(kinds))


def runtime(model_config: ModelConfig, cfg: HunyuanConfig, dtype: torch.dtype) -> Runtime:
    """Decided once per model build, before any layer is made."""
    if os.environ.get(_OLD_MOE_ENV) is not None:
        raise ValueError(f"{_OLD_MOE_ENV} was replaced by {MOE_BACKEND_ENV}=engine|hunyuan|auto (the same variable "
                         f"in every engine); unset {_OLD_MOE_ENV} and set {MOE_BACKEND_ENV} instead")
    algo = _quant_algo(model_config)
    # the builder moves Tencent's quantization_config out of config.json (TensorRT-LLM reads
    # hf_quant_config.json) and keeps it under this key
    qc = cfg.quantization_config or cfg.raw.get("hunyuan_plugins_source_quantization_config")
    plan = quant.plan(qc, engine="trtllm", engine_has_config=algo is not None)
    if plan.dequantize and algo is not None:
        raise ValueError(f"{quant.dequantize_env('trtllm')}=1: TensorRT-LLM has already been given the quantization "
                         f"config (hf_quant_config.json, quant_algo={algo}) and builds quantized layers; dequantising "
                         "at load needs a checkpoint TensorRT-LLM reads as unquantized")
    if algo is not None and algo not in _FMT_OF_ALGO:
        raise NotImplementedError(f"quant_algo={algo}: the Hunyuan classes run FP8 (per-tensor) and W4A16_AWQ only")
    fmt = _FMT_OF_ALGO[algo] if algo is not None else _FMT_OF_DTYPE[dtype]
    moe = None
    if cfg.is_moe:
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        moe = moe_backend("trtllm", fmt, engine_has_kernel=fmt in _ENGINE_MOE_FORMATS, device_name=device)
    return Runtime(plan, algo, fmt, moe)


class HunyuanAttention(Attention):
    def __init__(self, model_config: ModelConfig, cfg: HunyuanConfig, layer_idx: int, dtype: torch.dtype):
        pc = model_config.pretrained_config
        if getattr(pc, "head_dim", None) != cfg.head_dim:
            pc.head_dim = cfg.head_dim  # TensorRT-LLM's Attention reads head_dim from the HF config
        rope = RopeParams(dim=cfg.head_dim, theta=cfg.rope_base, max_positions=cfg.max_position_embeddings)
        super().__init__(
            hidden_size=cfg.hidden_size,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            bias=False,
            pos_embd_params=PositionalEmbeddingParams(type=PositionEmbeddingType.rope_gpt_neox, rope=rope,
                                                      is_neox=True),
            # QK-norm comes after RoPE, and CLA cross layers receive already-rotated keys: unfused RoPE.
            rope_fusion=not (cfg.use_qk_norm or cfg.use_cla),
            # CLA: a cross layer uses its partner's KV-cache pool (the partner's layer index; its own has none)
            layer_idx=cfg.layers[layer_idx].kv_source,
            dtype=dtype,
            config=model_config,
        )
        # set after TensorRT-LLM's __init__, so nothing it assigns can shadow them
        self.hy_layer = layer_idx
        self.owns_kv = cfg.owns_kv(layer_idx)
        self.use_qk_norm = cfg.use_qk_norm
        self.fold_key_norm = cfg.use_cla and cfg.use_qk_norm
        self.eps = cfg.rms_norm_eps
        if not self.owns_kv:  # CLA cross layer: a query projection only (loaded from q_proj)
            self.qkv_proj = Linear(cfg.hidden_size, cfg.q_size, bias=False, dtype=dtype,
                                   mapping=model_config.mapping, tensor_parallel_mode=TensorParallelMode.COLUMN,
                                   quant_config=model_config.get_quant_config(),
                                   skip_create_weights_in_init=model_config.skip_create_weights_in_init)
        if cfg.use_qk_norm:
            self.query_layernorm = RMSNorm(hidden_size=cfg.head_dim, eps=cfg.rms_norm_eps, dtype=dtype)
            self.key_layernorm = RMSNorm(hidden_size=cfg.head_dim, eps=cfg.rms_norm_eps, dtype=dtype)
        self.kv_in: tuple[torch.Tensor, torch.Tensor] | None = None   # cross layers: partner's (k, v)
        self.kv_out: tuple[torch.Tensor, torch.Tensor] | None = None  # owners: (k, v) as cached

    def apply_rope(self, q: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor | None,
                   position_ids: torch.Tensor | None):
        d = self.head_dim
        if self.owns_kv:
            q, k, v = self.split_qkv(q, k, v)
            if position_ids is not None and not self.rope_fusion:
                q, k = self.rotary_emb(position_ids, [q, k])
        else:
            if self.kv_in is None:
                raise RuntimeError(f"CLA layer {self.hy_layer} ran without its partner layer's K/V")
            (k, v), self.kv_in = self.kv_in, None
            if position_ids is not None and not self.rope_fusion:
                q = self.rotary_emb(position_ids, [q])[0]
        if self.use_qk_norm:
            q = self.query_layernorm(q.reshape(-1, d))
            if self.fold_key_norm:  # this layer's key norm folded into its query; weight-free k cached
                q, k = fold_key_norm(q, k, self.key_layernorm.weight, self.eps, d, own_k=self.owns_kv)
            else:
                k = self.key_layernorm(k.reshape(-1, d)).reshape(-1, self.kv_size)
            q = q.reshape(-1, self.q_size)
        if self.owns_kv:
            self.kv_out = (k, v)
        return q, k, v


class HunyuanInt4Experts(nn.Module):
    """GPTQ-Int4 routed experts through ``hunyuan_plugins.ops`` (TensorRT-LLM 1.2.1 has no W4A16 MoE).

    Loads the W4A16 layout the builder writes (``E.w{1,2,3}.weight`` int8 [N, K/2],
    ``.weight_scale`` [N, K/G]) and holds the ``hunyuan::moe_experts_int4`` layout (qweight
    [E, K/8, N] int32, scales [E, K/G, N], contiguous groups so no permutation).
    """

    def __init__(self, num_experts: int, hidden: int, inter: int, top_k: int, renormalize: bool,
                 group_size: int, dtype: torch.dtype):
        super().__init__()
        self.num_experts, self.top_k, self.renormalize = num_experts, top_k, renormalize
        pf = gptq.PACK_FACTOR
        self.w13_qweight = nn.Parameter(torch.empty(num_experts, hidden // pf, 2 * inter, dtype=torch.int32),
                                        requires_grad=False)
        self.w13_scales = nn.Parameter(torch.empty(num_experts, hidden // group_size, 2 * inter, dtype=dtype),
                                       requires_grad=False)
        self.w2_qweight = nn.Parameter(torch.empty(num_experts, inter // pf, hidden, dtype=torch.int32),
                                       requires_grad=False)
        self.w2_scales = nn.Parameter(torch.empty(num_experts, inter // group_size, hidden, dtype=dtype),
                                      requires_grad=False)

    @staticmethod
    def _to_op_layout(weight: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = (unpack_w4a16(weight) + gptq.SYM_ZERO).t().contiguous()    # [K, N] in 0..15
        return gptq.pack_int4_rows(q), scale.t().contiguous()

    def load_weights(self, weights: list[dict]):
        w = weights[0]
        for e in range(self.num_experts):
            try:
                parts = {j: self._to_op_layout(w[f"{e}.w{j}.weight"], w[f"{e}.w{j}.weight_scale"]) for j in (1, 2, 3)}
            except KeyError as err:
                raise ValueError(f"int4 expert {e}: tensor {err} missing (expected the W4A16 layout written by "
                                 "hunyuan-trtllm-build)") from None
            self.w13_qweight.data[e].copy_(torch.cat([parts[1][0], parts[3][0]], dim=1))
            self.w13_scales.data[e].copy_(torch.cat([parts[1][1], parts[3][1]], dim=1))
            self.w2_qweight.data[e].copy_(parts[2][0])
            self.w2_scales.data[e].copy_(parts[2][1])

    def forward(self, x: torch.Tensor, router_logits: torch.Tensor, **kwargs) -> torch.Tensor:
        weights, ids = ops.moe_route(router_logits, self.top_k, self.renormalize)
        return ops.moe_experts_int4(x, self.w13_qweight, self.w13_scales, self.w2_qweight, self.w2_scales,
                                    weights, ids)


class HunyuanExperts(nn.Module):
    """Unquantized routed experts through ``hunyuan::moe_route`` + ``hunyuan::moe_experts`` (our Triton
    kernels on CUDA, torch reference on CPU; fake implementations registered, no host syncs in the
    CUDA path). Selected by ``HUNYUAN_MOE_BACKEND`` (ops.backend) instead of TensorRT-LLM's ``create_moe``."""

    def __init__(self, num_experts: int, hidden: int, inter: int, top_k: int, renormalize: bool,
                 dtype: torch.dtype):
        super().__init__()
        self.num_experts, self.top_k, self.renormalize = num_experts, top_k, renormalize
        self.w13 = nn.Parameter(torch.empty(num_experts, 2 * inter, hidden, dtype=dtype), requires_grad=False)
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, inter, dtype=dtype), requires_grad=False)

    def load_weights(self, weights: list[dict]):
        w = weights[0]
        for e in range(self.num_experts):
            try:
                self.w13.data[e].copy_(torch.cat([w[f"{e}.w1.weight"], w[f"{e}.w3.weight"]]))  # gate rows first
                self.w2.data[e].copy_(w[f"{e}.w2.weight"])
            except KeyError as err:
                raise ValueError(f"expert {e}: tensor {err} missing") from None

    def forward(self, x: torch.Tensor, router_logits: torch.Tensor, **kwargs) -> torch.Tensor:
        weights, ids = ops.moe_route(router_logits, self.top_k, self.renormalize)
        return ops.moe_experts(x, self.w13, self.w2, weights, ids)


class HunyuanFP8Experts(nn.Module):
    """Tencent FP8 (static per-tensor W8A8) routed experts through ``hunyuan::moe_route`` +
    ``hunyuan::moe_experts_fp8``: exact per expert and per projection (gate and up each quantize
    their input with their own stored ``input_scale``), unlike TensorRT-LLM's FP8 QDQ MoE, which
    takes one input scale per layer. Loads the tensors as stored (``E.w{1,2,3}.weight`` e4m3,
    ``.weight_scale``, ``.input_scale``; w1 = gate, w3 = up, w2 = down)."""

    def __init__(self, num_experts: int, hidden: int, inter: int, top_k: int, renormalize: bool):
        super().__init__()
        self.num_experts, self.top_k, self.renormalize = num_experts, top_k, renormalize
        E, f8 = num_experts, torch.float8_e4m3fn
        self.w13 = nn.Parameter(torch.empty(E, 2 * inter, hidden, dtype=f8), requires_grad=False)  # gate rows, up rows
        self.w2 = nn.Parameter(torch.empty(E, hidden, inter, dtype=f8), requires_grad=False)
        self.w13_scale = nn.Parameter(torch.empty(E, 2, dtype=torch.float32), requires_grad=False)
        self.w2_scale = nn.Parameter(torch.empty(E, dtype=torch.float32), requires_grad=False)
        self.a13_scale = nn.Parameter(torch.empty(E, 2, dtype=torch.float32), requires_grad=False)
        self.a2_scale = nn.Parameter(torch.empty(E, dtype=torch.float32), requires_grad=False)

    def load_weights(self, weights: list[dict]):
        w = weights[0]
        prefix = getattr(self, "checkpoint_prefix", "experts")
        for e in range(self.num_experts):
            for j in ("w1", "w2", "w3"):
                for suffix in ("weight", "weight_scale", "input_scale"):
                    name = f"{e}.{j}.{suffix}"
                    if name not in w:
                        raise ValueError(f"FP8 expert tensor '{prefix}.{name}' is missing (Tencent FP8 stores weight, "
                                         "weight_scale and input_scale for every expert projection)")
                    t = w[name]
                    if suffix != "weight" and t.numel() != 1:
                        raise ValueError(f"FP8 expert tensor '{prefix}.{name}' has shape {list(t.shape)}; a per-tensor "
                                         "scale of shape [] or [1] was expected")
                    if suffix == "weight" and t.dtype != torch.float8_e4m3fn:
                        raise ValueError(f"FP8 expert tensor '{prefix}.{name}' is {t.dtype}, not float8_e4m3fn")
            self.w13.data[e].copy_(torch.cat([w[f"{e}.w1.weight"], w[f"{e}.w3.weight"]]))
            self.w2.data[e].copy_(w[f"{e}.w2.weight"])
            for col, j in enumerate(("w1", "w3")):
                self.w13_scale.data[e, col] = w[f"{e}.{j}.weight_scale"].reshape(())
                self.a13_scale.data[e, col] = w[f"{e}.{j}.input_scale"].reshape(())
            self.w2_scale.data[e] = w[f"{e}.w2.weight_scale"].reshape(())
            self.a2_scale.data[e] = w[f"{e}.w2.input_scale"].reshape(())

    def forward(self, x: torch.Tensor, router_logits: torch.Tensor, **kwargs) -> torch.Tensor:
        weights, ids = ops.moe_route(router_logits, self.top_k, self.renormalize)
        return ops.moe_experts_fp8(x, self.w13, self.w2, self.w13_scale, self.w2_scale, self.a13_scale,
                                   self.a2_scale, weights, ids)


class HunyuanMoE(nn.Module):
    def __init__(self, model_config: ModelConfig, cfg: HunyuanConfig, layer_idx: int, dtype: torch.dtype,
                 rt: Runtime):
        super().__init__()
        spec = cfg.layers[layer_idx]
        self.hidden = cfg.hidden_size
        # fp32 router, replicated on every rank, never quantized
        self.gate = Linear(cfg.hidden_size, cfg.num_experts, bias=False, dtype=torch.float32, quant_config=None)
        if rt.moe.ours:
            m = model_config.mapping
            if m.tp_size > 1 or getattr(m, "moe_ep_size", 1) > 1:
                raise NotImplementedError(f"routed experts through torch.ops.hunyuan ({rt.moe_format}: "
                                          f"{rt.moe.reason}) support tp_size=1 and moe_ep_size=1 only "
                                          f"(got tp_size={m.tp_size})")
            args = (cfg.num_experts, cfg.hidden_size, spec.expert_size, spec.top_k, spec.renormalize)
            if rt.moe_format == "int4_w4a16":
                group = getattr(model_config.quant_config, "group_size", None) or 128
                self.experts = HunyuanInt4Experts(*args, group, dtype)
            elif rt.moe_format == "fp8_w8a8":
                self.experts = HunyuanFP8Experts(*args)
            else:
                self.experts = HunyuanExperts(*args, dtype)
            self.experts.checkpoint_prefix = f"model.layers.{layer_idx}.mlp.experts"
        else:
            routing = (RenormalizeMoeRoutingMethod(top_k=spec.top_k) if spec.renormalize
                       else DefaultMoeRoutingMethod(top_k=spec.top_k))
            self.experts = create_moe(routing_method=routing, num_experts=cfg.num_experts,
                                      hidden_size=cfg.hidden_size, intermediate_size=spec.expert_size,
                                      dtype=dtype, reduce_results=True, model_config=model_config,
                                      layer_idx=layer_idx)
        self.shared_mlp = (GatedMLP(hidden_size=cfg.hidden_size, intermediate_size=spec.shared_size, bias=False,
                                    dtype=dtype, config=model_config) if spec.shared_size else None)

    def forward(self, hidden_states: torch.Tensor, attn_metadata: AttentionMetadata) -> torch.Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, self.hidden)
        router_logits = self.gate(x.float())
        out = self.experts(x, router_logits, all_rank_num_tokens=attn_metadata.all_rank_num_tokens,
                           use_dp_padding=False)
        if self.shared_mlp is not None:
            out = out + self.shared_mlp(x)
        return out.reshape(shape)


class HunyuanDecoderLayer(DecoderLayer):
    def __init__(self, model_config: ModelConfig, cfg: HunyuanConfig, layer_idx: int, dtype: torch.dtype,
                 rt: Runtime):
        super().__init__()
        spec = cfg.layers[layer_idx]
        self.layer_idx = layer_idx
        self.is_moe = spec.moe
        self.input_layernorm = RMSNorm(hidden_size=cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.self_attn = HunyuanAttention(model_config, cfg, layer_idx, dtype)
        self.post_attention_layernorm = RMSNorm(hidden_size=cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        if spec.moe:
            self.mlp = HunyuanMoE(model_config, cfg, layer_idx, dtype, rt)
        else:
            self.mlp = GatedMLP(hidden_size=cfg.hidden_size, intermediate_size=spec.shared_size, bias=False,
                                dtype=dtype, config=model_config)

    def forward(self, position_ids: torch.Tensor, hidden_states: torch.Tensor, attn_metadata: AttentionMetadata,
                residual=..., **kwargs) -> torch.Tensor:
        """TensorRT-LLM's DecoderLayer convention (decoder_layer.py): ``residual=...`` (Ellipsis) means the
        caller passes no residual and gets the hidden states back -- what HunyuanModel does, and what
        pipeline parallelism relies on: a layer outside this rank runs DecoderLayer.skip_forward (input
        returned unchanged), and the rank's first / last layer is wrapped to pp_recv / pp_send its
        hidden states (forward_after_recv / forward_before_send, modeling_utils.py)."""
        if residual is not ... and residual is not None:
            raise NotImplementedError("HunyuanDecoderLayer adds its residuals itself; it takes no residual input")
        residual = hidden_states
        h = self.input_layernorm(hidden_states)
        h = self.self_attn(position_ids=position_ids, hidden_states=h, attn_metadata=attn_metadata)
        h = residual + h
        residual = h
        h = self.post_attention_layernorm(h)
        h = self.mlp(h, attn_metadata) if self.is_moe else self.mlp(h)
        return residual + h


class HunyuanModel(DecoderModel):
    def __init__(self, model_config: ModelConfig, cfg: HunyuanConfig, rt: Runtime | None = None):
        super().__init__(model_config)
        dtype = _dtype(model_config, cfg)
        rt = rt or runtime(model_config, cfg, dtype)
        self.runtime = rt
        self.hy_config = cfg
        self.padding_idx = cfg.pad_token_id
        self.vocab_size = cfg.vocab_size
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype, mapping=model_config.mapping,
                                      tensor_parallel_mode=TensorParallelMode.COLUMN, gather_output=True)
        self.layers = nn.ModuleList(HunyuanDecoderLayer(model_config, cfg, i, dtype, rt) for i in range(cfg.num_layers))
        self.norm = RMSNorm(hidden_size=cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        # CLA: owner layer -> the cross layers that read its K/V in the same step
        self.kv_readers = {i: [j for j in range(cfg.num_layers) if j != i and cfg.layers[j].kv_source == i]
                           for i in range(cfg.num_layers) if cfg.owns_kv(i)}

    def forward(self, attn_metadata: AttentionMetadata, input_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        for i, layer in enumerate(self.layers):
            h = layer(position_ids=position_ids, hidden_states=h, attn_metadata=attn_metadata)
            attn = layer.self_attn
            if attn.owns_kv:
                kv, attn.kv_out = attn.kv_out, None
                for j in self.kv_readers[i]:
                    self.layers[j].self_attn.kv_in = kv
        return self.norm(h)


def _duplicate_kv_heads(tensors: dict[str, torch.Tensor], num_kv_heads: int, tp: int) -> dict[str, torch.Tensor]:
    """tp > num_key_value_heads: TensorRT-LLM gives each rank ceil(kv / tp) = 1 KV head and slices the
    fused QKV weights by rank, so each KV head's rows are repeated tp / kv times first (as its own
    models' ``duplicate_kv_weight`` does). Per-head rows: weight / bias / W4A16 scales; per-tensor
    scales (scalars) are shared and stay as they are."""
    if tp <= num_kv_heads:  # (tp and the head counts were validated by HunyuanConfig.heads_per_rank)
        return tensors
    out = {}
    for name, t in tensors.items():
        if t.dim() == 0 or t.numel() == 1:
            out[name] = t
            continue
        if t.shape[0] % num_kv_heads:
            raise ValueError(f"KV tensor '{name}' {list(t.shape)}: dim 0 is not a multiple of {num_kv_heads} heads")
        out[name] = t.reshape(num_kv_heads, -1, *t.shape[1:]).repeat_interleave(tp // num_kv_heads, dim=0
                                                                                 ).reshape(-1, *t.shape[1:])
    return out


_EXPERT_NAME = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.(\w+)$")
_EXPERT_W = {"gate": "w1", "down": "w2", "up": "w3"}


class _HunyuanForCausalLM(DecoderModelForCausalLM[HunyuanModel, PretrainedConfig]):
    ARCH = ""

    def __init__(self, model_config: ModelConfig):
        cfg = hunyuan_config(model_config)
        if cfg.architecture != self.ARCH:
            raise ValueError(f"config `architectures` is {cfg.architecture}, but {self.ARCH} was resolved")
        pp = getattr(model_config.mapping, "pp_size", 1)
        if cfg.use_cla and pp > 1:
            # The cross layers read their partner's (k_hat, v) handed over inside HunyuanModel.forward;
            # a pipeline stage boundary inside a pair would lose it at run time. Refuse at start-up.
            raise NotImplementedError(
                f"pipeline parallelism (pp_size={pp}) with CLA (cla_share_factor={cfg.cla_share_factor}) is not "
                "supported by the TensorRT-LLM adapter: cross layers take their partner layer's K/V in the same "
                "forward pass; use tensor/expert parallelism for Hunyuan-Large")
        if cfg.num_kv_layers != cfg.num_layers:
            # CLA: TensorRT-LLM's KV-cache creator sizes the cache from pretrained_config.num_hidden_layers
            # and num_key_value_heads, which may be a per-layer list where None means no pool for that
            # layer (no model hook exists). Cross layers get None: they attend over their partner's pool.
            model_config.pretrained_config.num_key_value_heads = [
                cfg.num_kv_heads if cfg.owns_kv(i) else None for i in range(cfg.num_layers)]
        rt = runtime(model_config, cfg, _dtype(model_config, cfg))
        logger.info("Hunyuan %s on TensorRT-LLM: %s", self.ARCH, rt.describe())
        super().__init__(HunyuanModel(model_config, cfg, rt), config=model_config, hidden_size=cfg.hidden_size,
                         vocab_size=cfg.vocab_size)
        self.hy_config = cfg
        self.runtime = rt

    def load_weights(self, weights, *args, **kwargs):
        """weights: stored name -> tensor (any Hunyuan dialect; the builder writes canonical names)."""
        cfg = self.hy_config
        tp = self.model_config.mapping.tp_size
        cfg.heads_per_rank(tp)  # the core's TP rule: raises naming the head count that does not divide
        stream = canonical_weights(((k, weights[k]) for k in list(weights.keys())), cfg)
        if self.runtime.plan.dequantize:  # quant.plan: TensorRT-LLM built unquantized layers
            stream = dequantized(stream, self.runtime.plan.spec, _dtype(self.model_config, cfg))
        canon: dict[str, torch.Tensor] = {}
        for name, t in stream:
            m = _EXPERT_NAME.match(name)
            if m:  # TensorRT-LLM's VANILLA expert naming: w1 = gate, w3 = up, w2 = down
                name = f"{m.group(1)}.{m.group(2)}.{_EXPERT_W[m.group(3)]}.{m.group(4)}"
            canon[name] = t
        used: set[str] = set()

        def sub(prefix: str, required: bool = True) -> dict[str, torch.Tensor]:
            out = {k[len(prefix) + 1:]: v for k, v in canon.items() if k.startswith(prefix + ".")}
            if required and not out:
                raise ValueError(f"no tensors for module '{prefix}' in the checkpoint")
            used.update(f"{prefix}.{k}" for k in out)
            return out

        done: list[str] = []
        # pipeline parallelism: TensorRT-LLM's __pp_init__ removed the weights of every module outside
        # this rank's layers (skip_forward -> remove_weights sets _weights_removed; a kept
        # input_layernorm is not flagged). Their tensors belong to other ranks: not loaded, not unused.
        removed = [name for name, module in self.named_modules() if getattr(module, "_weights_removed", False)]
        for name, module in self.named_modules():
            if not name or any(name.startswith(p + ".") for p in done) or name in removed:
                continue
            if name == "lm_head" and cfg.tie_word_embeddings:
                module.load_weights(weights=[{"weight": canon["model.embed_tokens.weight"]}])
                done.append(name)
                continue
            base = name.rsplit(".", 1)[0]
            if name.endswith("self_attn.qkv_proj"):
                if cfg.owns_kv(int(name.split(".")[2])):
                    q, k, v = (sub(f"{base}.{p}") for p in ("q_proj", "k_proj", "v_proj"))
                    module.load_weights(weights=[q, _duplicate_kv_heads(k, cfg.num_kv_heads, tp),
                                                 _duplicate_kv_heads(v, cfg.num_kv_heads, tp)])
                else:
                    module.load_weights(weights=[sub(f"{base}.q_proj")])
            elif name.endswith("gate_up_proj"):
                module.load_weights(weights=[sub(f"{base}.gate_proj"), sub(f"{base}.up_proj")])
            elif name.endswith("mlp.experts"):
                module.load_weights(weights=[sub(name)])
            elif hasattr(module, "load_weights") and list(module.parameters(recurse=False)):
                module.load_weights(weights=[sub(name)])
            elif list(module.parameters(recurse=False)):
                tensors = sub(name)
                for pname, p in module.named_parameters(recurse=False):
                    if pname not in tensors:
                        raise ValueError(f"missing tensor '{name}.{pname}'")
                    p.data.copy_(tensors[pname].to(p.dtype))
            else:
                continue
            done.append(name)
        unused = sorted(k for k in set(canon) - used - {"model.embed_tokens.weight"}
                        - ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
                        if not any(k.startswith(r + ".") for r in removed))
        if unused:
            raise ValueError(f"{len(unused)} checkpoint tensor(s) were not loaded into any module, e.g. {unused[:5]}")


@register_auto_model(ARCH_MOE)
class HunYuanMoEV1ForCausalLM(_HunyuanForCausalLM):
    ARCH = ARCH_MOE


@register_auto_model(ARCH_LARGE)
class HunYuanForCausalLM(_HunyuanForCausalLM):
    ARCH = ARCH_LARGE


@register_auto_model(ARCH_DENSE)
class HunYuanDenseV1ForCausalLM(_HunyuanForCausalLM):
    ARCH = ARCH_DENSE


REGISTERED += [ARCH_MOE, ARCH_LARGE, ARCH_DENSE]
