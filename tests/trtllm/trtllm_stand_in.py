"""TEST-ONLY stand-in for the part of TensorRT-LLM 1.2.1's API our model classes use. NOT TensorRT-LLM.

Sources: every class/function below carries "# follows: <file>" of TensorRT-LLM it mimics. The
v1.2.1 tag could not be read here (snapshot too large to fetch, PyPI stub, no stored file version at
the 1.2.1 commits); the files were read in the code index's stored v1.2-era versions, so no tag line
numbers can be given. docs/trtllm.md ("Checked against source, or assumed") lists what is read and
what is assumed.

TensorRT-LLM cannot be installed on our machines, so `install()` puts pure-torch modules under the
real module paths (``tensorrt_llm._torch.modules.attention`` ...) into ``sys.modules``. Names,
constructor and forward signatures follow the 1.2.x source (keyword-only ``Attention.__init__``,
``Linear.load_weights(weights: List[Dict])`` with fused QKV / gate-up modes and TP sharding,
``create_moe(routing_method, num_experts, hidden_size, intermediate_size, dtype, reduce_results,
model_config, ...)`` with VANILLA ``E.w1/w2/w3`` expert weights, ``RopeParams``/``RotaryEmbedding``,
``DecoderModelForCausalLM(model, *, config, hidden_size, vocab_size)``, ``register_auto_model``).
Quantized layers: W4A16 (``W4A16_AWQ_LinearMethod``) and FP8 QDQ (``FP8QDQLinearMethod``) linears,
the FP8 QDQ MoE (``CutlassFusedMoE`` + ``FP8QDQFusedMoEMethod``), with their loaders' rescaling. The
post-construction steps run in the real order (metaclass: ``__post_init__`` then ``__pp_init__``;
:func:`load_model`: ``load_weights`` then ``post_load_weights``), including pipeline parallelism
(``skip_forward`` / ``remove_weights`` / send-receive wrappers; :func:`run_forward` runs a list of
PP ranks in sequence). The attention backend is a per-layer-slot contiguous KV cache, single
sequence; the "executor" (:func:`run_forward`) sizes the cache from ``num_hidden_layers`` /
``num_key_value_heads`` like TensorRT-LLM's KV-cache creator. Nothing here says anything about
TensorRT-LLM's kernels.
Only TP size 1 is exercised by the forward tests (sharding code is exercised by load_weights).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import sys
import types
from typing import Dict, Generic, List, Optional, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

STAND_IN = True


# ---------------------------------------------------------------- tensorrt_llm.functional / mapping
# follows: tensorrt_llm/functional.py (PositionEmbeddingType)
class PositionEmbeddingType(enum.IntEnum):
    learned_absolute = 0
    rope_gptj = 1
    rope_gpt_neox = 2
    long_rope = 3
    alibi = 4
    alibi_with_scale = 5
    relative = 6
    chatglm = 7
    yarn = 8
    mrope = 9
    deferred = 10


@dataclasses.dataclass
# follows: tensorrt_llm/mapping.py (Mapping; only the fields the adapter reads)
class Mapping:
    world_size: int = 1
    rank: int = 0
    tp_size: int = 1
    pp_size: int = 1
    moe_tp_size: int = -1
    moe_ep_size: int = -1
    enable_attention_dp: bool = False

    def __post_init__(self):
        if self.moe_tp_size == -1 and self.moe_ep_size == -1:
            self.moe_tp_size, self.moe_ep_size = self.tp_size, 1

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp_size

    # real (mapping.py): pp_rank = rank // (tp_size * cp_size); cp_size is 1 here
    @property
    def pp_rank(self) -> int:
        return self.rank // self.tp_size

    def has_pp(self) -> bool:
        return self.pp_size > 1

    def is_first_pp_rank(self) -> bool:
        return self.pp_rank == 0

    def is_last_pp_rank(self) -> bool:
        return self.pp_rank == self.pp_size - 1

    def pp_layers(self, num_layers: int) -> List[int]:
        # real (mapping.py, no pp_partition): "if num_layers % pp_size = n != 0, first n ranks get one
        # extra layer" -- torch.tensor_split
        return torch.tensor_split(torch.arange(num_layers), self.pp_size)[self.pp_rank].tolist()


# ---------------------------------------------------------------- quantization
# follows: tensorrt_llm/quantization/mode.py (QuantAlgo; the two algos the builder writes)
class QuantAlgo(str, enum.Enum):
    FP8 = "FP8"
    W4A16_AWQ = "W4A16_AWQ"


@dataclasses.dataclass
# follows: tensorrt_llm/models/modeling_utils.py (QuantConfig)
class QuantConfig:
    quant_algo: Optional[QuantAlgo] = None
    kv_cache_quant_algo: Optional[QuantAlgo] = None
    group_size: int = 128
    exclude_modules: Optional[List[str]] = None


# ---------------------------------------------------------------- _torch.model_config
@dataclasses.dataclass(kw_only=True)
# follows: tensorrt_llm/_torch/model_config.py:112 @ b35ac1b (ModelConfig)
class ModelConfig:
    pretrained_config: Optional[object] = None
    mapping: Mapping = dataclasses.field(default_factory=Mapping)
    quant_config: QuantConfig = dataclasses.field(default_factory=QuantConfig)
    moe_backend: str = "CUTLASS"
    attn_backend: str = "TRTLLM"
    skip_create_weights_in_init: bool = False

    def get_quant_config(self, name: Optional[str] = None) -> QuantConfig:
        return self.quant_config

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str, trust_remote_code: bool = True, **kwargs) -> "ModelConfig":
        """The config half of the real ModelConfig.from_pretrained: load_pretrained_config
        (_torch/pyexecutor/config_utils.py) is transformers.AutoConfig.from_pretrained, and the model
        loader passes trust_remote_code=True (ModelLoader._load_and_validate_config). An unregistered
        model_type without auto_map fails there. A ModelOpt ``hf_quant_config.json`` is read as
        load_modelopt_quant_config does (its ``quantization`` section: quant_algo, group_size,
        exclude_modules); it takes precedence over config.json's quantization_config."""
        import json
        import os

        import transformers

        pc = transformers.AutoConfig.from_pretrained(checkpoint_dir, trust_remote_code=trust_remote_code)
        qfile = os.path.join(checkpoint_dir, "hf_quant_config.json")
        if os.path.isfile(qfile) and "quant_config" not in kwargs:
            with open(qfile) as f:
                q = json.load(f)["quantization"]
            kwargs["quant_config"] = QuantConfig(
                quant_algo=QuantAlgo(q["quant_algo"]) if q.get("quant_algo") else None,
                group_size=q.get("group_size", 128), exclude_modules=q.get("exclude_modules"))
        return cls(pretrained_config=pc, **kwargs)

    def get_num_attention_layers(self) -> int:
        return self.pretrained_config.num_hidden_layers


# ---------------------------------------------------------------- attention_backend.interface
# follows: tensorrt_llm/_torch/attention_backend/interface.py
class PredefinedAttentionMask(str, enum.Enum):
    CAUSAL = "causal"
    FULL = "full"


