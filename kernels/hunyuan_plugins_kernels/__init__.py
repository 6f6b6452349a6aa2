"""hunyuan_plugins_kernels: Triton kernels for Hunyuan MoE layers (shipped inside hunyuan-plugins).

Public launchers (each validates, picks tiles, allocates and launches; kernels are private):

* routing:  :func:`topk_softmax`, :func:`align_block_size`, :func:`route`
* experts:  :func:`fused_experts` over :class:`ExpertWeights` built by
  :func:`prepare_dense`, :func:`prepare_fp8_per_tensor`, :func:`prepare_fp8_block`,
  :func:`prepare_int4_gptq`; :func:`moe_sum` (the top-k reduction)

Importing this package imports triton; ``hunyuan_plugins.ops`` imports it lazily.
"""

from hunyuan_plugins_kernels.experts import (
    ExpertWeights,
    fused_experts,
    moe_sum,
    prepare_dense,
    prepare_fp8_block,
    prepare_fp8_per_tensor,
    prepare_int4_gptq,
)
from hunyuan_plugins_kernels.routing import RoutingData, align_block_size, route, topk_softmax

__all__ = [
    "ExpertWeights", "RoutingData", "align_block_size", "fused_experts", "moe_sum", "prepare_dense",
    "prepare_fp8_block", "prepare_fp8_per_tensor", "prepare_int4_gptq", "route", "topk_softmax",
]
