"""vLLM plugin: our Hunyuan model classes and parsers, registered through ``vllm.general_plugins``.

``register()`` runs in every vLLM process (API server, engine core, workers) and must stay
cheap and idempotent: it records lazy ``"module:Class"`` strings (vLLM imports our model module in
the worker that builds the model) and registers our quantization backend ``hunyuan``
(``quant_methods``) with vLLM's ``register_quantization_config``, which must happen before vLLM
verifies a model config's quantization (plugins load first in every process).
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
    from hunyuan_plugins.vllm import quant_methods  # noqa: F401  (registers "hunyuan" on import, once)

    _registered = True
    init_logger("vllm.hunyuan_plugins").info(
        "hunyuan_plugins: %s served by hunyuan_plugins.vllm.model; quantization backend %r (Tencent FP8 "
        "static, GPTQ-Int4); parsers: reasoning %r, tool calls %r",
        ", ".join(ARCHITECTURES), quant_methods.NAME, parsers.REASONING_PARSER, parsers.TOOL_PARSER)
