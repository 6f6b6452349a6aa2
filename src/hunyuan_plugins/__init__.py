"""hunyuan-plugins: Tencent Hunyuan models (A13B, Large, dense) for vLLM, SGLang and TensorRT-LLM.

Importing this package imports no engine and no triton. Engine adapters live in
``hunyuan_plugins.vllm``, ``hunyuan_plugins.sglang`` and ``hunyuan_plugins.trtllm``.
"""

from hunyuan_plugins.config import (
    ARCH_DENSE,
    ARCH_LARGE,
    ARCH_MOE,
    ARCHITECTURES,
    HunyuanConfig,
    HunyuanConfigError,
)

__version__ = "0.1.0"

__all__ = ["ARCH_DENSE", "ARCH_LARGE", "ARCH_MOE", "ARCHITECTURES", "HunyuanConfig", "HunyuanConfigError",
           "__version__"]
