"""vLLM plugin: our Hunyuan model classes and parsers, registered through ``vllm.general_plugins``.

``register()`` runs in every vLLM process (API server, engine core, workers) and must stay
cheap and idempotent: it only records lazy ``"module:Class"`` strings; vLLM imports our model
module in the worker that builds the model.
"""

from __future__ import annotations

from hunyuan_plugins.config import ARCHITECTURES

_registered = False


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
    _registered = True
    init_logger("vllm.hunyuan_plugins").info(
        "hunyuan_plugins: %s served by hunyuan_plugins.vllm.model; parsers: reasoning %r, tool calls %r",
        ", ".join(ARCHITECTURES), parsers.REASONING_PARSER, parsers.TOOL_PARSER)
