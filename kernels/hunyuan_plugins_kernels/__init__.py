"""hunyuan_plugins_kernels: Triton kernels for Hunyuan MoE layers (shipped inside hunyuan-plugins).

Public launchers (each validates, picks tiles, allocates and launches; kernels are private):

* routing:  :func:`topk_softmax`, :func:`align_block_size`, :func:`route`
* experts:  :func:`fused_experts` over :class:`ExpertWeights` built by
  :func:`prepare_dense`, :func:`prepare_fp8_per_tensor`, :func:`prepare_fp8_block`,
  :func:`int4_weights`; :func:`moe_sum` (the top-k reduction)

Importing this package imports triton; ``hunyuan_plugins.ops`` imports it lazily. The library
imports nothing of ``hunyuan_plugins`` (checkpoint formats are converted to its layouts there).
"""

from hunyuan_plugins_kernels.experts import (
    ExpertWeights,
    fused_experts,
    int4_weights,
    moe_sum,
    prepare_dense,
    prepare_fp8_block,
    prepare_fp8_per_tensor,
)
from hunyuan_plugins_kernels.routing import RoutingData, align_block_size, route, topk_softmax

__all__ = [
    "ExpertWeights", "RoutingData", "align_block_size", "fused_experts", "int4_weights", "moe_sum",
    "prepare_dense", "prepare_fp8_block", "prepare_fp8_per_tensor", "route", "topk_softmax",
]
