"""SGLang registry module: ``EntryClass`` keys our classes by their HF architecture names."""

from hunyuan_plugins.sglang.model import EntryClass  # noqa: F401
