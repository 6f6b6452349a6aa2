"""SGLang plugin: our Hunyuan model classes and parsers, registered through ``sglang.srt.plugins``.

SGLang 0.5.23 calls every entry point of the group ``sglang.srt.plugins`` in each of its processes
(main/launcher, scheduler, detokenizer; ``srt/plugins/__init__.py::load_plugins``), so
``pip install hunyuan-plugins`` alone is enough. :func:`register` must stay idempotent.

Models: SGLang resolves the class in the scheduler process from ``ModelRegistry``, keyed by class
name. :func:`register` prefers ``SGLANG_EXTERNAL_MODEL_PACKAGE=hunyuan_plugins.sglang.models``
(set before SGLang's registry is imported, inherited by the child processes; SGLang then merges
its built-ins *under* ours and skips importing its ~285 model modules at start). When the
registry is already imported, or that variable names another package, it assigns
``ModelRegistry.models[arch]`` directly. Either way our classes override SGLang's built-in
``HunYuanMoEV1ForCausalLM`` / ``HunYuanDenseV1ForCausalLM`` and add ``HunYuanForCausalLM``; the
choice is logged, and the model constructor logs the class that actually serves.

Import errors are loud: SGLang's loader only logs exceptions from plugins and skips modules that
fail to import. Our models package imports the model module where SGLang cannot swallow the error
(see ``models/__init__.py``); on the direct-assignment path a failure installs placeholder
classes that raise the original error when SGLang builds the model, so SGLang never falls back
to its broken built-in class silently.

Quantized checkpoints: an AROUND hook on SGLang's ``model_loader.loader._get_quantization_config``
hands OUR model classes our quant configs (``hunyuan_plugins.sglang.quant_methods``: SGLang's
``Fp8Config`` / ``GPTQConfig`` subclassed, fp32 accepted, per layer kind SGLang's kernel or
``torch.ops.hunyuan``); every other model goes through SGLang's function untouched.

Context length: an AROUND hook on SGLang's ``ModelConfig._derive_context_length`` lets a Hunyuan
config with alpha-NTK RoPE serve the ``--context-length`` the user asks for past
``max_position_embeddings`` (A13B's config says 32768, the model is trained to 256K) without
``SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN`` (see :func:`_context_length_hook`).

Also installed here: a hook for SGLang's CPU padding bug with list-valued
``moe_intermediate_size`` (see :func:`_cpu_padding_hook`), Tencent's ``model_type: "hunyuan"``
config class (no ``trust_remote_code``) and the A13B parsers (``hunyuan_plugins.sglang.parsers``).
"""

from __future__ import annotations

import logging
import os
import sys

from hunyuan_plugins.config import ARCHITECTURES

MODELS_PACKAGE = "hunyuan_plugins.sglang.models"
_ENV = "SGLANG_EXTERNAL_MODEL_PACKAGE"
_PADDING_TARGET = "sglang.srt.configs.update_config.update_intermediate_size"
logger = logging.getLogger("sglang.hunyuan_plugins")
_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    from hunyuan_plugins import hf_config

    hf_config.register()  # Tencent's model_type "hunyuan" without trust_remote_code
    how = _register_models()
    _register_padding_hook()
    _register_quant_config_hook()
    _register_context_length_hook()
    from hunyuan_plugins.sglang import parsers

    parsers.register()
    logger.info("hunyuan_plugins: %s -> %s (%s; SGLang's built-in classes overridden); parsers: "
                "--reasoning-parser %s, --tool-call-parser %s", ", ".join(ARCHITECTURES),
                "hunyuan_plugins.sglang.model", how, parsers.REASONING_PARSER, parsers.TOOL_PARSER)


def _register_models() -> str:
    current = os.environ.get(_ENV)
    if "sglang.srt.models.registry" not in sys.modules and current in (None, "", MODELS_PACKAGE):
        os.environ[_ENV] = MODELS_PACKAGE
        return f"via {_ENV}={MODELS_PACKAGE}"
    from sglang.srt.models.registry import ModelRegistry

    try:
        from hunyuan_plugins.sglang.model import EntryClass
    except Exception as e:  # loud: never a silent fall-back to SGLang's own Hunyuan classes
        logger.error("hunyuan_plugins: importing hunyuan_plugins.sglang.model FAILED (%s: %s); serving a "
                     "Hunyuan model will raise this error", type(e).__name__, e, exc_info=True)
        EntryClass = [_placeholder(arch, e) for arch in ARCHITECTURES]
    for cls in EntryClass:
        ModelRegistry.models[cls.__name__] = cls
    return "via ModelRegistry.models (registry was already imported" + (
        f", {_ENV}={current}" if current else "") + ")"