@dataclasses.dataclass(kw_only=True, frozen=True)
# follows: tensorrt_llm/_torch/attention_backend/interface.py (RopeParams): the cos/sin table has
# max_positions rows (create_rope_const_params); a position past it has no entry
class RopeParams:
    dim: int = 0
    theta: float = 10000.0
    alpha: float = 1.0
    scale_type: int = 0
    scale: float = 1.0
    max_positions: int = 1024

    def create_rope_const_params(self):
        """(inv_freq, table of max_positions rows of [cos | sin]) like the real table's length."""
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim))
        freqs = torch.arange(self.max_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
        return inv_freq, torch.cat([freqs.cos(), freqs.sin()], dim=-1)


@dataclasses.dataclass(kw_only=True, frozen=True)
# follows: tensorrt_llm/_torch/attention_backend/interface.py
class PositionalEmbeddingParams:
    type: PositionEmbeddingType
    embedder: Optional[object] = None
    rope: Optional[RopeParams] = None
    is_neox: bool = True


# follows: tensorrt_llm/_torch/pyexecutor/resource_manager.py (KVCacheManager sizing)
class KVCacheManager:
    """Stand-in cache, sized like the real KVCacheManager (_torch/pyexecutor/resource_manager.py, per the
    source read for docs/trtllm.md): ``num_layers`` layers, ``num_kv_heads`` an int or a per-layer list
    in which ``None`` gives that layer 0 heads (no pool); heads per rank round up over tp."""

    def __init__(self, num_layers: int, num_kv_heads, head_dim: int, max_seq_len: int, dtype: torch.dtype,
                 tp_size: int = 1):
        self.num_layers = num_layers
        heads = num_kv_heads if isinstance(num_kv_heads, list) else [num_kv_heads] * num_layers
        assert len(heads) == num_layers, f"num_kv_heads list has {len(heads)} entries for {num_layers} layers"
        self.num_kv_heads_per_layer = [0 if h is None else (h + tp_size - 1) // tp_size for h in heads]
        self.k = [torch.zeros(max_seq_len, h, head_dim, dtype=dtype) if h else None
                  for h in self.num_kv_heads_per_layer]
        self.v = [torch.zeros_like(k) if k is not None else None for k in self.k]
        self.writes = [0] * num_layers
        self.written: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(num_layers)]  # test aid

    @property
    def num_elements(self) -> int:
        return sum(2 * k.numel() for k in self.k if k is not None)

    def get_buffers(self, layer_idx: int):
        if not 0 <= layer_idx < self.num_layers or self.k[layer_idx] is None:
            raise IndexError(f"layer_idx {layer_idx} has no KV-cache pool (heads per layer: "
                             f"{self.num_kv_heads_per_layer})")
        return self.k[layer_idx], self.v[layer_idx]


@dataclasses.dataclass(kw_only=True)
# follows: tensorrt_llm/_torch/attention_backend/interface.py (single sequence only: assumed)
class AttentionMetadata:
    max_num_requests: int = 1
    num_contexts: int = 1
    seq_lens: Optional[torch.Tensor] = None
    kv_cache_manager: Optional[KVCacheManager] = None
    num_cached_tokens: int = 0          # stand-in: single sequence, tokens already in the cache
    all_rank_num_tokens: Optional[List[int]] = None

    @property
    def num_tokens(self) -> int:
        return int(self.seq_lens.sum())


# ---------------------------------------------------------------- modules.linear
# follows: tensorrt_llm/_torch/modules/linear.py:86 @ 00bbf71
class TensorParallelMode(str, enum.Enum):
    COLUMN = "column"
    ROW = "row"


# follows: tensorrt_llm/_torch/modules/linear.py:37 @ 00bbf71
class WeightMode(str, enum.Enum):
    VANILLA = "vanilla"
    FUSED_QKV_LINEAR = "fused_qkv_linear"
    FUSED_GATE_UP_LINEAR = "fused_gate_up_linear"


@dataclasses.dataclass(kw_only=True)
# follows: tensorrt_llm/_torch/modules/linear.py:81 @ 00bbf71
class WeightsLoadingConfig:
    weight_mode: WeightMode = WeightMode.VANILLA


def load_weight_shard(weight, tensor_parallel_size=1, tensor_parallel_rank=0, tensor_parallel_mode=None):
    if tensor_parallel_mode is None or tensor_parallel_size == 1:
        return weight
    # real (_torch/modules/linear.py:101 @ 00bbf71, load_weight_shard): COLUMN splits dim 0, ROW dim 1, slices of
    # ceil(width / tp) (so a tensor narrower than tp rows is not split into whole heads: the caller
    # must have duplicated it)
    dim = 0 if tensor_parallel_mode == TensorParallelMode.COLUMN else 1
    width = weight.shape[dim]
    step = math.ceil(width / tensor_parallel_size)
    return weight.narrow(dim, min(width, tensor_parallel_rank * step),
                         max(0, min(step, width - tensor_parallel_rank * step)))


def _unpack_w4a16_runtime(weight: torch.Tensor) -> torch.Tensor:
    """Runtime W4A16 weight (in, out/2) int8 -> int64 (in, out), -8..7: output column 2j in the low
    nibble, 2j+1 in the high one (ModelOpt's pack_int4_in_uint8, modelopt/torch/export/quant_utils.py
    l.680-721 in nvidia-modelopt 0.37.0, transposed by the loader). The real loader then runs
    preprocess_weights_for_mixed_gemm (a CUTLASS-specific interleave, GPU-only): not modelled."""
    b = weight.view(torch.uint8).to(torch.int64)
    s = torch.stack([b & 0xF, (b >> 4) & 0xF], dim=-1).reshape(weight.shape[0], -1)
    return torch.where(s >= 8, s - 16, s)


def static_quantize_e4m3_per_tensor(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """torch.ops.tensorrt_llm.static_quantize_e4m3_per_tensor (a CUDA kernel): x / scale, saturated to
    +-448, rounded to e4m3. The saturation and the division (rather than a multiplication by a
    reciprocal) are assumed: the kernel source was not read."""
    return (x.float() / scale.float()).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)


def scaled_mm(qx: torch.Tensor, qw_t: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
              out_dtype: torch.dtype) -> torch.Tensor:
    """torch.ops.trtllm.cublas_scaled_mm / cuda_scaled_mm: e4m3 x e4m3 GEMM, fp32 accumulation, the
    product of the two per-tensor scales applied to the accumulator (assumed: cuBLASLt's FP8
    scaled-GEMM semantics; the op's source was not read)."""
    return ((qx.float() @ qw_t.float()) * (scale_a.float() * scale_b.float())).to(out_dtype)


# follows: tensorrt_llm/_torch/modules/linear.py (Linear: line not found + UnquantizedLinearMethod:446 /
# W4A16_AWQ_LinearMethod: line not found / FP8QDQLinearMethod:576; all @ 00bbf71)
class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = None,
                 mapping: Optional[Mapping] = None, tensor_parallel_mode: Optional[TensorParallelMode] = None,
                 gather_output: bool = False, quant_config: Optional[QuantConfig] = None,
                 weights_loading_config: Optional[WeightsLoadingConfig] = None, reduce_output: bool = True,
                 skip_create_weights_in_init: bool = False, use_custom_cublas_mm: bool = False,
                 lora=None, allreduce_strategy=None, force_dynamic_quantization: bool = False):
        super().__init__()
        self.mapping = mapping or Mapping()
        self.tp_size, self.tp_rank = self.mapping.tp_size, self.mapping.tp_rank
        self.tp_mode = tensor_parallel_mode
        self.in_features, self.out_features = in_features, out_features
        if tensor_parallel_mode == TensorParallelMode.COLUMN:
            out_features //= self.tp_size
        elif tensor_parallel_mode == TensorParallelMode.ROW:
            in_features //= self.tp_size
        self.dtype = dtype or torch.float32
        self.weights_loading_config = weights_loading_config or WeightsLoadingConfig()
        self.quant_config = quant_config
        self._local = (in_features, out_features, bias)
        self._weights_created = False
        # real: with skip_create_weights_in_init the model's __post_init__ applies the quantization
        # exclusions first and then calls create_weights() (modeling_utils.py); see AutoModelForCausalLM
        if not skip_create_weights_in_init:
            self.create_weights()

    def create_weights(self):
        if self._weights_created:
            return
        self._weights_created = True
        in_features, out_features, bias = self._local
        quant_config = self.quant_config
        algo = None if quant_config is None else quant_config.quant_algo
        self.algo = algo
        if algo == QuantAlgo.W4A16_AWQ:
            # real: W4A16_AWQ_LinearMethod.create_weights (_torch/modules/linear.py; see docs/trtllm.md):
            # weight (in, out/2) int8, weight_scale (in/group, out) in the module dtype, no pre_quant_scale
            g = quant_config.group_size
            if in_features % g:
                raise ValueError(f"in_features {in_features} must be divisible by group_size {g}")
            self.weight = nn.Parameter(torch.empty(in_features, out_features // 2, dtype=torch.int8),
                                       requires_grad=False)
            self.weight_scale = nn.Parameter(torch.empty(in_features // g, out_features, dtype=self.dtype),
                                             requires_grad=False)
            self.pre_quant_scale = None
        elif algo == QuantAlgo.FP8:
            # real: FP8QDQLinearMethod.create_weights (_torch/modules/linear.py:578 @ 00bbf71): weight e4m3 (out, in),
            # per-tensor fp32 scalars weight_scale, input_scale, inv_input_scale, plus kv_scales /
            # inv_kv_scales (NVFP4 KV cache; unused here)
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=torch.float8_e4m3fn),
                                       requires_grad=False)
            for pname, init in (("weight_scale", torch.tensor(1.)), ("input_scale", torch.tensor(1.)),
                                ("inv_input_scale", torch.tensor(1.)), ("kv_scales", torch.ones(3)),
                                ("inv_kv_scales", torch.ones(3))):
                setattr(self, pname, nn.Parameter(init.to(torch.float32), requires_grad=False))
        else:
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=self.dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=self.dtype)) if bias else None

    def _shard(self, t: torch.Tensor) -> torch.Tensor:
        return load_weight_shard(t, self.tp_size, self.tp_rank, self.tp_mode)

    def load_weights(self, weights: List[Dict]):
        mode = self.weights_loading_config.weight_mode
        expected = {WeightMode.VANILLA: 1, WeightMode.FUSED_QKV_LINEAR: 3, WeightMode.FUSED_GATE_UP_LINEAR: 2}[mode]
        assert len(weights) == expected, f"{mode} expects {expected} weight dicts, got {len(weights)}"
        # real: every quant method's loader copies into module.weight (copy_weight in the
        # load_weights_*_helper functions); a module whose weights __pp_init__ removed has none,
        # so loading it fails -- TensorRT-LLM's own loader never calls it (len(module._parameters) == 0)
        _ = self.weight
        if self.algo == QuantAlgo.FP8:
            return self._load_fp8(weights, mode)
        for pname in ("weight", "weight_scale"):
            p = getattr(self, pname, None)
            if p is None:
                continue
            parts = [self._shard(w[pname]) for w in weights]
            full = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
            if self.algo == QuantAlgo.W4A16_AWQ:
                full = full.T  # real: the checkpoint holds (out/2, in) and (out, in/group); loaded transposed
            assert tuple(full.shape) == tuple(p.shape), f"{pname}: {tuple(full.shape)} vs {tuple(p.shape)}"
            p.data.copy_(full.to(p.dtype))
        if self.algo == QuantAlgo.W4A16_AWQ and mode == WeightMode.VANILLA:
            # real: W4A16_AWQ_LinearMethod.load_weights_vanilla reads it unconditionally (KeyError
            # without it); the fused QKV / gate-up loaders never read it
            flip = {TensorParallelMode.COLUMN: TensorParallelMode.ROW,
                    TensorParallelMode.ROW: TensorParallelMode.COLUMN}.get(self.tp_mode)
            pqs = weights[0]["pre_quant_scale"]
            self.pre_quant_scale = nn.Parameter(
                load_weight_shard(pqs.reshape(1, -1), self.tp_size, self.tp_rank, flip).reshape(-1),
                requires_grad=False)

    def _load_fp8(self, weights: List[Dict], mode: WeightMode):
        """real: FP8QDQLinearMethod.load_weights_vanilla / _fused_qkv_linear / _fused_gate_up_linear
        (_torch/modules/linear.py). Vanilla: the stored weight and its two scalars. Fused: ONE input
        scale, the max of the shards' input scales; ONE weight scale, the max of theirs; each shard's
        weight dequantised in the module dtype (``.to(module.dtype) * weight_scale[i]``) and requantised
        with the max (``/ max``, cast to e4m3, no clamp: |w * s_i / s_max| <= 448)."""
        def scalars(key):
            return [w[key].reshape([]).float() for w in weights if key in w]

        input_scale, weight_scale = scalars("input_scale"), scalars("weight_scale")
        parts = [self._shard(w["weight"]) for w in weights]
        if mode == WeightMode.VANILLA:
            full, ws = parts[0], weight_scale[0]
        else:
            ws = max(weight_scale)
            deq = [p.to(self.dtype) * s for p, s in zip(parts, weight_scale)]
            full = (torch.cat(deq) / ws).to(torch.float8_e4m3fn)
        assert tuple(full.shape) == tuple(self.weight.shape), \
            f"weight: {tuple(full.shape)} vs {tuple(self.weight.shape)}"
        self.weight.data.copy_(full)
        self.weight_scale.data.copy_(ws)
        if input_scale:  # static quantization
            self.input_scale.data.copy_(max(input_scale))
            self.inv_input_scale.data = 1.0 / self.input_scale
        else:  # real: dynamic quantization (input_scale = None); Tencent checkpoints are static
            self.input_scale = None
            self.inv_input_scale = None

    def forward(self, input, *, all_reduce_params=None, lora_params=None, layer_idx=None):
        if self.algo == QuantAlgo.FP8:
            # real: FP8QDQLinearMethod.apply -- static per-tensor quantization of the input with
            # input_scale, then cublas_scaled_mm(qinput, weight.t(), scale_a=input_scale,
            # scale_b=weight_scale, out_dtype=module.dtype or input.dtype); bias added after
            if self.input_scale is None:
                raise NotImplementedError("stand-in: dynamic FP8 activation quantization is not emulated")
            qx = static_quantize_e4m3_per_tensor(input, self.input_scale)
            out = scaled_mm(qx, self.weight.t(), self.input_scale, self.weight_scale, self.dtype or input.dtype)
            return out if self.bias is None else out + self.bias
        if self.algo == QuantAlgo.W4A16_AWQ:
            g = self.weight.shape[0] // self.weight_scale.shape[0]
            w = _unpack_w4a16_runtime(self.weight).float() * self.weight_scale.float().repeat_interleave(g, dim=0)
            if self.pre_quant_scale is not None:
                input = input * self.pre_quant_scale.to(input.dtype)
            return F.linear(input, w.t().to(input.dtype), self.bias)
        return F.linear(input, self.weight, self.bias)


