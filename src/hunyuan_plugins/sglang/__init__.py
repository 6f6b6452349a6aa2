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
