"""Package handed to SGLang as ``SGLANG_EXTERNAL_MODEL_PACKAGE`` by :func:`hunyuan_plugins.sglang.register`.

SGLang's registry imports this package *outside* its error handling and then each module in it
*inside* ``try/except`` (a failing module is only logged and skipped: a silent fall-back to the
broken built-in class). So the real import happens here, where an error propagates and stops
the engine loudly; ``hunyuan.py`` only re-exports ``EntryClass``.
"""

from hunyuan_plugins.sglang.model import EntryClass  # noqa: F401  (loud on any import error)
