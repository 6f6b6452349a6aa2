"""Holds hunyuan_trtllm_plugin, the package trtllm-serve --custom_module_dirs imports."""
