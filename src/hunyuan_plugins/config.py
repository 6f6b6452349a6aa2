"""HunyuanConfig: one normalised, validated view of any Hunyuan config.json.

Two dialects exist in the wild (docs/architecture.md, "Config dialects"):

* Tencent's (``model_type: "hunyuan"``): ``attention_head_dim``, per-layer lists (or ints) for
  ``moe_topk``, ``moe_intermediate_size`` and ``num_shared_expert``, ``use_mixed_mlp_moe``,
  ``moe_layer_num_skipped``, ``use_cla``/``cla_share_factor``, ``rope_scaling`` with ``alpha``.
* transformers-native (``hunyuan_v1_moe`` / ``hunyuan_v1_dense``): ``head_dim``, ``rope_parameters``
  (or ``rope_scaling``), experts and shared MLP both sized ``intermediate_size``, no CLA.

Everything downstream (core, adapters, builder) reads only :class:`HunyuanConfig`. A bad config
raises :class:`HunyuanConfigError` naming the offending field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

ARCH_MOE = "HunYuanMoEV1ForCausalLM"      # Hunyuan-A13B
ARCH_LARGE = "HunYuanForCausalLM"         # Hunyuan-Large (CLA, top-1)
ARCH_DENSE = "HunYuanDenseV1ForCausalLM"  # dense 0.5B..7B
ARCHITECTURES = (ARCH_MOE, ARCH_LARGE, ARCH_DENSE)

#: The context each published model was trained to, where known: config.json understates it (A13B
#: says max_position_embeddings 32768). Keyed by (architecture, hidden_size, num_hidden_layers,
#: num_experts), so a tiny or unknown model is "not known". Dense models: not listed (unverified).
TRAINED_CONTEXT = {
    (ARCH_MOE, 4096, 32, 64): (262144, "Hunyuan-A13B"),
    (ARCH_LARGE, 6400, 64, 16): (262144, "Hunyuan-Large (Instruct: 131072)"),
}
MODEL_TYPES = ("hunyuan", "hunyuan_v1_moe", "hunyuan_v1_dense")


class HunyuanConfigError(ValueError):
    """A config.json that cannot describe a Hunyuan model; ``field`` names the culprit."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config field `{field}`: {message}")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What one decoder layer holds."""

    moe: bool               # routed experts (+ shared expert) rather than one dense MLP
    top_k: int              # experts per token (0 for dense layers)
    expert_size: int        # intermediate size of each routed expert (0 for dense layers)
    shared_size: int        # intermediate size of the shared expert, or of the dense MLP
    kv_source: int          # layer whose K/V this layer attends to (itself unless a CLA cross layer)

    @property
    def renormalize(self) -> bool:
        """softmax -> top-k -> renormalise when k > 1; top-1 keeps the raw probability."""
        return self.top_k > 1


@dataclasses.dataclass(frozen=True)
class HunyuanConfig:
    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int                 # 0 for dense models
    layers: tuple[LayerSpec, ...]
    rms_norm_eps: float
    rope_theta: float
    rope_alpha: float                # 1.0 = plain RoPE; the base is theta * alpha ** (d / (d - 2))
    max_position_embeddings: int
    use_qk_norm: bool
    use_cla: bool
    cla_share_factor: int
    tie_word_embeddings: bool
    hidden_act: str
    router_dtype: str                # "float32" (Tencent and transformers run the gate in fp32)
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    torch_dtype: str
    quantization_config: dict | None
    raw: dict = dataclasses.field(repr=False, compare=False, default_factory=dict)

    # ---- derived views -------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return any(layer.moe for layer in self.layers)

    @property
    def rope_base(self) -> float:
        d = self.head_dim
        return self.rope_theta * self.rope_alpha ** (d / (d - 2))

    @property
    def positions_unbounded(self) -> bool:
        """Alpha RoPE (alpha > 1) has a static base: every position is computed exactly, so
        ``max_position_embeddings`` is no ceiling for the served context."""
        return self.rope_alpha > 1.0

    @property
    def trained_context(self) -> tuple[int, str] | None:
        """(tokens, model name) the published model was trained to (:data:`TRAINED_CONTEXT`), or None."""
        return TRAINED_CONTEXT.get((self.architecture, self.hidden_size, self.num_layers, self.num_experts))

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def owns_kv(self, layer: int) -> bool:
        """False for CLA cross layers: they have no k_proj/v_proj and reuse another layer's K/V."""
        return self.layers[layer].kv_source == layer

    @property
    def num_kv_layers(self) -> int:
        """Number of distinct KV cache entries the model needs (half the layers with CLA)."""
        return sum(self.owns_kv(i) for i in range(self.num_layers))

    def kv_slot(self, layer: int) -> int:
        """The KV-cache entry `layer` reads (0..num_kv_layers-1): both layers of a CLA pair share one."""
        return sum(self.owns_kv(i) for i in range(self.layers[layer].kv_source))

    def heads_per_rank(self, tp: int) -> tuple[int, int]:
        """(query heads, KV heads) on each of `tp` tensor-parallel ranks; KV heads are replicated
        when tp exceeds them. Raises a ValueError naming the field that does not divide."""
        if self.num_heads % tp:
            raise ValueError(f"num_attention_heads={self.num_heads} is not divisible by tensor parallel size {tp}")
        if self.num_kv_heads % tp and tp % self.num_kv_heads:
            raise ValueError(f"num_key_value_heads={self.num_kv_heads} and tensor parallel size {tp} do not divide")
        return self.num_heads // tp, max(1, self.num_kv_heads // tp)

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> HunyuanConfig:
        file = os.path.join(path, "config.json") if os.path.isdir(path) else str(path)
        if not os.path.exists(file):
            raise FileNotFoundError(f"no config.json at {file}")
        with open(file) as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> HunyuanConfig:
        return _parse(dict(raw))

    def to_dict(self) -> dict:
        return dict(self.raw)