# ---------------------------------------------------------------- modules.rms_norm / embedding
# follows: tensorrt_llm/_torch/modules/rms_norm.py
class RMSNorm(nn.Module):
    def __init__(self, *, hidden_size: int, eps: float, dtype: Optional[torch.dtype] = None, device=None,
                 has_weights: bool = True, use_gemma: bool = False):
        super().__init__()
        self.variance_epsilon = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype or torch.float32), requires_grad=False)

    def forward(self, hidden_states, residual=None):
        x = hidden_states.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        out = self.weight * x.to(hidden_states.dtype)
        return out if residual is None else (out, residual)

    def skip_forward(self, hidden_states, residual=None):
        # assumed (rms_norm.py not read for this): a skipped norm passes its input through
        return hidden_states if residual is None else (hidden_states, residual)


# follows: tensorrt_llm/_torch/modules/embedding.py (LMHead; never quantized here: assumed)
class LMHead(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype = None,
                 mapping: Optional[Mapping] = None, tensor_parallel_mode: Optional[TensorParallelMode] = None,
                 gather_output: bool = False):
        super().__init__()
        self.mapping = mapping or Mapping()
        self.tp_mode = tensor_parallel_mode
        rows = num_embeddings // self.mapping.tp_size if tensor_parallel_mode == TensorParallelMode.COLUMN \
            else num_embeddings
        self.weight = nn.Parameter(torch.empty(rows, embedding_dim, dtype=dtype or torch.float32),
                                   requires_grad=False)

    def load_weights(self, weights: List[Dict]):
        assert len(weights) == 1
        w = load_weight_shard(weights[0]["weight"], self.mapping.tp_size, self.mapping.tp_rank, self.tp_mode)
        self.weight.data.copy_(w.to(self.weight.dtype))

    def forward(self, input):
        return F.linear(input, self.weight)

    def skip_forward(self, input):
        # assumed (embedding.py not read for this): no logits on a rank without the LM head
        return input.new_empty(*input.shape[:-1], 0)


