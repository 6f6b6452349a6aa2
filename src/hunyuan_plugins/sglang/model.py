"""Hunyuan A13B, Large (CLA) and dense on SGLang 0.5.23's own layers.

Built from :class:`hunyuan_plugins.config.HunyuanConfig` (per-layer top-k / expert sizes / shared
experts, CLA pairs), weights through the core's canonical names (``core/checkpoint.py``). What is
specific to SGLang lives here: its parallel linears, ``RadixAttention`` and its paged KV pool,
``FusedMoE`` + ``TopK`` (tensor and expert parallel as SGLang shards them), the logits processor.

Differences from SGLang's built-in ``models/hunyuan.py`` (which crashes on the first prefill):
* q/k reach ``RadixAttention`` as ``(tokens, heads * head_dim)`` after QK-norm (the built-in hands
  over ``(tokens * heads, head_dim)``, which 0.5.23's padded-row logic cuts to ``tokens`` rows);
* RoPE uses the alpha-NTK base ``theta * alpha ** (d / (d - 2))`` directly (valid at any length),
  its table sized to the served context (``--context-length`` may exceed ``max_position_embeddings``);
* fp32 router; per-layer lists from the config; ``prefix`` passed to every layer;
* CLA that runs and shares memory: a CLA pair has ONE KV-cache slot. ``RadixAttention.layer_id``
  is the pair's slot, the owner layer writes, the cross layer attends with
  ``save_kv_cache=False``, and the model exposes ``start_layer=0, end_layer=num_kv_layers`` —
  what SGLang's ``resolve_layer_indices`` reads to size the pool — so the pool holds half the
  layers. Exact (docs/architecture.md, "CLA"): both layers of a pair cache the weight-free
  normalised key ``k / rms(k)`` and fold their own ``key_layernorm`` weight into the query
  (``core.model.fold_key_norm``).

Quantized checkpoints (Tencent FP8 static per-tensor W8A8, GPTQ-Int4 W4A16) load QUANTIZED through
SGLang's quantized layers and weight loaders, in any dtype (fp32 too) and on any platform: the
plugin hands SGLang our quant configs (``quant_methods.py``), which compute each layer kind with
SGLang's kernel where it has one for the format on this platform, else with ``torch.ops.hunyuan``.
The routed experts of every Hunyuan MoE (unquantized too) follow ``HUNYUAN_MOE_BACKEND``; ours are
routed by ``hunyuan::moe_route``. The constructor logs which kernel runs each layer kind.
``hunyuan_plugins.quant.plan`` decides once per build; the old load-time dequantisation
(``hunyuan_plugins.quant.stream``) runs only when the config was hidden from SGLang
(``--json-model-override-args '{"quantization_config": null}'``) or ``HUNYUAN_SGLANG_DEQUANTIZE=1``.

EAGLE-3 (``--speculative-algorithm EAGLE3``): the classes are SGLang EAGLE-3 targets
(``set_eagle3_layers_to_capture``, ``capture_aux_hidden_states``, aux hidden states = the residual
stream entering the chosen layers, handed to ``LogitsProcessor``; ``get_embed_and_head``). Which layers:
:func:`eagle3_capture_layers` (SGLang's shifted ids, else the draft's top-level key as vLLM reads it,
else (2, L//2, L-3)). ``Eagle3LlamaForCausalLM`` (AngelSlim's draft name) is registered as SGLang's
``LlamaForCausalLMEagle3``. docs/sglang.md, "EAGLE-3 speculative decoding".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from sglang.srt.distributed import tensor_model_parallel_all_reduce
from sglang.srt.layers.activation import SiluAndMul
from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.layers.linear import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
)
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.moe.fused_moe_triton import FusedMoE
from sglang.srt.layers.moe.topk import StandardTopKOutput, TopK
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.layers.rotary_embedding import get_rope
from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_loader.weight_utils import default_weight_loader
from sglang.srt.runtime_context import get_parallel
from sglang.srt.utils import is_cpu
from torch import nn

from hunyuan_plugins import ops, quant
from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.checkpoint import fused_target, validated_weights
from hunyuan_plugins.core.eagle3 import check_aux_layers, default_aux_layers, draft_aux_layers
from hunyuan_plugins.core.model import fold_key_norm
from hunyuan_plugins.sglang import quant_methods

logger = logging.getLogger("sglang.hunyuan_plugins")


def _model_path(config) -> str:
    return getattr(config, "_name_or_path", "") or ""


def hunyuan_config(config) -> HunyuanConfig:
    """The normalised config of the served model; quantization read from the files if SGLang's
    view has none (e.g. hidden with ``--json-model-override-args '{"quantization_config": null}'``)."""
    raw = config.to_dict()
    qc = raw.get("quantization_config") or quant.checkpoint_quantization(_model_path(config))
    raw.pop("original_moe_intermediate_size", None)
    return HunyuanConfig.from_dict({**raw, "quantization_config": qc})


def moe_method(quant_config, prefix: str):
    """(the method FusedMoE gets, or None = SGLang's choice; KernelChoice) for one MoE layer."""
    if isinstance(quant_config, quant_methods.HUNYUAN_CONFIGS):
        return quant_config.moe_method(prefix)
    if quant_config is None:
        return quant_methods.unquantized_moe_method(torch.get_default_dtype())
    # SGLang's own config (the plugin's hook did not run): SGLang decides, and the log says so
    return None, quant_methods.KernelChoice(False, f"SGLang {quant_config.get_name()}", "SGLang's quant config")


class HunyuanMLP(nn.Module):
    """SwiGLU MLP: dense layers, dense models and the MoE shared expert."""

    def __init__(self, hidden: int, inter: int, quant_config, prefix: str, reduce_results: bool = True):
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(hidden, [inter] * 2, bias=False, quant_config=quant_config,
                                                       prefix=f"{prefix}.gate_up_proj")
        self.down_proj = RowParallelLinear(inter, hidden, bias=False, quant_config=quant_config,
                                           reduce_results=reduce_results, prefix=f"{prefix}.down_proj")
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, _ = self.gate_up_proj(x)
        x, _ = self.down_proj(self.act_fn(gate_up))
        return x


class HunyuanAttention(nn.Module):
    def __init__(self, cfg: HunyuanConfig, layer: int, max_position: int, quant_config, prefix: str):
        super().__init__()
        tp = get_parallel().tp_size
        self.cfg, self.layer = cfg, layer
        self.num_heads, self.num_kv_heads = cfg.heads_per_rank(tp)
        self.head_dim = cfg.head_dim
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.owns_kv = cfg.owns_kv(layer)
        self.fold_key_norm = cfg.use_cla and cfg.use_qk_norm  # the exact KV-sharing trick
        if self.owns_kv:
            self.qkv_proj = QKVParallelLinear(cfg.hidden_size, self.head_dim, cfg.num_heads, cfg.num_kv_heads,
                                              bias=False, quant_config=quant_config, prefix=f"{prefix}.qkv_proj")
        else:  # CLA cross layer: a query projection only
            self.q_proj = ColumnParallelLinear(cfg.hidden_size, cfg.q_size, bias=False, quant_config=quant_config,
                                               prefix=f"{prefix}.q_proj")
        self.o_proj = RowParallelLinear(cfg.q_size, cfg.hidden_size, bias=False, quant_config=quant_config,
                                        prefix=f"{prefix}.o_proj")
        # static alpha-NTK base (what Tencent's and transformers' code compute), no scaling class
        self.rotary_emb = get_rope(self.head_dim, rotary_dim=self.head_dim, max_position=max_position,
                                   base=cfg.rope_base, rope_scaling=None, is_neox_style=True)
        if cfg.use_qk_norm:
            self.query_layernorm = RMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
            self.key_layernorm = RMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
        # layer_id = the KV-cache slot: both layers of a CLA pair address the same buffer
        self.attn = RadixAttention(self.num_heads, self.head_dim, self.head_dim ** -0.5,
                                   num_kv_heads=self.num_kv_heads, layer_id=cfg.kv_slot(layer),
                                   quant_config=quant_config, prefix=f"{prefix}.attn")

    def _norm(self, norm: RMSNorm, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        return norm(x.reshape(-1, self.head_dim).contiguous()).view(t, -1)

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor, forward_batch: ForwardBatch,
                shared_kv: tuple[torch.Tensor, torch.Tensor] | None):
        if self.owns_kv:
            qkv, _ = self.qkv_proj(hidden)
            q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
            q, k = self.rotary_emb(positions, q, k)
        else:
            if shared_kv is None:
                raise RuntimeError(f"CLA layer {self.layer} ran without its partner layer's K/V")
            q, _ = self.q_proj(hidden)
            k, v = shared_kv
            q, _ = self.rotary_emb(positions, q, torch.zeros_like(k))
        if self.cfg.use_qk_norm:
            q = self._norm(self.query_layernorm, q)
            if self.fold_key_norm:  # this layer's key norm folded into its query; weight-free k cached
                q, k = fold_key_norm(q, k, self.key_layernorm.weight, self.cfg.rms_norm_eps, self.head_dim,
                                     own_k=self.owns_kv)
            else:
                k = self._norm(self.key_layernorm, k)
        # (tokens, heads * head_dim): the layout RadixAttention's padded-row logic expects
        out = self.attn(q.contiguous(), k.contiguous(), v.contiguous(), forward_batch,
                        save_kv_cache=self.owns_kv)
        out, _ = self.o_proj(out)
        return out, (k, v)


class HunyuanMoE(nn.Module):
    def __init__(self, cfg: HunyuanConfig, layer: int, quant_config, prefix: str):
        super().__init__()
        spec = cfg.layers[layer]
        self.tp_size = get_parallel().tp_size
        if self.tp_size > cfg.num_experts:
            raise ValueError(f"tensor parallel size {self.tp_size} is greater than num_experts={cfg.num_experts}")
        # fp32 router, as Tencent and transformers run it (never quantized)
        self.gate = ReplicatedLinear(cfg.hidden_size, cfg.num_experts, bias=False, params_dtype=torch.float32,
                                     quant_config=None, prefix=f"{prefix}.gate")
        self.top_k, self.renormalize = spec.top_k, spec.renormalize  # top-1 (Large) keeps the raw probability
        self.topk = TopK(top_k=spec.top_k, layer_id=layer, renormalize=spec.renormalize)
        # HUNYUAN_MOE_BACKEND: SGLang's expert method or ours (then routed by hunyuan::moe_route)
        method, self.moe_kernel = moe_method(quant_config, f"{prefix}.experts")
        self.experts = FusedMoE(num_experts=cfg.num_experts, hidden_size=cfg.hidden_size,
                                intermediate_size=spec.expert_size, layer_id=layer, top_k=spec.top_k,
                                reduce_results=False, quant_config=quant_config, prefix=f"{prefix}.experts",
                                quant_method=method)
        if not self.moe_kernel.ours:
            self.topk.bind_runner_backend(self.experts.runner_backend)
        self.shared_mlp = (HunyuanMLP(cfg.hidden_size, spec.shared_size, quant_config, f"{prefix}.shared_mlp",
                                      reduce_results=False) if spec.shared_size else None)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        hidden = hidden.view(-1, shape[-1])
        shared = self.shared_mlp(hidden) if self.shared_mlp is not None else None
        router_logits, _ = self.gate(hidden.float())
        if self.moe_kernel.ours:
            weights, ids = ops.moe_route(router_logits, self.top_k, self.renormalize)
            topk_output = StandardTopKOutput(weights, ids, router_logits)
        else:
            topk_output = self.topk(hidden, router_logits)
        out = self.experts(hidden, topk_output)
        if shared is not None:
            out = out + shared
        if self.tp_size > 1:
            out = tensor_model_parallel_all_reduce(out)
        return out.view(shape)


class HunyuanDecoderLayer(nn.Module):
    def __init__(self, cfg: HunyuanConfig, layer: int, max_position: int, quant_config, prefix: str):
        super().__init__()
        spec = cfg.layers[layer]
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = HunyuanAttention(cfg, layer, max_position, quant_config, f"{prefix}.self_attn")
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        if spec.moe:
            self.mlp = HunyuanMoE(cfg, layer, quant_config, f"{prefix}.mlp")
        else:
            self.mlp = HunyuanMLP(cfg.hidden_size, spec.shared_size, quant_config, f"{prefix}.mlp")

    def forward(self, positions, hidden, forward_batch, residual, shared_kv):
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden, kv = self.self_attn(positions, hidden, forward_batch, shared_kv)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual, kv


def rope_positions(cfg: HunyuanConfig, config) -> int:
    """Positions the RoPE cos/sin table must cover: the served context (SGLang copies it to
    ``config.context_len``; past ``max_position_embeddings`` for Hunyuan's alpha RoPE, see the
    plugin's context-length hook) or ``max_position_embeddings``, whichever is larger."""
    return max(cfg.max_position_embeddings, int(getattr(config, "context_len", 0) or 0))


class HunyuanModel(nn.Module):
    def __init__(self, cfg: HunyuanConfig, quant_config, prefix: str = "model", max_position: int | None = None):
        super().__init__()
        self.cfg = cfg
        max_position = max_position or cfg.max_position_embeddings
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, prefix=f"{prefix}.embed_tokens")
        self.layers = nn.ModuleList(
            HunyuanDecoderLayer(cfg, i, max_position, quant_config, f"{prefix}.layers.{i}")
            for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        #: EAGLE-3: indices i of the residual stream to return with the hidden states, i = the input of
        #: layer i (0 the embeddings, num_layers the last layer's output before the final norm)
        self.layers_to_capture: tuple[int, ...] = ()

    def forward(self, input_ids, positions, forward_batch, input_embeds=None):
        hidden = input_embeds if input_embeds is not None else self.embed_tokens(input_ids)
        residual, shared_kv = None, None
        aux: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            if i in self.layers_to_capture:  # the residual stream entering layer i (a new tensor)
                aux.append(hidden.clone() if residual is None else hidden + residual)
            hidden, residual, shared_kv = layer(positions, hidden, forward_batch, residual, shared_kv)
        if len(self.layers) in self.layers_to_capture:
            aux.append(hidden + residual)
        hidden, _ = self.norm(hidden, residual)
        return (hidden, aux) if self.layers_to_capture else hidden


class HunyuanForCausalLMBase(nn.Module):
    hunyuan_plugins_model = True  # quant_methods.quant_config_hook serves our quant configs to these classes
    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}

    def __init__(self, config, quant_config=None, prefix: str = ""):
        super().__init__()
        cfg = self.cfg = hunyuan_config(config)
        arch = type(self).__name__
        if cfg.architecture != arch:
            raise ValueError(f"config.json describes {cfg.architecture} but {arch} was asked to serve it")
        self.config = config
        self.model_path = _model_path(config)
        self.quant_plan = quant.plan(cfg.quantization_config, engine="sglang", on_cpu=is_cpu(),
                                     engine_has_config=quant_config is not None)  # decided once per build
        layer_quant = None if self.quant_plan.dequantize else quant_config
        self.rope_positions = rope_positions(cfg, config)
        self.model = HunyuanModel(cfg, layer_quant, prefix=f"{prefix}.model" if prefix else "model",
                                  max_position=self.rope_positions)
        # lm_head stays unquantized (it is on every Hunyuan quantization ignore-list)
        self.lm_head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size, quant_config=None,
                                      prefix=f"{prefix}.lm_head" if prefix else "lm_head")
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.logits_processor = LogitsProcessor(config)
        # SGLang sizes the KV pool from [start_layer, end_layer) of the model: one slot per KV owner
        # (half the layers with CLA); RadixAttention.layer_id of every layer is its pair's slot.
        self.start_layer, self.end_layer = 0, cfg.num_kv_layers
        self._kv_logged = False
        self.capture_aux_hidden_states = False  # EAGLE-3 (set_eagle3_layers_to_capture); SGLang reads it
        logger.info("hunyuan_plugins: %s served by %s.%s (%d layers, %d KV-cache layers%s, %s)", arch,
                    type(self).__module__, arch, cfg.num_layers, cfg.num_kv_layers,
                    ", CLA" if cfg.use_cla else "", self.quant_plan.describe(self._kernels(layer_quant)))
        logger.info("hunyuan_plugins: RoPE table covers %d positions (served context %s, max_position_embeddings %d, "
                    "base %.6g)", self.rope_positions, getattr(config, "context_len", None),
                    cfg.max_position_embeddings, cfg.rope_base)

    def _kernels(self, layer_quant) -> str:
        """'kernels: <layer kind> -> <kernel> (<why>); ...' for the start-up log line."""
        kinds: dict[str, quant_methods.KernelChoice] = {}
        if isinstance(layer_quant, quant_methods.HUNYUAN_CONFIGS):
            kinds[f"linear {layer_quant.moe_format}"] = layer_quant.linear_choice
        for module in self.modules():
            if isinstance(module, HunyuanMoE):
                fmt = (layer_quant.moe_format if isinstance(layer_quant, quant_methods.HUNYUAN_CONFIGS)
                       and module.moe_kernel is layer_quant.moe_choice
                       else quant_methods.dtype_format(self.model.embed_tokens.weight.dtype))
                kinds.setdefault(f"moe {fmt}", module.moe_kernel)
        parts = [choice.describe(kind) + (", routed by hunyuan::moe_route" if kind.startswith("moe")
                                           and choice.ours else "") for kind, choice in kinds.items()]
        parts.append("other linears, router, lm_head -> SGLang unquantized")
        if any(choice.ours for choice in kinds.values()):
            parts.append(f"torch.ops.hunyuan runs the {quant_methods.ops_implementation()}")
        return "kernels: " + "; ".join(parts)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    # ---- EAGLE-3 speculative decoding (AngelSlim's drafts on SGLang's LlamaForCausalLMEagle3) --------
    def get_embed_and_head(self):
        """The weights an EAGLE draft shares with the target (SGLang's EAGLE worker binds the embedding)."""
        return self.model.embed_tokens.weight, self.lm_head.weight

    def get_embed(self):
        return self.model.embed_tokens.weight

    def set_eagle3_layers_to_capture(self, layer_ids: list[int] | None = None) -> None:
        """SGLang's EAGLE-3 hook, called on the target by its model runner (before any forward) with the
        draft config's ``eagle_config.eagle_aux_hidden_state_layer_ids`` (or
        ``--return-aux-hidden-state-layer-ids``), else None; see :func:`eagle3_capture_layers`."""
        draft = _draft_config() if layer_ids is None else None
        layers, source = eagle3_capture_layers(layer_ids, draft, self.cfg.num_layers)
        self.model.layers_to_capture = layers
        self.capture_aux_hidden_states = True
        logger.info("hunyuan_plugins: EAGLE-3 auxiliary hidden states from the inputs of layers %s (%s)",
                    layers, source)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch,
                input_embeds: torch.Tensor | None = None, **kwargs):
        if not self._kv_logged:
            self._log_kv_pool(forward_batch)
        hidden = self.model(input_ids, positions, forward_batch, input_embeds)
        aux = None
        if self.model.layers_to_capture:
            hidden, aux = hidden
        return self.logits_processor(input_ids, hidden, self.lm_head, forward_batch, aux)

    def _log_kv_pool(self, forward_batch: ForwardBatch) -> None:
        self._kv_logged = True
        from sglang.srt.layers import radix_attention

        pool = getattr(radix_attention.get_attn_backend(), "token_to_kv_pool", None)
        k, v = getattr(pool, "k_buffer", None), getattr(pool, "v_buffer", None)
        if k is None or v is None:
            return
        nbytes = sum(t.numel() * t.element_size() for t in list(k) + list(v))
        logger.info("hunyuan_plugins: KV pool: %d layer buffers for %d layers, %d bytes, %d token slots",
                    len(k), self.cfg.num_layers, nbytes, k[0].shape[0])

    # ---- weights ---------------------------------------------------------------------------
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]):
        params = dict(self.named_parameters())
        expert_map = FusedMoE.make_expert_params_mapping("gate_proj", "down_proj", "up_proj",
                                                         self.cfg.num_experts) if self.cfg.is_moe else []
        loaded: set[str] = set()
        dtype = self.model.embed_tokens.weight.dtype if self.quant_plan.dequantize else None
        for name, tensor in validated_weights(weights, self.cfg, self.model_path, dequantize_to=dtype, logger=logger):
            if name == "lm_head.weight" and self.cfg.tie_word_embeddings:
                continue
            if ".mlp.experts." in name:
                for param_name, weight_name, expert_id, shard_id in expert_map:
                    if weight_name in name:
                        target = name.replace(weight_name, param_name)
                        param = self._param(params, target, name)
                        param.weight_loader(param, tensor, target, shard_id=shard_id, expert_id=expert_id)
                        loaded.add(target)
                        break
                else:
                    raise KeyError(f"checkpoint tensor '{name}' matches no expert parameter")
                continue
            fused = fused_target(name, self.cfg)
            target = fused[0] if fused else name
            param = self._param(params, target, name)
            if fused:
                param.weight_loader(param, tensor, fused[1])
            else:
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)
            loaded.add(target)
        missing = sorted(n for n in params if n not in loaded
                         and not (n == "lm_head.weight" and self.cfg.tie_word_embeddings))
        if missing:
            raise ValueError(f"hunyuan_plugins: {len(missing)} parameter(s) got no weight from the checkpoint: "
                             f"{missing[:10]}")
        return loaded

    def _param(self, params: dict, target: str, source: str):
        if target not in params:
            raise KeyError(f"checkpoint tensor '{source}' (-> '{target}') has no parameter in "
                           f"{type(self).__name__}")
        return params[target]


