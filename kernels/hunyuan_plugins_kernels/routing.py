"""Routing: router logits -> top-k experts -> token slots sorted and padded per expert.

Public launchers (plain Python: validate, size, allocate, launch):

* :func:`topk_softmax` -- [T, E] logits -> fp32 weights [T, k], global ids [T, k] int32 and local
  ids [T, k] int32 (through an optional expert map; -1 = expert owned by another rank).
* :func:`align_block_size` -- local ids -> ``sorted_token_ids`` / ``expert_ids`` /
  ``num_tokens_post_padded`` for the grouped GEMMs (the ``moe_align_block_size`` job).
* :func:`route` -- both (two launches), returning :class:`RoutingData`.

All outputs are sized for the worst case from shapes alone (no host sync, CUDA-graph safe).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton

from hunyuan_plugins_kernels import _routing_kernels as _k
from hunyuan_plugins_kernels._launch import launch

MAX_EXPERTS = 256
MAX_TOP_K = 8
MAX_CHUNKS = 64  # align_block_size: per-chunk count rows each placing program reads


class RoutingData(NamedTuple):
    topk_weights: torch.Tensor           # [T, k] fp32
    topk_ids: torch.Tensor               # [T, k] int32, global expert ids
    local_ids: torch.Tensor              # [T, k] int32, local ids (-1: another rank)
    sorted_token_ids: torch.Tensor       # [num_m_blocks * block_m] int32, sentinel T*k
    expert_ids: torch.Tensor             # [num_m_blocks] int32, -1 past the padded total
    num_tokens_post_padded: torch.Tensor  # [1] int32
    block_m: int


def padded_capacity(num_slots: int, num_experts: int, block_m: int) -> tuple[int, int]:
    """(slots, M-blocks) needed in the worst case: every expert's run padded by block_m - 1."""
    num_blocks = triton.cdiv(num_slots + num_experts * (block_m - 1), block_m)
    return num_blocks * block_m, num_blocks


def topk_softmax(router_logits: torch.Tensor, top_k: int, renormalize: bool,
                 expert_map: torch.Tensor | None = None, *, block_t: int | None = None,
                 num_warps: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if router_logits.dim() != 2:
        raise ValueError(f"router_logits must be [T, E], got {list(router_logits.shape)}")
    T, E = router_logits.shape
    if not 1 <= top_k <= min(E, MAX_TOP_K):
        raise ValueError(f"top_k must be in [1, min(E, {MAX_TOP_K})], got {top_k} (E={E})")
    if E > MAX_EXPERTS:
        raise ValueError(f"at most {MAX_EXPERTS} experts supported, got {E}")
    if expert_map is not None and (expert_map.shape != (E,) or expert_map.dtype != torch.int32):
        raise ValueError(f"expert_map must be int32 [E={E}], got {expert_map.dtype} {list(expert_map.shape)}")
    logits = router_logits if router_logits.stride(1) == 1 else router_logits.contiguous()
    weights = torch.empty(T, top_k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(T, top_k, dtype=torch.int32, device=logits.device)
    local_ids = torch.empty_like(ids) if expert_map is not None else ids
    if T == 0:
        return weights, ids, local_ids
    block_e = triton.next_power_of_2(E)
    block_t = block_t or max(1, min(triton.next_power_of_2(T), 4096 // block_e))
    launch(
        _k._topk_softmax_kernel, (triton.cdiv(T, block_t),),
        logits, weights, ids, local_ids, expert_map if expert_map is not None else ids,
        T, E, logits.stride(0),
        TOP_K=top_k, RENORMALIZE=bool(renormalize), HAS_MAP=expert_map is not None,
        BLOCK_T=block_t, BLOCK_E=block_e, BLOCK_K=triton.next_power_of_2(top_k),
        num_warps=num_warps,
    )
    return weights, ids, local_ids


def align_block_size(local_ids: torch.Tensor, num_experts: int, block_m: int, *,
                     block_s: int | None = None, num_warps: int = 4
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort token slots by expert and pad every expert's run to a multiple of ``block_m``.

    Slot ``s = t * k + j`` is the j-th choice of token t. Slots whose local id is < 0 are
    dropped (no M-block is spent on experts of other ranks). Within an expert, slots keep
    ascending order, so the result is deterministic and equals a stable sort.

    Two launches, parallel over the slots: per-chunk expert counts, then placement (each program
    derives the padded layout from the counts, then scatters its chunk or writes padding).
    """
    if local_ids.dim() != 2 or local_ids.dtype != torch.int32:
        raise ValueError(f"local_ids must be int32 [T, k], got {local_ids.dtype} {list(local_ids.shape)}")
    if not 1 <= num_experts <= MAX_EXPERTS:
        raise ValueError(f"num_experts must be in [1, {MAX_EXPERTS}], got {num_experts}")
    if block_m < 1 or block_m & (block_m - 1):
        raise ValueError(f"block_m must be a power of 2, got {block_m}")
    ids = local_ids.contiguous()
    num_slots = ids.numel()
    sorted_len, num_blocks = padded_capacity(num_slots, num_experts, block_m)
    dev = ids.device
    sorted_ids = torch.empty(sorted_len, dtype=torch.int32, device=dev)
    expert_ids = torch.empty(num_blocks, dtype=torch.int32, device=dev)
    num_post = torch.empty(1, dtype=torch.int32, device=dev)
    block_e = triton.next_power_of_2(num_experts)
    block_s = block_s or max(16, 4096 // block_e)
    # chunks of iters * block_s slots, at most MAX_CHUNKS of them (each placing program reads
    # every chunk's counts); fill programs cover sorted_len in block_fill positions
    iters = max(1, triton.cdiv(triton.cdiv(num_slots, block_s), MAX_CHUNKS))
    num_chunks = max(1, triton.cdiv(num_slots, iters * block_s))
    block_fill = max(triton.next_power_of_2(block_m), 4096 // block_e)
    counts = torch.empty(num_chunks, block_e, dtype=torch.int32, device=dev)
    launch(_k._align_count_kernel, (num_chunks,), ids, counts, num_slots, iters, num_experts,
           BLOCK_E=block_e, BLOCK_S=block_s, num_warps=num_warps)
    launch(
        _k._align_place_kernel, (num_chunks + triton.cdiv(sorted_len, block_fill),),
        ids, counts, sorted_ids, expert_ids, num_post,
        num_slots, num_chunks, iters, num_experts, sorted_len, num_blocks,
        BLOCK_M=block_m, BLOCK_E=block_e, BLOCK_S=block_s, BLOCK_P=min(MAX_CHUNKS, 4096 // block_e),
        BLOCK_FILL=block_fill, num_warps=num_warps,
    )
    return sorted_ids, expert_ids, num_post


def route(router_logits: torch.Tensor, top_k: int, renormalize: bool, block_m: int,
          expert_map: torch.Tensor | None = None, num_local_experts: int | None = None) -> RoutingData:
    """topk_softmax + align_block_size. ``num_local_experts`` defaults to E (no expert map)."""
    weights, ids, local_ids = topk_softmax(router_logits, top_k, renormalize, expert_map)
    n_local = num_local_experts if num_local_experts is not None else router_logits.shape[1]
    sorted_ids, expert_ids, num_post = align_block_size(local_ids, n_local, block_m)
    return RoutingData(weights, ids, local_ids, sorted_ids, expert_ids, num_post, block_m)