# follows: tensorrt_llm/_torch/modules/embedding.py
class Embedding(LMHead):
    def __init__(self, num_embeddings: int, embedding_dim: int, *args, **kwargs):
        super().__init__(num_embeddings, embedding_dim, *args, **kwargs)
        self.embedding_dim = embedding_dim
        self.embed_dtype = self.weight.dtype

    def forward(self, input):
        return F.embedding(input, self.weight)

    def skip_forward(self, input):
        # assumed (embedding.py not read for this): a rank without the embedding returns an empty
        # [tokens, hidden] buffer, which the first layer of the rank fills from pp_recv
        return torch.empty(*input.shape, self.embedding_dim, dtype=self.embed_dtype)


# ---------------------------------------------------------------- modules.gated_mlp
# follows: tensorrt_llm/_torch/modules/gated_mlp.py
class GatedMLP(nn.Module):
    def __init__(self, *, hidden_size: int, intermediate_size: int, bias: bool, activation=F.silu,
                 dtype: Optional[torch.dtype] = None, config: Optional[ModelConfig] = None,
                 overridden_tp_size: Optional[int] = None, reduce_output: bool = True, layer_idx=None,
                 use_cute_dsl_blockscaling_mm: bool = False):
        super().__init__()
        config = config or ModelConfig()
        self.activation = activation
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size, bias=bias, dtype=dtype, mapping=config.mapping,
                                   tensor_parallel_mode=TensorParallelMode.COLUMN,
                                   quant_config=config.get_quant_config(),
                                   weights_loading_config=WeightsLoadingConfig(
                                       weight_mode=WeightMode.FUSED_GATE_UP_LINEAR),
                                   skip_create_weights_in_init=config.skip_create_weights_in_init)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=bias, dtype=dtype, mapping=config.mapping,
                                tensor_parallel_mode=TensorParallelMode.ROW, quant_config=config.get_quant_config(),
                                skip_create_weights_in_init=config.skip_create_weights_in_init)

    def forward(self, x, all_rank_num_tokens=None, final_all_reduce_params=None, lora_params=None, **kwargs):
        h = self.gate_up_proj(x)
        gate, up = h.chunk(2, dim=-1)
        return self.down_proj(self.activation(gate) * up)


# ---------------------------------------------------------------- modules.fused_moe
# follows: tensorrt_llm/_torch/modules/fused_moe/routing.py
class BaseMoeRoutingMethod(nn.Module):
    def apply(self, router_logits):
        raise NotImplementedError

    @property
    def experts_per_token(self):
        return self.top_k


# follows: tensorrt_llm/_torch/modules/fused_moe/routing.py
class DefaultMoeRoutingMethod(BaseMoeRoutingMethod):
    """softmax -> top-k (no renormalisation)."""

    def __init__(self, top_k: int, force_enable_pytorch_op: bool = False):
        super().__init__()
        self.top_k = top_k

    def apply(self, router_logits):
        v, i = torch.topk(F.softmax(router_logits.float(), dim=-1), k=self.top_k, dim=-1)
        return i.to(torch.int32), v


# follows: tensorrt_llm/_torch/modules/fused_moe/routing.py
class RenormalizeMoeRoutingMethod(BaseMoeRoutingMethod):
    """top-k on logits -> softmax over the k (= softmax, top-k, renormalise)."""

    def __init__(self, top_k: int, force_enable_pytorch_op: bool = False):
        super().__init__()
        self.top_k = top_k

    def apply(self, router_logits):
        v, i = torch.topk(router_logits, k=self.top_k, dim=-1)
        return i.to(torch.int32), F.softmax(v.float(), dim=-1)


# follows: tensorrt_llm/_torch/modules/fused_moe/interface.py
class MoEWeightLoadingMode(enum.IntEnum):
    VANILLA = 0
    FUSED_GATE_UP_PROJ = 1


# follows: tensorrt_llm/_torch/modules/fused_moe/fused_moe_vanilla.py (unquantized only)
class VanillaMoE(nn.Module):
    """Per-expert loop (TensorRT-LLM's reference MoE backend), fp32 accumulation."""

    def __init__(self, *, routing_method, num_experts, hidden_size, intermediate_size, dtype=None,
                 reduce_results=False, model_config=None, weight_loading_mode=MoEWeightLoadingMode.VANILLA,
                 layer_idx=None):
        super().__init__()
        model_config = model_config or ModelConfig()
        if model_config.quant_config.quant_algo is not None:
            raise NotImplementedError("stand-in: quantized fused MoE is not emulated")
        self.routing_method = routing_method
        self.num_experts, self.hidden_size, self.intermediate_size = num_experts, hidden_size, intermediate_size
        dtype = dtype or torch.float32
        self.w3_w1_weight = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size, dtype=dtype),
                                         requires_grad=False)
        self.w2_weight = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size, dtype=dtype),
                                      requires_grad=False)

    def load_weights(self, weights: List[Dict]):
        assert len(weights) == 1
        w = weights[0]
        for e in range(self.num_experts):
            self.w3_w1_weight.data[e].copy_(torch.cat([w[f"{e}.w3.weight"], w[f"{e}.w1.weight"]]))
            self.w2_weight.data[e].copy_(w[f"{e}.w2.weight"])

    def forward(self, x, router_logits, do_finalize=True, output_dtype=None, all_rank_num_tokens=None,
                use_dp_padding=None, **kwargs):
        ids, scales = self.routing_method.apply(router_logits)
        out = torch.zeros(x.shape[0], self.hidden_size, dtype=torch.float32)
        I = self.intermediate_size
        for e in torch.unique(ids).tolist():  # per expert, as TensorRT-LLM's VanillaMoE loops
            tok, slot = (ids == e).nonzero(as_tuple=True)
            h = F.linear(x[tok], self.w3_w1_weight[e])
            h = F.silu(h[:, I:]) * h[:, :I]
            out.index_add_(0, tok, F.linear(h, self.w2_weight[e]).float() * scales[tok, slot, None].float())
        return out.to(x.dtype)


