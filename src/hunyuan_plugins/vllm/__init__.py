"""vLLM plugin: our Hunyuan model classes and parsers, registered through ``vllm.general_plugins``.

``register()`` runs in every vLLM process (API server, engine core, workers) and must stay
cheap and idempotent: it records lazy ``"module:Class"`` strings (vLLM imports our model module in
the worker that builds the model) and registers our quantization backend ``hunyuan``
(``quant_methods``) with vLLM's ``register_quantization_config``, which must happen before vLLM
verifies a model config's quantization (plugins load first in every process).

It also registers, for Hunyuan's three ``model_type``s, a subclass of vLLM's model-architecture
config convertor (``MODEL_ARCH_CONFIG_CONVERTORS``, which vLLM reads for a config's derived maximum
length): a Hunyuan config with alpha RoPE serves whatever ``--max-model-len`` is asked for, with no
``VLLM_ALLOW_LONG_MAX_MODEL_LEN`` (see :func:`context_limits`).
"""

from __future__ import annotations

from hunyuan_plugins.config import ARCHITECTURES, HunyuanConfig
from hunyuan_plugins.config import alpha_rope_config as core_alpha_rope_config

_registered = False

MODEL_TYPES = ("hunyuan", "hunyuan_v1_moe", "hunyuan_v1_dense")
UNCAPPED = float("inf")  # model_max_length we set: no ceiling (a real config.json cannot say Infinity)


def alpha_rope_config(hf_config) -> HunyuanConfig | None:
    """:func:`hunyuan_plugins.config.alpha_rope_config` of vLLM's HF config object."""
    return core_alpha_rope_config(hf_config.to_dict())


def context_limits(hf_config) -> tuple[int, bool] | None:
    """vLLM's (default max_model_len, uncapped) for a Hunyuan config with alpha RoPE, else None.

    Hunyuan's alpha RoPE is a static NTK base (``HunyuanConfig.rope_base``): exact at every
    position, so ``max_position_embeddings`` is no ceiling. The default stays what config.json says
    (no more KV memory than before when --max-model-len is not given); any larger
    ``--max-model-len`` is served as asked. A ``model_max_length`` the publisher wrote is kept.
    """
    cfg = alpha_rope_config(hf_config)
    if cfg is None:
        return None
    own = getattr(hf_config, "model_max_length", None)
    return cfg.max_position_embeddings, own is None or own == UNCAPPED


def _convertor(base: type) -> type:
    """vLLM's convertor for a Hunyuan model_type, deriving the max length as :func:`context_limits` says."""
    from vllm.logger import init_logger

    logger = init_logger("vllm.hunyuan_plugins")

    class HunyuanArchConfigConvertor(base):
        def derive_max_model_len_and_key(self):
            limits = context_limits(self.hf_text_config)
            if limits is None:
                return super().derive_max_model_len_and_key()
            default, uncapped = limits
            if not uncapped:  # the publisher's own model_max_length: vLLM's rules as they are
                return super().derive_max_model_len_and_key()
            # vLLM's _get_and_verify_max_len allows a --max-model-len above the derived length up
            # to hf_config.model_max_length (its documented override for such models)
            self.hf_text_config.model_max_length = UNCAPPED
            cfg = alpha_rope_config(self.hf_text_config)
            trained = cfg.trained_context
            logger.info_once(
                "hunyuan_plugins: %s alpha RoPE (static base %.9g) is exact at any position: "
                "--max-model-len is not capped by max_position_embeddings=%d (the default); %s",
                cfg.architecture, cfg.rope_base, default,
                f"published trained context {trained[0]} ({trained[1]})" if trained else "trained context not known")
            return default, "max_position_embeddings"

    HunyuanArchConfigConvertor.__qualname__ = f"Hunyuan{base.__name__}"
    return HunyuanArchConfigConvertor


def register_context_convertors() -> None:
    """Idempotent: Hunyuan model_types get our convertor, on top of any vLLM already has for them."""
    from vllm.transformers_utils.model_arch_config_convertor import (
        MODEL_ARCH_CONFIG_CONVERTORS,
        ModelArchConfigConvertorBase,
    )

    for model_type in MODEL_TYPES:
        base = MODEL_ARCH_CONFIG_CONVERTORS.get(model_type, ModelArchConfigConvertorBase)
        if not getattr(base, "_hunyuan_context", False):
            cls = _convertor(base)
            cls._hunyuan_context = True
            MODEL_ARCH_CONFIG_CONVERTORS[model_type] = cls


def register() -> None:
    global _registered
    if _registered:
        return
    from vllm import ModelRegistry
    from vllm.logger import init_logger

    from hunyuan_plugins import hf_config
    from hunyuan_plugins.vllm import parsers

    hf_config.register()  # Tencent's model_type "hunyuan" without trust_remote_code
    for arch in ARCHITECTURES:
        # overrides vLLM's own mapping (Transformers backend for A13B/dense, nothing for Large)
        ModelRegistry.register_model(arch, f"hunyuan_plugins.vllm.model:{arch}")
    parsers.register()
    register_context_convertors()  # alpha RoPE: --max-model-len past max_position_embeddings
    from hunyuan_plugins.vllm import quant_methods  # noqa: F401  (registers "hunyuan" on import, once)

    _registered = True
    init_logger("vllm.hunyuan_plugins").info(
        "hunyuan_plugins: %s served by hunyuan_plugins.vllm.model; quantization backend %r (Tencent FP8 "
        "static, GPTQ-Int4); parsers: reasoning %r, tool calls %r",
        ", ".join(ARCHITECTURES), quant_methods.NAME, parsers.REASONING_PARSER, parsers.TOOL_PARSER)
