"""TEST-ONLY stand-in for SGLang's CUDA/Intel-CPU ``sgl_kernel`` extension.

Never shipped: tests/sglang/conftest.py puts this directory on PYTHONPATH for the SGLang test
processes only. With ``SGLANG_USE_CPU_ENGINE=1`` SGLang 0.5.23 imports a handful of names from
``sgl_kernel`` at module import time (e.g. ``assign_req_to_token_pool_cpu``); on a machine without
AVX-512/AMX none of them is called (RMSNorm, RoPE, MoE and the ``torch_native`` attention backend
fall back to plain torch). Every attribute resolves to a function that raises, so a call that
does happen fails loudly instead of computing something wrong.
"""

__version__ = "0.0.0+hunyuan-plugins-test-stub"
IS_HUNYUAN_PLUGINS_TEST_STUB = True


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)

    def _missing(*args, **kwargs):
        raise NotImplementedError(
            f"sgl_kernel.{name} was called, but this is hunyuan-plugins' test-only stub of sgl_kernel "
            "(SGLang's CPU kernels are not installable here)")

    _missing.__name__ = name
    return _missing