def _placeholder(arch: str, error: Exception):
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"hunyuan_plugins could not import its SGLang model classes: {error!r}") from error

    return type(arch, (), {"__init__": __init__})


def _cpu_padding_hook(original, model_config, attr_name, intermediate_padding_size):
    """SGLang 0.5.23 pads intermediate sizes on CPU (``adjust_config_with_unaligned_cpu_tp``) with
    ``value % padding``, which raises TypeError for Hunyuan's per-layer ``moe_intermediate_size``
    list. A list whose every entry is already aligned needs no padding (the usual case: TP sizes
    that divide the experts); an unaligned one cannot be padded without repacking the expert
    weights, so it is refused with a clear message instead of a TypeError."""
    cfg = getattr(model_config, "hf_config", model_config)
    value = getattr(getattr(cfg, "text_config", cfg), attr_name, None)
    if not isinstance(value, (list, tuple)):
        return original(model_config, attr_name, intermediate_padding_size)
    bad = [v for v in value if v % intermediate_padding_size]
    if bad:
        raise ValueError(f"hunyuan_plugins: per-layer {attr_name}={list(value)} has entries not divisible by "
                         f"{intermediate_padding_size} (CPU tensor-parallel padding); use a tensor parallel "
                         f"size that divides them")
    return model_config


def _register_padding_hook() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(_PADDING_TARGET, _cpu_padding_hook, HookType.AROUND)


_QUANT_CONFIG_TARGET = "sglang.srt.model_loader.loader._get_quantization_config"


def _quant_config_hook(original, *args, **kwargs):
    """SGLang refuses fp32 (and on CPU has no kernels) for Hunyuan's fp8 / gptq checkpoints; for our
    model classes build our quant configs instead (see ``quant_methods.quant_config_hook``)."""
    from hunyuan_plugins.sglang import quant_methods

    return quant_methods.quant_config_hook(original, *args, **kwargs)


def _register_quant_config_hook() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(_QUANT_CONFIG_TARGET, _quant_config_hook, HookType.AROUND)


_CONTEXT_TARGET = "sglang.srt.configs.model_config.ModelConfig._derive_context_length"

def alpha_rope_config(hf_config):
    """:func:`hunyuan_plugins.config.alpha_rope_config` of SGLang's HF config object."""
    from hunyuan_plugins.config import alpha_rope_config as core_alpha_rope_config

    return core_alpha_rope_config(hf_config.to_dict())


def _context_length_hook(original, model_config, context_length, *args, **kwargs):
    """SGLang 0.5.23 refuses a ``context_length`` above the config's ``max_position_embeddings``
    unless ``SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1`` (``ModelConfig._derive_context_length``).
    Hunyuan's alpha-NTK RoPE has a static base (``HunyuanConfig.rope_base``), so positions past
    ``max_position_embeddings`` are computed exactly and the model is trained well past it: for
    our architectures with alpha RoPE the requested length is served as asked. SGLang's own
    function runs first (at the config's length), then ``context_len`` -- which sizes the
    req_to_token pool, the scheduler's request limits and the tokenizer manager's check -- and
    ``hf_config.context_len`` (which sizes our RoPE table) are set to the request. Every other model,
    and a Hunyuan config without alpha RoPE, gets SGLang's function untouched (and its refusal)."""
    cfg = None if context_length is None or getattr(model_config, "is_draft_model", False) \
        else alpha_rope_config(model_config.hf_config)
    if cfg is None:
        return original(model_config, context_length, *args, **kwargs)
    from sglang.srt.utils.hf_transformers.common import get_context_length

    derived = get_context_length(model_config.hf_text_config)
    if context_length <= derived:
        return original(model_config, context_length, *args, **kwargs)
    result = original(model_config, derived, *args, **kwargs)
    model_config.context_len = context_length
    model_config.hf_config.context_len = context_length
    trained, what = cfg.trained_context or (None, None)
    note = f"published with a trained context of {trained} ({what})" if trained else "trained context not known"
    logger.info("hunyuan_plugins: %s context_length %d served past max_position_embeddings=%d (alpha-NTK RoPE, "
                "static base %.6g: exact at every position); %s", cfg.architecture, context_length,
                cfg.max_position_embeddings, cfg.rope_base, note)
    if trained and context_length > trained:
        logger.warning("hunyuan_plugins: context_length %d is longer than the %d tokens %s was trained on",
                       context_length, trained, cfg.architecture)
    return result


def _register_context_length_hook() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(_CONTEXT_TARGET, _context_length_hook, HookType.AROUND)
