"""Reference MoE math in plain torch: the semantics every kernel and engine must reproduce.

These functions are the CPU implementations behind ``torch.ops.hunyuan.*`` (see ``ops.py``);
the model calls the ops, never these directly, so a CUDA build swaps in the Triton kernels.

Semantics (facts: hunyuan-architecture.md section 2, "Reference semantics"):
  * router logits in fp32 -> softmax over all experts -> top-k (ties: lowest expert id first,
    as ``torch.topk``) -> renormalise over the k when k > 1; top-1 keeps the raw probability.
  * no capacity, no token dropping.
  * expert e: down_e(silu(gate_e x) * up_e x); ``w13[e]`` stacks gate rows first, then up rows.
  * an expert id of -1 marks a (token, slot) whose expert lives on another rank (expert
    parallel): it contributes nothing here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def route(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, E] logits -> (weights [T, k] fp32, expert ids [T, k] int32)."""
    probs = torch.softmax(router_logits.float(), dim=-1)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-20)
    return weights, ids.to(torch.int32)


def expert_mlp(
    x: torch.Tensor,            # [T, H]
    w13: torch.Tensor,          # [E, 2I, H]  gate rows then up rows
    w2: torch.Tensor,           # [E, H, I]
    topk_weights: torch.Tensor,  # [T, k] fp32
    topk_ids: torch.Tensor,     # [T, k] int, -1 = not on this rank
) -> torch.Tensor:
    """Sum over the k chosen experts of weight * expert(x). Accumulates in fp32, returns x.dtype."""
    T, H = x.shape
    inter = w2.shape[-1]
    out = torch.zeros(T, H, dtype=torch.float32, device=x.device)
    flat_ids = topk_ids.reshape(-1).long()
    flat_w = topk_weights.reshape(-1).float()
    token_of = torch.arange(T, device=x.device).repeat_interleave(topk_ids.shape[1])
    for e in torch.unique(flat_ids).tolist():
        if e < 0:
            continue
        sel = (flat_ids == e).nonzero().squeeze(1)
        tokens = token_of[sel]
        h = F.linear(x[tokens], w13[e])
        h = F.silu(h[:, :inter]) * h[:, inter:]
        y = F.linear(h, w2[e])
        out.index_add_(0, tokens, y.float() * flat_w[sel, None])
    return out.to(x.dtype)
