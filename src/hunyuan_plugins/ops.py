"""The one place that registers torch custom ops (namespace ``hunyuan``).

Each op = a reference torch implementation (CPU, and the fallback anywhere else) + a fake
implementation (shapes only, for torch.compile / meta tensors). CUDA implementations backed by
our Triton kernels are registered on top of these by the kernel library when it is importable;
callers never see the difference: the core and every adapter call ``torch.ops.hunyuan.*``
through the thin wrappers below.

Importing this module imports neither an engine nor triton.
"""

from __future__ import annotations

import torch

from hunyuan_plugins.core import moe as _ref


@torch.library.custom_op("hunyuan::moe_route", mutates_args=())
def moe_route(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, E] router logits -> (weights [T, k] fp32, expert ids [T, k] int32)."""
    return _ref.route(router_logits, top_k, renormalize)


@moe_route.register_fake
def _(router_logits, top_k, renormalize):
    T = router_logits.shape[0]
    return (router_logits.new_empty(T, top_k, dtype=torch.float32),
            router_logits.new_empty(T, top_k, dtype=torch.int32))


@torch.library.custom_op("hunyuan::moe_experts", mutates_args=())
def moe_experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """Routed-expert SwiGLU MLP, weighted and summed over the top-k: [T, H] -> [T, H]."""
    return _ref.expert_mlp(x, w13, w2, topk_weights, topk_ids)


@moe_experts.register_fake
def _(x, w13, w2, topk_weights, topk_ids):
    return torch.empty_like(x)