def eagle3_capture_layers(layer_ids, draft_config: dict | None, num_layers: int) -> tuple[tuple[int, ...], str]:
    """(inputs of which layers the target returns to an EAGLE-3 draft, where that choice came from).

    The result is always in vLLM's and EAGLE-3's own convention: ``i`` = the residual stream entering
    decoder layer ``i`` (0 the embeddings, ``num_layers`` the last layer's output before the final norm).

    * ``layer_ids`` (what SGLang passes: the draft's ``eagle_config.eagle_aux_hidden_state_layer_ids``,
      the only key SGLang 0.5.23 reads, or ``--return-aux-hidden-state-layer-ids``) follow SGLang's
      convention, that of every SGLang model (llama, qwen2, qwen3_moe, ...): id ``i`` = the OUTPUT of
      layer ``i`` = the input of layer ``i + 1``;
    * else the draft's top-level ``eagle_aux_hidden_state_layer_ids`` (AngelSlim's / vLLM's key, which
      SGLang ignores), in vLLM's convention (no shift; ``core.eagle3.draft_aux_layers``);
    * else the default (2, L//2, L-3) (SGLang's, vLLM's and EAGLE-3's), refused with an error naming
      the key for targets too shallow to have three distinct default layers.
    """
    if layer_ids is not None:
        layers = tuple(int(i) + 1 for i in layer_ids)
        source = (f"SGLang's eagle_aux_hidden_state_layer_ids={list(layer_ids)}, SGLang's convention: "
                  "output of layer i = input of layer i+1")
    elif draft_config is not None and draft_config.get("eagle_aux_hidden_state_layer_ids"):
        layers = draft_aux_layers(draft_config, num_layers)
        source = "the draft's top-level eagle_aux_hidden_state_layer_ids, vLLM's convention: input of layer i"
    else:
        try:
            layers = default_aux_layers(num_layers)
        except ValueError as e:
            if draft_config is not None:
                raise
            raise ValueError(f"{e} (without a draft: --return-aux-hidden-state-layer-ids)") from None
        source = "the default (2, L//2, L-3)"
    return tuple(sorted(check_aux_layers(layers, num_layers, f"eagle_aux_hidden_state_layer_ids ({source})"))), source