# ---- parsing ---------------------------------------------------------------------------------
_MISSING = object()


def _get(raw: dict, field: str, kind: type | tuple, default: Any = _MISSING) -> Any:
    value = raw.get(field, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise HunyuanConfigError(field, "is required but missing")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if bool not in kinds and isinstance(value, bool):
        raise HunyuanConfigError(field, f"expected {_kind_name(kinds)}, got {value!r}")
    if float in kinds and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kinds):
        raise HunyuanConfigError(field, f"expected {_kind_name(kinds)}, got {type(value).__name__} {value!r}")
    return value


def _kind_name(kinds: tuple) -> str:
    return " or ".join(k.__name__ for k in kinds)


def _positive(raw: dict, field: str, default: Any = _MISSING) -> int:
    value = _get(raw, field, int, default)
    if value <= 0:
        raise HunyuanConfigError(field, f"must be a positive integer, got {value}")
    return value


def _per_layer(raw: dict, field: str, n_layers: int, default: Any = _MISSING) -> list[int]:
    """An int applying to every layer, or a list with exactly one int per layer."""
    value = _get(raw, field, (int, list), default)
    if isinstance(value, int):
        return [value] * n_layers
    if len(value) != n_layers:
        raise HunyuanConfigError(
            field, f"list has {len(value)} entries but num_hidden_layers is {n_layers}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int):
            raise HunyuanConfigError(f"{field}[{i}]", f"expected int, got {v!r}")
    return list(value)


def _rope(raw: dict) -> tuple[float, float]:
    """(theta, alpha). Hunyuan's 'dynamic' + alpha is a *static* NTK base, valid at any length."""
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    field = "rope_parameters" if raw.get("rope_parameters") else "rope_scaling"
    if not isinstance(rope, dict):
        raise HunyuanConfigError(field, f"expected a dict, got {rope!r}")
    theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 0:
        raise HunyuanConfigError("rope_theta", f"expected a positive number, got {theta!r}")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "default" and "alpha" not in rope:
        return float(theta), 1.0
    if rope_type != "dynamic":
        raise HunyuanConfigError(
            f"{field}.type", f"unknown rope type {rope_type!r}; Hunyuan uses 'dynamic' with 'alpha' (or none)")
    alpha = rope.get("alpha")
    if alpha is None:
        raise HunyuanConfigError(
            f"{field}.alpha", "dynamic RoPE without 'alpha' (factor-based dynamic NTK) is not a Hunyuan rope")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 1.0:
        raise HunyuanConfigError(f"{field}.alpha", f"expected a number >= 1, got {alpha!r}")
    return float(theta), float(alpha)


def _architecture(raw: dict) -> str:
    archs = raw.get("architectures")
    model_type = raw.get("model_type")
    if model_type not in MODEL_TYPES:
        raise HunyuanConfigError("model_type", f"expected one of {MODEL_TYPES}, got {model_type!r}")
    if archs is None:
        # transformers-native configs saved without architectures: infer from the model type.
        if model_type == "hunyuan_v1_dense":
            return ARCH_DENSE
        return ARCH_LARGE if raw.get("use_cla") else ARCH_MOE
    if not isinstance(archs, list) or len(archs) != 1 or archs[0] not in ARCHITECTURES:
        raise HunyuanConfigError("architectures", f"expected one of {list(ARCHITECTURES)}, got {archs!r}")
    arch = archs[0]
    if model_type == "hunyuan_v1_dense" and arch != ARCH_DENSE:
        raise HunyuanConfigError("architectures", f"{arch} contradicts model_type {model_type!r}")
    if model_type == "hunyuan_v1_moe" and arch == ARCH_DENSE:
        raise HunyuanConfigError("architectures", f"{arch} contradicts model_type {model_type!r}")
    return arch


def _check_native_moe(raw: dict, model_type: str, n_layers: int, intermediate: int) -> None:
    """Tencent MoE fields in a transformers-native config must agree with what transformers does
    (it ignores them): otherwise the same file means two different models. Hub copies of A13B
    carry both, consistently (moe_intermediate_size 3072 == intermediate_size)."""
    fixed = {"moe_intermediate_size": intermediate, "num_shared_expert": 1, "moe_layer_num_skipped": 0,
             "use_mixed_mlp_moe": True}
    for field, want in fixed.items():
        if raw.get(field) is None:
            continue
        values = raw[field] if isinstance(raw[field], list) else [raw[field]] * n_layers
        if any(v != want for v in values):
            raise HunyuanConfigError(
                field, f"is {raw[field]!r}, but model_type {model_type!r} (transformers) ignores it and uses "
                f"{want!r}; set model_type 'hunyuan' for Tencent's per-layer MoE fields")


def _parse(raw: dict) -> HunyuanConfig:
    arch = _architecture(raw)
    model_type = raw["model_type"]
    native = model_type != "hunyuan"
    hidden = _positive(raw, "hidden_size")
    n_layers = _positive(raw, "num_hidden_layers")
    n_heads = _positive(raw, "num_attention_heads")
    n_kv = _positive(raw, "num_key_value_heads", n_heads)
    if n_heads % n_kv:
        raise HunyuanConfigError(
            "num_key_value_heads", f"{n_kv} does not divide num_attention_heads {n_heads}")
    head_field = "head_dim" if "head_dim" in raw else "attention_head_dim"
    if hidden % n_heads and raw.get(head_field) is None:
        raise HunyuanConfigError(head_field, f"missing and hidden_size {hidden} is not divisible by {n_heads} heads")
    head_dim = _positive(raw, head_field, hidden // n_heads)
    if head_dim % 2:
        raise HunyuanConfigError(head_field, f"must be even for RoPE, got {head_dim}")
    intermediate = _positive(raw, "intermediate_size")
    theta, alpha = _rope(raw)

    use_cla = bool(_get(raw, "use_cla", bool, False))
    share = _positive(raw, "cla_share_factor", 2) if use_cla else 1
    if use_cla and native:
        raise HunyuanConfigError("use_cla", f"model_type {model_type!r} cannot express CLA; use model_type 'hunyuan'")
    if use_cla and n_layers % share:
        raise HunyuanConfigError(
            "cla_share_factor", f"{share} does not divide num_hidden_layers {n_layers}")
    if arch == ARCH_LARGE and not use_cla:
        # Hunyuan-Large is defined by CLA; a Large checkpoint without it is a config we cannot trust.
        raise HunyuanConfigError("use_cla", f"{ARCH_LARGE} requires use_cla: true")

    # MoE layout ---------------------------------------------------------------------------
    num_experts = 0
    if arch == ARCH_DENSE:
        for field in ("num_experts",):
            if _get(raw, field, int, 1) > 1:
                raise HunyuanConfigError(field, f"{ARCH_DENSE} is dense but {field}={raw[field]}")
        layers = [LayerSpec(False, 0, 0, intermediate, i) for i in range(n_layers)]
    else:
        num_experts = _positive(raw, "num_experts")
        top_k = _per_layer(raw, "moe_topk", n_layers)
        if native:  # transformers-native: experts and shared MLP are both intermediate_size
            expert_size = [intermediate] * n_layers
            n_shared = [1] * n_layers
            skipped = 0
            _check_native_moe(raw, model_type, n_layers, intermediate)
        else:
            expert_size = _per_layer(raw, "moe_intermediate_size", n_layers, intermediate)
            n_shared = _per_layer(raw, "num_shared_expert", n_layers, 1)
            if not _get(raw, "use_mixed_mlp_moe", bool, True):
                n_shared = [0] * n_layers
            skipped = _get(raw, "moe_layer_num_skipped", int, 0)
            if not 0 <= skipped <= n_layers:
                raise HunyuanConfigError("moe_layer_num_skipped", f"must be in [0, {n_layers}], got {skipped}")
        layers = []
        for i in range(n_layers):
            if i < skipped:  # the first moe_layer_num_skipped layers are dense MLPs
                layers.append(LayerSpec(False, 0, 0, intermediate, i))
                continue
            if not 1 <= top_k[i] <= num_experts:
                raise HunyuanConfigError(f"moe_topk[{i}]", f"must be in [1, num_experts={num_experts}], got {top_k[i]}")
            if expert_size[i] <= 0:
                raise HunyuanConfigError(f"moe_intermediate_size[{i}]", f"must be positive, got {expert_size[i]}")
            if n_shared[i] < 0:
                raise HunyuanConfigError(f"num_shared_expert[{i}]", f"must be >= 0, got {n_shared[i]}")
            layers.append(LayerSpec(True, top_k[i], expert_size[i], intermediate * n_shared[i], i))
    if use_cla:
        layers = [dataclasses.replace(s, kv_source=i - i % share) for i, s in enumerate(layers)]

    vocab = _positive(raw, "vocab_size")
    for field in ("use_mla",):
        if raw.get(field):
            raise HunyuanConfigError(field, "MLA attention is not part of any released Hunyuan model")
    act = _get(raw, "hidden_act", str, "silu")
    if act != "silu":
        raise HunyuanConfigError("hidden_act", f"only 'silu' (SwiGLU) is supported, got {act!r}")
    for field in ("attention_bias", "mlp_bias"):
        if _get(raw, field, bool, False):
            raise HunyuanConfigError(field, "biases are not used by any released Hunyuan model and are not supported")
    norm = raw.get("norm_type", "rms")
    if norm not in ("rms", "hf_rms"):
        raise HunyuanConfigError("norm_type", f"only RMSNorm is supported, got {norm!r}")
    eos = raw.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    quant = raw.get("quantization_config")
    if quant is not None and not isinstance(quant, dict):
        raise HunyuanConfigError("quantization_config", f"expected a dict, got {quant!r}")
    return HunyuanConfig(
        architecture=arch,
        model_type=model_type,
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=n_layers,
        num_heads=n_heads,
        num_kv_heads=n_kv,
        head_dim=head_dim,
        num_experts=num_experts,
        layers=tuple(layers),
        rms_norm_eps=_get(raw, "rms_norm_eps", float, 1e-5),
        rope_theta=theta,
        rope_alpha=alpha,
        max_position_embeddings=_positive(raw, "max_position_embeddings", 32768),
        use_qk_norm=bool(_get(raw, "use_qk_norm", bool, True)),
        use_cla=use_cla,
        cla_share_factor=share,
        tie_word_embeddings=bool(_get(raw, "tie_word_embeddings", bool, True)),
        hidden_act=act,
        router_dtype="float32",
        bos_token_id=raw.get("bos_token_id"),
        eos_token_ids=eos_ids,
        pad_token_id=raw.get("pad_token_id"),
        torch_dtype=str(raw.get("torch_dtype") or raw.get("dtype") or "bfloat16"),
        quantization_config=quant,
        raw=raw,
    )


def alpha_rope_config(raw: dict) -> HunyuanConfig | None:
    """The parsed config when ``raw`` (an engine's view of config.json) is a valid Hunyuan config of
    one of our architectures whose positions are unbounded (alpha RoPE), else None. What engine
    adapters ask before serving a context past ``max_position_embeddings``; an invalid config is
    left to the engine's own rules here (the model class names its bad field at start-up)."""
    archs = raw.get("architectures") or []
    if not archs or archs[0] not in ARCHITECTURES:
        return None
    try:
        cfg = HunyuanConfig.from_dict({**raw, "quantization_config": None})
    except (HunyuanConfigError, TypeError, ValueError):
        return None
    return cfg if cfg.positions_unbounded else None
