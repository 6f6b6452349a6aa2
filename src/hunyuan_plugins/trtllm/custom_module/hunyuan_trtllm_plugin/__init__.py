"""Target of ``trtllm-serve --custom_module_dirs <this directory>``: registers the Hunyuan model classes.

TensorRT-LLM imports this directory as a top-level package; it only imports ``hunyuan_plugins.trtllm``
(which must be installed in the same environment) and fails loudly if registration fails.
"""

from hunyuan_plugins.trtllm import register

REGISTERED = register()
