"""Triton implementations with the exact signatures of the ``torch.ops.hunyuan.*`` ops.

``hunyuan_plugins.ops`` registers these for CUDA (and for CPU tensors when asked, which runs
them in Triton's interpreter: how CI tests the kernels through the ops). Each call only wraps
the op's tensors (no copies, no host syncs) and launches; tile configs come from configs/*.json.
"""

from __future__ import annotations

import torch

from hunyuan_plugins_kernels import experts as _x
from hunyuan_plugins_kernels.routing import topk_softmax


def moe_route(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    weights, ids, _ = topk_softmax(router_logits, top_k, renormalize)
    return weights, ids


def moe_experts(x, w13, w2, topk_weights, topk_ids) -> torch.Tensor:
    return _x.fused_experts(x, _x.prepare_dense(w13, w2), topk_weights, topk_ids)


def moe_experts_fp8(x, w13, w2, w13_scale, w2_scale, a13_scale, a2_scale, topk_weights, topk_ids) -> torch.Tensor:
    w = _x.prepare_fp8_per_tensor(w13, w2, w13_scale, w2_scale, a13_scale, a2_scale)
    return _x.fused_experts(x, w, topk_weights, topk_ids)


def moe_experts_fp8_block(x, w13, w2, w13_scale, w2_scale, topk_weights, topk_ids) -> torch.Tensor:
    return _x.fused_experts(x, _x.prepare_fp8_block(w13, w2, w13_scale, w2_scale), topk_weights, topk_ids)


def moe_experts_int4(x, w13_qweight, w13_scales, w2_qweight, w2_scales, topk_weights, topk_ids,
                     w13_perm=None, w2_perm=None) -> torch.Tensor:
    w = _x.int4_weights(w13_qweight, w13_scales, w2_qweight, w2_scales, w13_perm, w2_perm)
    return _x.fused_experts(x, w, topk_weights, topk_ids)