def _draft_config() -> dict | None:
    """config.json of the speculative draft SGLang serves with this target (None: no draft); a local
    directory or a hub name, read as transformers reads it."""
    from sglang.srt.runtime_context import get_spec
    from transformers import PretrainedConfig

    spec = get_spec()
    if not spec.speculative_draft_model_path:
        return None
    config, _ = PretrainedConfig.get_config_dict(spec.speculative_draft_model_path,
                                                 revision=spec.speculative_draft_model_revision)
    return config


class HunYuanMoEV1ForCausalLM(HunyuanForCausalLMBase):
    """Hunyuan-A13B (and any Hunyuan MoE without CLA)."""


class HunYuanForCausalLM(HunyuanForCausalLMBase):
    """Hunyuan-Large: MoE top-1 with cross-layer attention (one KV-cache slot per layer pair)."""


class HunYuanDenseV1ForCausalLM(HunyuanForCausalLMBase):
    """Hunyuan dense 0.5B-7B."""


EntryClass = [HunYuanMoEV1ForCausalLM, HunYuanForCausalLM, HunYuanDenseV1ForCausalLM]

try:  # never let the draft alias stand between SGLang and our Hunyuan classes
    from sglang.srt.models.llama_eagle3 import LlamaForCausalLMEagle3
except Exception as e:  # noqa: BLE001
    logger.warning("hunyuan_plugins: no Eagle3LlamaForCausalLM alias (SGLang's llama_eagle3 did not import: %s)", e)
else:
    class Eagle3LlamaForCausalLM(LlamaForCausalLMEagle3):
        """SGLang's EAGLE-3 Llama draft under the architecture name AngelSlim's training configs (and
        ``core.eagle3``) write and vLLM accepts; SGLang 0.5.23 registers the class only as
        ``LlamaForCausalLMEagle3`` and refuses ``Eagle3LlamaForCausalLM`` ("Cannot find model module")."""

    EntryClass.append(Eagle3LlamaForCausalLM)
