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
def _onehot(ids_ptr, s, num_slots, experts, num_experts):
    """[BLOCK_S, BLOCK_E] int32: 1 where slot s's local expert is that column (ids < 0: none)."""
    e = tl.load(ids_ptr + s, mask=s < num_slots, other=-1)
    return ((e[:, None] == experts[None, :]) & (experts < num_experts)[None, :]).to(tl.int32)


@triton.jit
def _align_count_kernel(ids_ptr, counts_ptr, num_slots, iters, num_experts,
                        BLOCK_E: tl.constexpr, BLOCK_S: tl.constexpr):
    """Program p counts the slots of each local expert in its chunk of ``iters * BLOCK_S`` slots:
    counts[p, :BLOCK_E] (every element written, so counts may be uninitialised)."""
    p = tl.program_id(0)
    experts = tl.arange(0, BLOCK_E)
    counts = tl.zeros([BLOCK_E], dtype=tl.int32)
    for i in range(0, iters):
        s = (p * iters + i) * BLOCK_S + tl.arange(0, BLOCK_S)
        counts += tl.sum(_onehot(ids_ptr, s, num_slots, experts, num_experts), axis=0)
    tl.store(counts_ptr + p * BLOCK_E + experts, counts)


@triton.jit
def _align_place_kernel(
    ids_ptr, counts_ptr, sorted_ptr, expert_ids_ptr, num_post_ptr,
    num_slots, num_chunks, iters, num_experts, sorted_len, num_blocks,
    BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_FILL: tl.constexpr,
):
    """Programs [0, num_chunks) scatter their chunk's slots; the others write the padding.

    Every program first derives the layout from the per-chunk counts: each expert's run padded
    to a multiple of BLOCK_M, runs in expert order (``starts``), and the slots of expert e from
    earlier chunks (``before``). A scatter program then places slot s of expert e at
    starts[e] + before[e] + its rank among earlier slots of e in the chunk: a stable sort by
    expert. Fill program f writes, in its BLOCK_FILL positions, the sentinel num_slots wherever no
    slot goes (each run's padding and the tail up to sorted_len), the expert of every M-block
    starting there (-1 past the padded total), and (f = 0) the padded total. Positions written by
    the two kinds of program are disjoint, so no ordering between them is needed.
    """
    pid = tl.program_id(0)
    experts = tl.arange(0, BLOCK_E)
    total = tl.zeros([BLOCK_E], dtype=tl.int32)
    before = tl.zeros([BLOCK_E], dtype=tl.int32)
    for start in range(0, num_chunks, BLOCK_P):
        rows = start + tl.arange(0, BLOCK_P)
        c = tl.load(counts_ptr + rows[:, None] * BLOCK_E + experts[None, :], mask=rows[:, None] < num_chunks,
                    other=0)
        total += tl.sum(c, axis=0)
        before += tl.sum(tl.where(rows[:, None] < pid, c, 0), axis=0)
    padded = (total + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, axis=0)
    starts = ends - padded
    padded_total = tl.sum(padded, axis=0)

    if pid < num_chunks:
        offsets = starts + before
        for i in range(0, iters):
            s = (pid * iters + i) * BLOCK_S + tl.arange(0, BLOCK_S)
            onehot = _onehot(ids_ptr, s, num_slots, experts, num_experts)
            rank = tl.cumsum(onehot, axis=0) - onehot
            pos = tl.sum((offsets[None, :] + rank) * onehot, axis=1)
            tl.store(sorted_ptr + pos, s, mask=tl.sum(onehot, axis=1) > 0)
            offsets += tl.sum(onehot, axis=0)
    else:
        f = pid - num_chunks
        pos = f * BLOCK_FILL + tl.arange(0, BLOCK_FILL)
        in_run = (pos[:, None] >= starts[None, :]) & (pos[:, None] < (starts + total)[None, :])
        is_slot = tl.sum(in_run.to(tl.int32), axis=1) > 0
        tl.store(sorted_ptr + pos, tl.zeros_like(pos) + num_slots, mask=(pos < sorted_len) & (is_slot == 0))
        blk = f * (BLOCK_FILL // BLOCK_M) + tl.arange(0, BLOCK_FILL // BLOCK_M)
        first = blk * BLOCK_M
        owner = tl.sum((ends[None, :] <= first[:, None]).to(tl.int32), axis=1)
        tl.store(expert_ids_ptr + blk, tl.where(first < padded_total, owner, -1), mask=blk < num_blocks)
        if f == 0:
            tl.store(num_post_ptr, padded_total)
