"""Private Triton kernels behind ``routing.py`` (launch them only through its functions)."""

import triton
import triton.language as tl


@triton.jit
def _topk_softmax_kernel(
    logits_ptr, weights_ptr, ids_ptr, local_ids_ptr, expert_map_ptr,
    T, E, stride_lt,
    TOP_K: tl.constexpr, RENORMALIZE: tl.constexpr, HAS_MAP: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One program per BLOCK_T tokens: fp32 softmax over E, top-k by k argmax passes (ties: the
    lowest expert id, like torch.topk), optional renormalisation, optional global->local map."""
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < T
    col_ok = cols < E
    logits = tl.load(logits_ptr + rows[:, None] * stride_lt + cols[None, :],
                     mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    logits = tl.where(col_ok[None, :], logits, float("-inf"))
    num = tl.exp(logits - tl.max(logits, axis=1)[:, None])
    probs = num / tl.sum(num, axis=1)[:, None]
    probs = tl.where(col_ok[None, :], probs, -1.0)  # below every real probability

    kcols = tl.arange(0, BLOCK_K)
    top_w = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)
    top_i = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.int32)
    for j in tl.static_range(TOP_K):
        best = tl.max(probs, axis=1)
        idx = tl.min(tl.where(probs == best[:, None], cols[None, :], BLOCK_E), axis=1)
        top_w = tl.where(kcols[None, :] == j, best[:, None], top_w)
        top_i = tl.where(kcols[None, :] == j, idx[:, None], top_i)
        probs = tl.where(cols[None, :] == idx[:, None], -1.0, probs)
    if RENORMALIZE:
        top_w = top_w / tl.maximum(tl.sum(top_w, axis=1), 1e-20)[:, None]

    out = rows[:, None] * TOP_K + kcols[None, :]
    out_mask = row_ok[:, None] & (kcols[None, :] < TOP_K)
    tl.store(weights_ptr + out, top_w, mask=out_mask)
    tl.store(ids_ptr + out, top_i, mask=out_mask)
    if HAS_MAP:
        local = tl.load(expert_map_ptr + top_i, mask=out_mask, other=-1)
        tl.store(local_ids_ptr + out, local.to(tl.int32), mask=out_mask)


@triton.jit
def _expert_of(pos, ends, experts):
    """Index of the expert whose padded segment [start, end) holds each position in ``pos``."""
    return tl.sum((ends[None, :] <= pos[:, None]).to(tl.int32), axis=1)


@triton.jit
def _align_block_size_kernel(
    ids_ptr, sorted_ptr, expert_ids_ptr, num_post_ptr,
    num_slots, num_experts, sorted_len, num_blocks,
    BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_FILL: tl.constexpr,
):
    """Single program. Sorts token slots (t * top_k + j) by local expert, stable, and pads each
    expert's run to a multiple of BLOCK_M. Slots with id < 0 (expert on another rank) are left out
    entirely. Writes every element of its outputs, so they may be allocated uninitialised:
      sorted_ptr[sorted_len]:   slot ids, padding = num_slots (sentinel)
      expert_ids_ptr[num_blocks]: expert of each M-block, -1 past the padded total
      num_post_ptr[1]:          padded total (a multiple of BLOCK_M)
    """
    experts = tl.arange(0, BLOCK_E)
    expert_ok = experts < num_experts

    # 1) tokens per expert
    counts = tl.zeros([BLOCK_E], dtype=tl.int32)
    for start in range(0, num_slots, BLOCK_S):
        s = start + tl.arange(0, BLOCK_S)
        e = tl.load(ids_ptr + s, mask=s < num_slots, other=-1)
        onehot = ((e[:, None] == experts[None, :]) & expert_ok[None, :]).to(tl.int32)
        counts += tl.sum(onehot, axis=0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, axis=0)
    starts = ends - padded
    total = tl.sum(padded, axis=0)
    tl.store(num_post_ptr, total)

    # 2) scatter each slot to start[e] + its rank among earlier slots of e (stable)
    offsets = starts
    for start in range(0, num_slots, BLOCK_S):
        s = start + tl.arange(0, BLOCK_S)
        e = tl.load(ids_ptr + s, mask=s < num_slots, other=-1)
        onehot = ((e[:, None] == experts[None, :]) & expert_ok[None, :]).to(tl.int32)
        rank = tl.cumsum(onehot, axis=0) - onehot
        pos = tl.sum((offsets[None, :] + rank) * onehot, axis=1)
        tl.store(sorted_ptr + pos, s, mask=tl.sum(onehot, axis=1) > 0)
        offsets += tl.sum(onehot, axis=0)

    # 3) sentinel into every position step 2 did not write: each expert's padding, then the tail
    for e in range(0, num_experts):
        pad_start = tl.sum(tl.where(experts == e, starts + counts, 0), axis=0)
        pad_end = tl.sum(tl.where(experts == e, ends, 0), axis=0)
        pos = pad_start + tl.arange(0, BLOCK_M)
        tl.store(sorted_ptr + pos, tl.zeros_like(pos) + num_slots, mask=pos < pad_end)
    for start in range(total, sorted_len, BLOCK_FILL):
        pos = start + tl.arange(0, BLOCK_FILL)
        tl.store(sorted_ptr + pos, tl.zeros_like(pos) + num_slots, mask=pos < sorted_len)

    # 4) expert of every M-block
    for start in range(0, num_blocks, BLOCK_S):
        blk = start + tl.arange(0, BLOCK_S)
        pos = blk * BLOCK_M
        owner = _expert_of(pos, ends, experts)
        tl.store(expert_ids_ptr + blk, tl.where(pos < total, owner, -1), mask=blk < num_blocks)