# follows: tensorrt_llm/_torch/modules/fused_moe/fused_moe_cutlass.py (CutlassFusedMoE) with
# fused_moe/quantization.py (FP8QDQFusedMoEMethod, load_activation_scales_fp8_qdq,
# requantize_expert_w3_w1_weight_fp8_qdq); FP8 QDQ only. The fused CUTLASS kernel itself is assumed
# (per expert: fc1 on the e4m3 input, dequant, SwiGLU, requant, fc2, dequant, weighted sum).
class CutlassFusedMoE(nn.Module):
    """TensorRT-LLM's FP8 per-tensor (QDQ) MoE as loaded by FP8QDQFusedMoEMethod: ONE fc31 input scale
    for the whole layer (the max over every expert's w1 and w3 input scales), ONE fc2 input scale (the
    max over every w2 input scale), and each expert's w3/w1 requantised to max(w1_scale, w3_scale)."""

    def __init__(self, *, routing_method, num_experts, hidden_size, intermediate_size, dtype=None,
                 reduce_results=False, model_config=None, weight_loading_mode=MoEWeightLoadingMode.VANILLA,
                 layer_idx=None):
        super().__init__()
        model_config = model_config or ModelConfig()
        self.quant_config = model_config.quant_config
        if self.quant_config.quant_algo != QuantAlgo.FP8:
            raise NotImplementedError(
                f"stand-in: CutlassFusedMoE emulates FP8 QDQ only, not {self.quant_config.quant_algo}")
        if model_config.mapping.moe_ep_size > 1 or model_config.mapping.moe_tp_size > 1:
            raise NotImplementedError("stand-in: CutlassFusedMoE emulates moe_tp_size = moe_ep_size = 1 only")
        self.routing_method = routing_method
        self.num_experts, self.hidden_size, self.intermediate_size = num_experts, hidden_size, intermediate_size
        self.dtype = dtype or torch.float32
        self.moe_backend = model_config.moe_backend
        E, I, H = num_experts, intermediate_size, hidden_size
        # real create_weights: w3_w1_weight (E, 2I, H) e4m3 (w3 rows first), w2_weight (E, H, I) e4m3,
        # fc31_dequant (E), fc2_dequant (E), fc2_quant (), fc31_input_dequant ()
        self.w3_w1_weight = nn.Parameter(torch.empty(E, 2 * I, H, dtype=torch.float8_e4m3fn), requires_grad=False)
        self.w2_weight = nn.Parameter(torch.empty(E, H, I, dtype=torch.float8_e4m3fn), requires_grad=False)
        self.fc31_dequant = nn.Parameter(torch.empty(E), requires_grad=False)
        self.fc2_dequant = nn.Parameter(torch.empty(E), requires_grad=False)
        self.fc2_quant = nn.Parameter(torch.tensor(1.), requires_grad=False)
        self.fc31_input_dequant = nn.Parameter(torch.tensor(1.), requires_grad=False)

    def load_weights(self, weights: List[Dict]):
        assert len(weights) == 1
        w = weights[0]
        E, I = self.num_experts, self.intermediate_size
        _ = self.w3_w1_weight  # removed by __pp_init__: AttributeError, as the real loader's copies
        fc31_in = torch.empty(E, 2)
        fc2_in = torch.empty(E)
        w31_scale = torch.empty(E, 2)
        w2_scale = torch.empty(E)
        for e in range(E):
            self.w3_w1_weight.data[e].copy_(torch.cat([w[f"{e}.w3.weight"], w[f"{e}.w1.weight"]]))
            self.w2_weight.data[e].copy_(w[f"{e}.w2.weight"])
            # load_activation_scales_fp8_qdq / load_expert_fc31_input_scale_fp8_qdq: both w1 and w3 input scales
            fc31_in[e, 0] = w[f"{e}.w1.input_scale"].reshape([]).float()
            fc31_in[e, 1] = w[f"{e}.w3.input_scale"].reshape([]).float()
            fc2_in[e] = w[f"{e}.w2.input_scale"].reshape([]).float()
            w31_scale[e, 0] = w[f"{e}.w1.weight_scale"].reshape([]).float()
            w31_scale[e, 1] = w[f"{e}.w3.weight_scale"].reshape([]).float()
            w2_scale[e] = w[f"{e}.w2.weight_scale"].reshape([]).float()
        # process_weights_after_loading (assumed to run at the end of load_weights, as in the source read)
        max_fc31_in, max_fc2_in = fc31_in.max(), fc2_in.max()
        for e in range(E):  # requantize_expert_w3_w1_weight_fp8_qdq
            s1, s3 = w31_scale[e, 0], w31_scale[e, 1]
            smax = max(s1, s3)
            w3 = self.w3_w1_weight.data[e, :I].to(self.dtype) * s3
            w1 = self.w3_w1_weight.data[e, I:].to(self.dtype) * s1
            self.w3_w1_weight.data[e, :I].copy_((w3 / smax).to(torch.float8_e4m3fn))
            self.w3_w1_weight.data[e, I:].copy_((w1 / smax).to(torch.float8_e4m3fn))
        self.fc31_dequant.data.copy_(w31_scale.max(dim=1).values * max_fc31_in)
        self.fc2_quant.data.copy_(max_fc2_in.reciprocal())
        self.fc2_dequant.data.copy_(w2_scale * max_fc2_in)
        self.fc31_input_dequant.data.copy_(max_fc31_in)
        # the kernel quantizes the SwiGLU output by multiplying with fc2_quant = 1 / max_fc2_in; the
        # stand-in divides by max_fc2_in (as static_quantize_e4m3_per_tensor does): assumed equivalent
        self.fc2_input_scale = max_fc2_in.clone()

    def post_load_weights(self):
        # real (FP8QDQFusedMoEMethod.post_load_weights): with moe_backend CUTLASS, pads w3_w1 / w2 to
        # the FP8 GEMM alignment (rows 32, columns 16) -- zero padding, no numerical effect: not modelled
        self.post_load_weights_calls = getattr(self, "post_load_weights_calls", 0) + 1

    def forward(self, x, router_logits, do_finalize=True, output_dtype=None, all_rank_num_tokens=None,
                use_dp_padding=None, **kwargs):
        ids, scales = self.routing_method.apply(router_logits)
        out = torch.zeros(x.shape[0], self.hidden_size, dtype=torch.float32)
        I = self.intermediate_size
        qx = static_quantize_e4m3_per_tensor(x, self.fc31_input_dequant)
        for e in torch.unique(ids).tolist():
            tok, slot = (ids == e).nonzero(as_tuple=True)
            h = (qx[tok].float() @ self.w3_w1_weight[e].float().t()) * self.fc31_dequant[e]
            h = (F.silu(h[:, I:]) * h[:, :I]).to(x.dtype)
            q2 = static_quantize_e4m3_per_tensor(h, self.fc2_input_scale)
            y = (q2.float() @ self.w2_weight[e].float().t()) * self.fc2_dequant[e]
            out.index_add_(0, tok, y * scales[tok, slot, None].float())
        return out.to(x.dtype)


# follows: tensorrt_llm/_torch/modules/fused_moe/create_moe.py (the backend by model_config.moe_backend;
# the stand-in: VanillaMoE for unquantized layers, CutlassFusedMoE for FP8 QDQ)
def create_moe(routing_method, num_experts, hidden_size, intermediate_size, dtype=None, reduce_results=False,
               model_config=ModelConfig(), override_quant_config=None, aux_stream_dict=None,
               weight_loading_mode=MoEWeightLoadingMode.VANILLA, bias=False, apply_router_weight_on_input=False,
               layer_idx=None, swiglu_alpha=None, swiglu_beta=None, swiglu_limit=None):
    quant = (override_quant_config or model_config.quant_config).quant_algo
    cls = CutlassFusedMoE if quant == QuantAlgo.FP8 else VanillaMoE
    return cls(routing_method=routing_method, num_experts=num_experts, hidden_size=hidden_size,
                      intermediate_size=intermediate_size, dtype=dtype, reduce_results=reduce_results,
                      model_config=model_config, weight_loading_mode=weight_loading_mode, layer_idx=layer_idx)


# ---------------------------------------------------------------- modules.rotary_embedding / attention
# follows: tensorrt_llm/_torch/modules/rotary_embedding.py
class RotaryEmbedding(nn.Module):
    def __init__(self, rope_params: RopeParams, *, head_dim: int, is_neox: bool = True):
        super().__init__()
        self.head_dim, self.is_neox = head_dim, is_neox
        self.inv_freq, self.table = rope_params.create_rope_const_params()

    def forward(self, position_ids: torch.Tensor, targets: List[torch.Tensor], remove_input_padding: bool = True):
        pos = position_ids.reshape(-1)
        if int(pos.max()) >= self.table.shape[0]:  # the real kernels would read past the table
            raise IndexError(f"position {int(pos.max())} is past the RoPE table ({self.table.shape[0]} rows = "
                             "RopeParams.max_positions)")
        half = self.table.shape[1] // 2
        cos, sin = self.table[pos, :half], self.table[pos, half:]
        cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        out = []
        for t in targets:
            x = t.reshape(t.shape[0], -1, self.head_dim)
            x1, x2 = x.chunk(2, dim=-1)
            rot = torch.cat((-x2, x1), dim=-1)
            y = x * cos[:, None, :].to(x.dtype) + rot * sin[:, None, :].to(x.dtype)
            out.append(y.reshape(t.shape))
        return out


# follows: tensorrt_llm/_torch/attention_backend/trtllm.py (a contiguous per-layer cache instead of
# the paged one: assumed equivalent)
class TrtllmAttention:
    """Backend stand-in: write this step's K/V into slot `layer_idx`, attend causally over the slot."""

    def __init__(self, layer_idx, num_heads, head_dim, num_kv_heads, pos_embd_params=None, fused_rope=None):
        self.layer_idx, self.num_heads, self.head_dim, self.num_kv_heads = layer_idx, num_heads, head_dim, num_kv_heads
        self.fused_rope = fused_rope

    def forward(self, q, k, v, metadata: AttentionMetadata, attention_mask=PredefinedAttentionMask.CAUSAL,
                position_ids=None, **kwargs):
        T, d = q.shape[0], self.head_dim
        if self.fused_rope is not None:
            q, k = self.fused_rope(position_ids, [q, k])
        start = metadata.num_cached_tokens
        kc, vc = metadata.kv_cache_manager.get_buffers(self.layer_idx)
        kc[start:start + T] = k.reshape(T, self.num_kv_heads, d).to(kc.dtype)
        vc[start:start + T] = v.reshape(T, self.num_kv_heads, d).to(vc.dtype)
        metadata.kv_cache_manager.writes[self.layer_idx] += 1
        metadata.kv_cache_manager.written[self.layer_idx].append(
            (kc[start:start + T].clone(), vc[start:start + T].clone()))
        S = start + T
        kk = kc[:S].repeat_interleave(self.num_heads // self.num_kv_heads, dim=1).float()
        vv = vc[:S].repeat_interleave(self.num_heads // self.num_kv_heads, dim=1).float()
        qq = q.reshape(T, self.num_heads, d).float()
        scores = torch.einsum("thd,shd->hts", qq, kk) / math.sqrt(d)
        future = torch.arange(S)[None, :] > (start + torch.arange(T))[:, None]
        probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        return torch.einsum("hts,shd->thd", probs, vv).reshape(T, -1).to(q.dtype)


# follows: tensorrt_llm/_torch/modules/attention.py (Attention.__init__: heads per rank, fused QKV width)
class Attention(nn.Module):
    def __init__(self, *, hidden_size: int, num_attention_heads: int, num_key_value_heads: int,
                 max_position_embeddings: int, bias: bool,
                 pos_embd_params: Optional[PositionalEmbeddingParams] = None, rope_fusion: Optional[bool] = None,
                 layer_idx: Optional[int] = None, dtype: torch.dtype = None, dense_bias: Optional[bool] = None,
                 config: Optional[ModelConfig] = None, q_scaling: float = 1.0,
                 attention_chunk_size: Optional[int] = None, disable_deep_gemm: bool = False,
                 attn_output_gate: Optional[bool] = None, use_custom_cublas_mm: bool = False,
                 reduce_output: bool = True):
        super().__init__()
        config = config or ModelConfig()
        self.layer_idx = layer_idx
        self.hidden_size = hidden_size
        self.num_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = getattr(config.pretrained_config, "head_dim", None)
        if not isinstance(self.head_dim, int):
            self.head_dim = hidden_size // num_attention_heads
        tp = config.mapping.tp_size
        self.num_heads //= tp
        # real (_torch/modules/attention.py, Attention.__init__): KV heads per rank round *up*, so
        # tp > num_key_value_heads gives one (duplicated) head per rank; the model duplicates the weights
        self.num_key_value_heads = math.ceil(self.num_key_value_heads / tp)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_key_value_heads * self.head_dim
        self.pos_embd_params = pos_embd_params
        self.rope_fusion = True if rope_fusion is None else rope_fusion
        self.qkv_proj = Linear(hidden_size, tp * self.q_size + 2 * tp * self.kv_size, bias=bias, dtype=dtype,
                               mapping=config.mapping, tensor_parallel_mode=TensorParallelMode.COLUMN,
                               weights_loading_config=WeightsLoadingConfig(weight_mode=WeightMode.FUSED_QKV_LINEAR),
                               quant_config=config.get_quant_config(),
                               skip_create_weights_in_init=config.skip_create_weights_in_init)
        self.o_proj = Linear(tp * self.q_size, hidden_size, bias=bool(dense_bias), dtype=dtype,
                             mapping=config.mapping, tensor_parallel_mode=TensorParallelMode.ROW,
                             quant_config=config.get_quant_config(),
                             skip_create_weights_in_init=config.skip_create_weights_in_init)
        rope = None
        if pos_embd_params is not None:
            rope = RotaryEmbedding(pos_embd_params.rope, head_dim=self.head_dim, is_neox=pos_embd_params.is_neox)
        self.rotary_emb = None if self.rope_fusion else rope
        self.attn = TrtllmAttention(layer_idx, self.num_heads, self.head_dim, self.num_key_value_heads,
                                    pos_embd_params, fused_rope=rope if self.rope_fusion else None)

    def split_qkv(self, q, k=None, v=None):
        if k is None and v is None:
            q, k, v = q.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        return q, k, v

    def convert_qkv(self, q, k, v):
        return q, k, v

    def apply_rope(self, q, k, v, position_ids):
        if not self.rope_fusion and position_ids is not None:
            q, k, v = self.split_qkv(q, k, v)
            q, k = self.rotary_emb(position_ids, [q, k])
        return q, k, v

    def forward_impl(self, q, k, v, attn_metadata, attention_mask, attention_window_size=None,
                     attention_mask_data=None, mrope_config=None, position_ids=None):
        q, k, v = self.split_qkv(q, k, v)
        return self.attn.forward(q, k, v, attn_metadata, attention_mask, position_ids=position_ids)

    def forward(self, position_ids, hidden_states, attn_metadata, attention_mask=PredefinedAttentionMask.CAUSAL,
                mrope_config=None, all_reduce_params=None, lora_params=None, attention_window_size=None,
                attention_mask_data=None, **kwargs):
        qkv = self.qkv_proj(hidden_states)
        q, k, v = qkv, None, None
        q, k, v = self.apply_rope(q, k, v, position_ids)
        q, k, v = self.convert_qkv(q, k, v)
        out = self.forward_impl(q, k, v, attn_metadata, attention_mask, position_ids=position_ids)
        return self.o_proj(out, all_reduce_params=all_reduce_params, lora_params=lora_params,
                           layer_idx=self.layer_idx)


# follows: tensorrt_llm/_torch/modules/decoder_layer.py (DecoderLayer: abstract forward with
# residual=... (Ellipsis) meaning "no residual passed"; skip_forward returns its input unchanged)
class DecoderLayer(nn.Module):
    def forward(self, position_ids, hidden_states, attn_metadata, residual=..., **kwargs):
        raise NotImplementedError

    def skip_forward(self, position_ids, hidden_states, attn_metadata, residual=..., **kwargs):
        if residual is ...:
            return hidden_states
        return hidden_states, residual


# ---------------------------------------------------------------- models.modeling_utils
MODEL_CLASS_MAPPING: Dict[str, type] = {}


# follows: tensorrt_llm/_torch/models/modeling_utils.py (plain dict, last registration wins)
def register_auto_model(name: str):
    def decorator(cls):
        MODEL_CLASS_MAPPING[name] = cls
        return cls
    return decorator


TModel = TypeVar("TModel")
TConfig = TypeVar("TConfig")


# ---- pipeline parallelism: follows tensorrt_llm/_torch/models/modeling_utils.py (iter_modules,
# remove_weights, skip_forward, forward_after_recv, forward_before_send, DecoderModel.__pp_init__);
# pp_send / pp_recv (_torch/distributed/communicator.py) are an in-process queue here
PP_CHANNEL: List[torch.Tensor] = []


def pp_send(t: torch.Tensor) -> None:
    PP_CHANNEL.append(t.detach().clone())


def pp_recv(t: torch.Tensor) -> None:
    src = PP_CHANNEL.pop(0)
    assert src.shape == t.shape, f"pp_recv into {tuple(t.shape)} of a {tuple(src.shape)} tensor"
    t.copy_(src)


def iter_modules(module: nn.Module, ignore_modules: Optional[List[nn.Module]] = None):
    ignore_modules = ignore_modules or []
    ignore_names = []
    for name, mod in module.named_modules():
        if mod in ignore_modules:
            ignore_names.append(name)
        elif any(name.startswith(n) for n in ignore_names):
            continue
        else:
            yield mod


def remove_weights(module: nn.Module, ignore_modules: Optional[List[nn.Module]] = None):
    """real: parameters and buffers of every submodule (but the ignored ones) dropped, and
    ``_weights_removed`` set (read by the model loader before post_load_weights)."""
    for mod in iter_modules(module, ignore_modules):
        mod._parameters.clear()
        mod._buffers.clear()
        mod._weights_removed = True


def skip_forward(module: nn.Module, ignore_modules: Optional[List[nn.Module]] = None):
    if hasattr(module, "skip_forward"):
        module.forward = module.skip_forward
        remove_weights(module, ignore_modules)
    else:  # real: a logger warning, and the module keeps running
        SKIP_FORWARD_WARNINGS.append(type(module).__name__)


SKIP_FORWARD_WARNINGS: List[str] = []


def forward_after_recv(forward_fn):
    def forward_after_recv_fn(position_ids, hidden_states, attn_metadata, residual=..., **kwargs):
        pp_recv(hidden_states)
        if residual is not ...:
            if residual is None:
                residual = torch.empty_like(hidden_states)
            pp_recv(residual)
        return forward_fn(position_ids, hidden_states, attn_metadata, residual=residual, **kwargs)
    return forward_after_recv_fn


def forward_before_send(forward_fn):
    def forward_before_send_fn(position_ids, hidden_states, attn_metadata, residual=..., **kwargs):
        output = forward_fn(position_ids, hidden_states, attn_metadata, residual=residual, **kwargs)
        if residual is not ...:
            hidden_states, residual = output
            pp_send(hidden_states)
            pp_send(residual)
        else:
            pp_send(output)
        return output
    return forward_before_send_fn


# follows: tensorrt_llm/_torch/models/modeling_utils.py
class DecoderModel(nn.Module):
    def __init__(self, model_config: ModelConfig):
        super().__init__()
        self.model_config = model_config
        self.prologue = []
        self.epilogue = []
        self.keep_embed_tokens = False

    def __pp_init__(self):
        """real DecoderModel.__pp_init__: embed_tokens / norm skipped outside the first / last PP rank;
        every layer outside ``mapping.pp_layers`` skipped (its forward = skip_forward, its weights
        removed; the layer right after this rank's last keeps its input_layernorm); this rank's first
        layer receives the hidden states, its last one sends them."""
        mapping = self.model_config.mapping
        if not mapping.has_pp():
            return
        if hasattr(self, "embed_tokens") and not self.keep_embed_tokens:
            self.prologue.append(self.embed_tokens)
        if hasattr(self, "norm"):
            self.epilogue.append(self.norm)
        if not mapping.is_first_pp_rank():
            for module in self.prologue:
                skip_forward(module)
        if not mapping.is_last_pp_rank():
            for module in self.epilogue:
                skip_forward(module)
        n = self.model_config.pretrained_config.num_hidden_layers
        assert n >= mapping.pp_size, f"{n} layers are not enough for PP{mapping.pp_size}"
        pp_layer_list = mapping.pp_layers(n)
        has_pp_layer = len(pp_layer_list) > 0
        for layer_idx in range(n):
            layer = self.layers[layer_idx]
            is_last_layer = layer_idx == n - 1
            if layer_idx not in pp_layer_list:
                is_next_pp_layer = has_pp_layer and layer_idx - 1 == pp_layer_list[-1]
                keep = is_next_pp_layer and hasattr(layer, "input_layernorm")
                skip_forward(layer, ignore_modules=[layer.input_layernorm] if keep else None)
            is_first_pp_layer = (not has_pp_layer and is_last_layer) or (has_pp_layer and layer_idx == pp_layer_list[0])
            if is_first_pp_layer and not mapping.is_first_pp_rank():
                layer.forward = forward_after_recv(layer.forward)
            is_last_pp_layer = (not has_pp_layer and is_last_layer) or (has_pp_layer and layer_idx == pp_layer_list[-1])
            if is_last_pp_layer and not mapping.is_last_pp_rank():
                layer.forward = forward_before_send(layer.forward)


class LogitsProcessor(nn.Module):
    def forward(self, hidden_states, lm_head, attn_metadata, return_context_logits=False):
        if not return_context_logits:
            hidden_states = hidden_states[-1:]
        return lm_head(hidden_states).float()


# follows: tensorrt_llm/_torch/models/modeling_utils.py (PostInitCaller: after __init__, the
# metaclass runs __post_init__ (quantization exclusions, create_weights) and then __pp_init__)
class PostInitCaller(type):
    def __call__(cls, *args, **kwargs):
        obj = type.__call__(cls, *args, **kwargs)
        obj.__post_init__()
        obj.__pp_init__()
        return obj


# follows: tensorrt_llm/_torch/models/modeling_utils.py
class DecoderModelForCausalLM(nn.Module, Generic[TModel, TConfig], metaclass=PostInitCaller):
    def __init__(self, model: TModel, *, config: ModelConfig, hidden_size: int, vocab_size: int):
        super().__init__()
        self.model_config = config
        self.model = model
        self.lm_head = LMHead(vocab_size, hidden_size, dtype=getattr(config.pretrained_config, "torch_dtype", None),
                              mapping=config.mapping, tensor_parallel_mode=TensorParallelMode.COLUMN,
                              gather_output=True)
        self.logits_processor = LogitsProcessor()
        self.prologue = []
        self.epilogue = [self.lm_head]

    def __post_init__(self):
        post_init(self, self.model_config)

    def __pp_init__(self):
        mapping = self.model_config.mapping
        if not mapping.has_pp():
            return
        if not mapping.is_first_pp_rank():
            for module in self.prologue:
                skip_forward(module)
        if not mapping.is_last_pp_rank():
            for module in self.epilogue:
                skip_forward(module)
        self.model.__pp_init__()

    @property
    def config(self):
        return self.model_config.pretrained_config

    def forward(self, attn_metadata, input_ids=None, position_ids=None, inputs_embeds=None,
                return_context_logits: bool = False, **kwargs):
        h = self.model(input_ids=input_ids, attn_metadata=attn_metadata, position_ids=position_ids,
                       inputs_embeds=inputs_embeds)
        return self.logits_processor.forward(h, self.lm_head, attn_metadata, return_context_logits)


def post_init(model: nn.Module, config: ModelConfig) -> None:
    """The real post-construction step (DecoderModelForCausalLM.__post_init__, modeling_utils.py):
    modules matching ``quant_config.exclude_modules`` (fnmatch on the module name) lose their
    quantization, then every module's weights are created (create_weights)."""
    import fnmatch

    patterns = (config.quant_config.exclude_modules or []) if config.quant_config else []
    for name, module in model.named_modules():
        if patterns and hasattr(module, "quant_config") and any(fnmatch.fnmatch(name, p) for p in patterns):
            module.quant_config = None
    for module in model.modules():
        if hasattr(module, "create_weights"):
            module.create_weights()


# follows: tensorrt_llm/_torch/models/modeling_auto.py
class AutoModelForCausalLM:
    @staticmethod
    def from_config(config: ModelConfig):
        arch = config.pretrained_config.architectures[0]
        if arch not in MODEL_CLASS_MAPPING:
            raise ValueError(f"Unknown architecture for AutoModelForCausalLM: {arch}")
        # real (modeling_auto.py): weights are created after construction, for DecoderModelForCausalLM
        # (its metaclass runs __post_init__, then __pp_init__)
        config.skip_create_weights_in_init = True
        return MODEL_CLASS_MAPPING[arch](config)


# follows: tensorrt_llm/_torch/pyexecutor/model_loader.py (ModelLoader.load, LoadFormat.AUTO)
def load_model(config: ModelConfig, weights: Dict[str, torch.Tensor]):
    """from_config, model.load_weights(weights), then post_load_weights() on every module that has
    one and whose weights were not removed by __pp_init__ (``_weights_removed``)."""
    model = AutoModelForCausalLM.from_config(config)
    model.load_weights(weights)
    for module in model.modules():
        if hasattr(module, "post_load_weights") and not getattr(module, "_weights_removed", False):
            module.post_load_weights()
    return model.eval()


# ---------------------------------------------------------------- installing under the real paths
_MODULES = {
    "tensorrt_llm": {},
    "tensorrt_llm.functional": {"PositionEmbeddingType": PositionEmbeddingType},
    "tensorrt_llm.mapping": {"Mapping": Mapping},
    "tensorrt_llm.models": {},
    "tensorrt_llm.models.modeling_utils": {"QuantConfig": QuantConfig},
    "tensorrt_llm.quantization": {"QuantAlgo": QuantAlgo},
    "tensorrt_llm._torch": {},
    "tensorrt_llm._torch.attention_backend": {"AttentionMetadata": AttentionMetadata,
                                              "TrtllmAttention": TrtllmAttention},
    "tensorrt_llm._torch.attention_backend.interface": {
        "PositionalEmbeddingParams": PositionalEmbeddingParams, "PredefinedAttentionMask": PredefinedAttentionMask,
        "RopeParams": RopeParams, "AttentionMetadata": AttentionMetadata},
    "tensorrt_llm._torch.model_config": {"ModelConfig": ModelConfig},
    "tensorrt_llm._torch.models": {"AutoModelForCausalLM": AutoModelForCausalLM},
    "tensorrt_llm._torch.models.modeling_auto": {"AutoModelForCausalLM": AutoModelForCausalLM},
    "tensorrt_llm._torch.models.modeling_utils": {
        "DecoderModel": DecoderModel, "DecoderModelForCausalLM": DecoderModelForCausalLM,
        "register_auto_model": register_auto_model, "MODEL_CLASS_MAPPING": MODEL_CLASS_MAPPING},
    "tensorrt_llm._torch.modules": {},
    "tensorrt_llm._torch.modules.attention": {"Attention": Attention},
    "tensorrt_llm._torch.modules.decoder_layer": {"DecoderLayer": DecoderLayer},
    "tensorrt_llm._torch.modules.embedding": {"Embedding": Embedding, "LMHead": LMHead},
    "tensorrt_llm._torch.modules.fused_moe": {
        "create_moe": create_moe, "RenormalizeMoeRoutingMethod": RenormalizeMoeRoutingMethod,
        "DefaultMoeRoutingMethod": DefaultMoeRoutingMethod, "VanillaMoE": VanillaMoE,
        "CutlassFusedMoE": CutlassFusedMoE,
        "MoEWeightLoadingMode": MoEWeightLoadingMode},
    "tensorrt_llm._torch.modules.gated_mlp": {"GatedMLP": GatedMLP},
    "tensorrt_llm._torch.modules.linear": {"Linear": Linear, "TensorParallelMode": TensorParallelMode,
                                           "WeightMode": WeightMode, "WeightsLoadingConfig": WeightsLoadingConfig},
    "tensorrt_llm._torch.modules.rms_norm": {"RMSNorm": RMSNorm},
    "tensorrt_llm._torch.modules.rotary_embedding": {"RotaryEmbedding": RotaryEmbedding},
}


def install() -> None:
    """Put the stand-in into sys.modules under TensorRT-LLM's module paths (test processes only)."""
    for name, attrs in _MODULES.items():
        mod = types.ModuleType(name, "TEST-ONLY stand-in for " + name + " (not TensorRT-LLM)")
        mod.__path__ = []  # a package, so submodules resolve from sys.modules
        mod.__dict__.update(attrs)
        mod.HUNYUAN_TEST_STAND_IN = True
        sys.modules[name] = mod
    for name in _MODULES:
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(sys.modules[parent], child, sys.modules[name])


def uninstall() -> None:
    for name in _MODULES:
        if getattr(sys.modules.get(name), "HUNYUAN_TEST_STAND_IN", False):
            del sys.modules[name]


# ---------------------------------------------------------------- the executor's part
@torch.no_grad()
# follows: tensorrt_llm/_torch/pyexecutor/_util.py (KvCacheCreator._create_kv_cache_manager)
def new_cache(model) -> KVCacheManager:
    """Allocate the KV cache as the real KvCacheCreator._create_kv_cache_manager does (non-MLA,
    non-hybrid branch, _torch/pyexecutor/_util.py): num_layers = pretrained_config.num_hidden_layers,
    num_kv_heads = pretrained_config.num_key_value_heads (int or per-layer list), head_dim from the
    config. It does not call ModelConfig.get_num_attention_layers()."""
    mc = model.model_config
    pc = mc.pretrained_config
    head_dim = getattr(pc, "head_dim", None)
    if not isinstance(head_dim, int):
        head_dim = pc.hidden_size // pc.num_attention_heads
    return KVCacheManager(pc.num_hidden_layers, getattr(pc, "num_key_value_heads", pc.num_attention_heads), head_dim,
                          256, _kv_dtype(pc), mc.mapping.tp_size)


def _kv_dtype(pc) -> torch.dtype:
    # the KV cache in the model's activation dtype (real: kv_cache_config.dtype "auto" = the model dtype)
    d = getattr(pc, "torch_dtype", None)
    return d if isinstance(d, torch.dtype) else getattr(torch, d) if isinstance(d, str) else torch.float32


@torch.no_grad()
def run_forward(model, cache, ids: List[int], start: int, context_logits: bool) -> torch.Tensor:
    """One step. ``model`` may be a list of the PP ranks' models (``cache`` then a list of their caches):
    they run in rank order, the hidden states going from rank to rank through pp_send / pp_recv, as
    TensorRT-LLM's PP executor runs one micro-batch; the last rank's logits are returned."""
    models, caches = (model, cache) if isinstance(model, list) else ([model], [cache])
    PP_CHANNEL.clear()
    for m, c in zip(models, caches):
        meta = AttentionMetadata(seq_lens=torch.tensor([len(ids)]), kv_cache_manager=c, num_cached_tokens=start,
                                 all_rank_num_tokens=[len(ids)])
        logits = m.forward(meta, input_ids=torch.tensor(ids), position_ids=torch.arange(start, start + len(ids))[None],
                           return_context_logits=context_logits)
    assert not PP_CHANNEL, f"{len(PP_CHANNEL)} tensor(s) sent by the last PP rank and never received"
    return logits


def _new_caches(model):
    return [new_cache(m) for m in model] if isinstance(model, list) else new_cache(model)


@torch.no_grad()
def generate(model, prompt: List[int], max_new_tokens: int) -> List[int]:
    cache = _new_caches(model)
    logits = run_forward(model, cache, prompt, 0, False)
    out, pos = [], len(prompt)
    for _ in range(max_new_tokens):
        tok = int(logits[-1].argmax())
        out.append(tok)
        logits = run_forward(model, cache, [tok], pos, False)
        pos += 1
    return out


@torch.no_grad()
def prompt_logprobs(model, ids: List[int]) -> torch.Tensor:
    logits = run_forward(model, _new_caches(model), ids, 0, True)
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)
    return logp.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
