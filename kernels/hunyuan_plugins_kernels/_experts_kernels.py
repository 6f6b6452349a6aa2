"""Private Triton kernels behind ``experts.py``: one grouped GEMM over expert-sorted token blocks
(all weight formats, both MoE GEMMs, chosen by constexpr flags) and the top-k reduction."""

import triton
import triton.language as tl

# Weight formats (QUANT constexpr). Keep in sync with experts.Quant.
DENSE: tl.constexpr = tl.constexpr(0)       # fp32 / fp16 / bf16 weights, activations as given
FP8_TENSOR: tl.constexpr = tl.constexpr(1)  # e4m3 weights, per-expert scales; static activation scales
                                            # per expert (and per gate / up)
FP8_BLOCK: tl.constexpr = tl.constexpr(2)   # e4m3 weights, [GROUP_N x GROUP_K] block scales; dynamic
                                            # per-token scale over each GROUP_K activation group
INT4: tl.constexpr = tl.constexpr(3)        # 8 nibbles per int32 along K, sym (zero 8), group scales

FP8_MAX: tl.constexpr = tl.constexpr(448.0)


@triton.jit
def _swizzle(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Grouped ordering: GROUP_M consecutive M-blocks share each N-block (weight reuse in L2)."""
    in_group = GROUP_M * num_pid_n
    first_m = (pid // in_group) * GROUP_M
    size_m = min(num_pid_m - first_m, GROUP_M)
    return first_m + (pid % in_group) % size_m, (pid % in_group) // size_m


@triton.jit
def _to_fp8(x, EMULATE_CAST: tl.constexpr):
    """Saturate fp32 to +-448 and round to e4m3 (nearest even).

    EMULATE_CAST rounds in fp32 first so the cast itself is exact: Triton's interpreter drops the
    carry when rounding crosses a power of two (127.3 -> 64). GPUs use the native cast."""
    x = tl.clamp(x, -FP8_MAX, FP8_MAX)
    if EMULATE_CAST:
        exp = ((x.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
        ulp = ((tl.maximum(exp, -6) - 3 + 127) << 23).to(tl.float32, bitcast=True)  # e4m3: 3 bits
        q = x / ulp
        q = (q + 12582912.0) - 12582912.0  # round half to even (|q| < 2**22)
        x = q * ulp
    return x.to(tl.float8e4nv, fp_downcast_rounding="rtne")


@triton.jit
def _quantize_a(a, a_scale_ptr, QUANT: tl.constexpr, EMULATE_CAST: tl.constexpr):
    """Activation tile -> (operand for tl.dot, per-row scale or scalar or 1)."""
    if QUANT == FP8_TENSOR:
        s = tl.load(a_scale_ptr)
        return _to_fp8(a.to(tl.float32) / s, EMULATE_CAST), s
    elif QUANT == FP8_BLOCK:  # BLOCK_K == GROUP_K: this tile holds whole activation groups
        amax = tl.max(tl.abs(a.to(tl.float32)), axis=1)
        s = tl.where(amax > 0, amax / FP8_MAX, 1.0)
        return _to_fp8(a.to(tl.float32) / s[:, None], EMULATE_CAST), s
    else:
        return a, 1.0


@triton.jit
def _mma(acc, a, a_s, b_ptr, s_ptr, expert, rows_n, offs_k, k0, n_ok, k_ok,
         stride_be, stride_bn, stride_bk, stride_se, stride_sn, stride_sk,
         QUANT: tl.constexpr, GROUP_N: tl.constexpr, GROUP_K: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc += a @ B[expert][rows_n, offs_k]^T for one K-step, in the weight format QUANT.

    One return at the end: every branch is a constexpr if/else, so the compiler only ever sees
    the operand types of the format being compiled (an early return would leave the dense
    ``tl.dot`` compiled with INT4's packed int32 operand)."""
    b_base = b_ptr + expert * stride_be
    if QUANT == INT4:
        # each packed word loaded once, unpacked to 8 K rows; GROUP_K % BLOCK_K == 0 (launcher), so
        # one scale row per K-step, applied to the fp32 product (exact: q - 8 is a small integer)
        tl.static_assert(GROUP_K % BLOCK_K == 0)
        words = k0 // 8 + tl.arange(0, BLOCK_K // 8)
        # K is a multiple of GROUP_K, hence of BLOCK_K: no K mask
        packed = tl.load(b_base + words[:, None] * stride_bk + rows_n[None, :] * stride_bn,
                         mask=n_ok[None, :], other=0)
        shifts = tl.arange(0, 8) * 4
        q = (packed[:, None, :] >> shifts[None, :, None]) & 0xF
        b = tl.reshape(q - 8, [BLOCK_K, q.shape[2]]).to(a.dtype)
        s = tl.load(s_ptr + expert * stride_se + (k0 // GROUP_K) * stride_sk + rows_n * stride_sn,
                    mask=n_ok, other=0.0)
        acc = acc + tl.dot(a, b) * s.to(tl.float32)[None, :]
    else:
        b = tl.load(b_base + rows_n[None, :] * stride_bn + offs_k[:, None] * stride_bk,
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if QUANT == FP8_BLOCK:
            b_s = tl.load(s_ptr + expert * stride_se + (rows_n // GROUP_N) * stride_sn
                          + (k0 // GROUP_K) * stride_sk, mask=n_ok, other=0.0)
            acc = acc + tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        else:
            acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _tensor_scale(a_s_ptr, s_ptr, expert, part, stride_se, stride_sn):
    """FP8_TENSOR dequant factor: the activation scale at a_s_ptr x the expert's weight scale for
    w13 part (0 gate, 1 up) / w2."""
    return tl.load(a_s_ptr) * tl.load(s_ptr + expert * stride_se + part * stride_sn)


@triton.jit
def _moe_gemm_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, a_perm_ptr, topk_weights_ptr,
    sorted_ids_ptr, expert_ids_ptr, num_post_ptr,
    N, K, num_slots, num_m_blocks,
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_cs, stride_cm, stride_cn,
    stride_se, stride_sn, stride_sk, stride_pe, stride_ae, stride_ap,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr,
    QUANT: tl.constexpr, GROUP_N: tl.constexpr, GROUP_K: tl.constexpr, EMULATE_CAST: tl.constexpr,
    A_ROW_DIV: tl.constexpr, HAS_PERM: tl.constexpr, SWIGLU: tl.constexpr,
    MUL_ROUTED_WEIGHT: tl.constexpr, C_ROW_DIV: tl.constexpr, ATOMIC: tl.constexpr,
    SEPARATE_UP_SCALE: tl.constexpr,
):
    """C[rows] = epilogue(A[rows // A_ROW_DIV] @ B[e]^T) over one expert's M-block.

    Rows are token slots from sorted_ids (sentinel num_slots = padding). B[e] is [N(,x2), K]
    ([K/8, N] packed for INT4). SWIGLU: B holds gate rows [0, N) then up rows [N, 2N); the
    epilogue stores silu(gate) * up. MUL_ROUTED_WEIGHT scales each row by its routing weight.
    C row = slot // C_ROW_DIV; ATOMIC adds into fp32 C (top-k reduction in the epilogue).
    HAS_PERM: A's columns are read through a per-expert K permutation (GPTQ act-order).
    FP8_TENSOR: A is quantized with the static scale a_scale[expert * stride_ae] (Tencent W8A8: each
    expert's projections have their own input scale); SEPARATE_UP_SCALE: the up rows quantize A
    again with their own scale at + stride_ap (exact when gate and up were calibrated apart).

    SPLIT_K > 1 (small T, too few programs for the SMs): program_id(1) takes one of SPLIT_K
    contiguous ranges of K-steps and stores its partial sums, fp32, at C + split * stride_cs; the
    SwiGLU epilogue is then left to ``_swiglu_sum_kernel`` (gate partials in columns [0, N), up
    in [N, 2N)) and the down GEMM's partials are summed by ``_moe_sum_kernel``, both in a fixed
    order (deterministic). Scales and routing weights are linear, so they apply per partial.
    """
    pid_m, pid_n = _swizzle(tl.program_id(0), num_m_blocks, tl.cdiv(N, BLOCK_N), GROUP_M)
    if pid_m * BLOCK_M >= tl.load(num_post_ptr):
        return
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if expert < 0:
        return

    slots = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    row_ok = slots < num_slots
    a_rows = (slots // A_ROW_DIV).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N

    k_lo, k_hi = 0, K
    if SPLIT_K > 1:
        split = tl.program_id(1)
        span = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
        k_lo = split * span
        k_hi = tl.minimum(K, k_lo + span)
        c_ptr += split * stride_cs

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        a_cols = offs_k
        if HAS_PERM:
            a_cols = tl.load(a_perm_ptr + expert * stride_pe + offs_k, mask=k_ok, other=0)
        a = tl.load(a_ptr + a_rows[:, None] * stride_am + a_cols[None, :] * stride_ak,
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        a_op, a_s = _quantize_a(a, a_scale_ptr + expert * stride_ae, QUANT, EMULATE_CAST)
        acc = _mma(acc, a_op, a_s, b_ptr, b_scale_ptr, expert, offs_n, offs_k, k0, n_ok, k_ok,
                   stride_be, stride_bn, stride_bk, stride_se, stride_sn, stride_sk, QUANT, GROUP_N, GROUP_K, BLOCK_K)
        if SWIGLU:
            a_up, a_s_up = a_op, a_s
            if SEPARATE_UP_SCALE:
                a_up, a_s_up = _quantize_a(a, a_scale_ptr + expert * stride_ae + stride_ap, QUANT, EMULATE_CAST)
            acc_up = _mma(acc_up, a_up, a_s_up, b_ptr, b_scale_ptr, expert, offs_n + N, offs_k, k0, n_ok, k_ok,
                          stride_be, stride_bn, stride_bk, stride_se, stride_sn, stride_sk,
                          QUANT, GROUP_N, GROUP_K, BLOCK_K)

    if QUANT == FP8_TENSOR:
        a_s_ptr = a_scale_ptr + expert * stride_ae
        acc = acc * _tensor_scale(a_s_ptr, b_scale_ptr, expert, 0, stride_se, stride_sn)
        if SWIGLU:
            acc_up = acc_up * _tensor_scale(a_s_ptr + stride_ap, b_scale_ptr, expert, 1, stride_se, stride_sn)
    c_mask = row_ok[:, None] & n_ok[None, :]
    if SWIGLU and SPLIT_K > 1:  # partial gate | up; _swiglu_sum_kernel finishes
        part = c_ptr + slots.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
        tl.store(part, acc, mask=c_mask)
        tl.store(part + N * stride_cn, acc_up, mask=c_mask)
        return
    if SWIGLU:
        acc = acc * tl.sigmoid(acc) * acc_up
    if MUL_ROUTED_WEIGHT:
        acc = acc * tl.load(topk_weights_ptr + slots, mask=row_ok, other=0.0)[:, None]

    c_rows = (slots // C_ROW_DIV).to(tl.int64)
    c_ptrs = c_ptr + c_rows[:, None] * stride_cm + offs_n[None, :] * stride_cn
    if ATOMIC:
        tl.atomic_add(c_ptrs, acc, mask=c_mask)
    else:
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)


@triton.jit
def _swiglu_sum_kernel(part_ptr, out_ptr, N, stride_ps, stride_pm, stride_om,
                       SPLIT_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[row, n] = silu(sum_s gate_s) * sum_s up_s over split-K partials part[s, row, (n | N + n)]."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    ok = offs < N
    gate = tl.zeros([BLOCK_N], dtype=tl.float32)
    up = tl.zeros([BLOCK_N], dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        base = part_ptr + s * stride_ps + row * stride_pm
        gate += tl.load(base + offs, mask=ok, other=0.0)
        up += tl.load(base + N + offs, mask=ok, other=0.0)
    tl.store(out_ptr + row * stride_om + offs, (gate * tl.sigmoid(gate) * up).to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _moe_sum_kernel(y_ptr, ids_ptr, out_ptr, H, stride_ys, TOP_K: tl.constexpr, SPLIT_K: tl.constexpr,
                    BLOCK_H: tl.constexpr):
    """out[t] = sum_j sum_s y[s, t * TOP_K + j] over the slots whose expert is local (id >= 0) and
    the SPLIT_K partials of each, in fp32 and in a fixed order."""
    t = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = offs < H
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        # the slot's id broadcast to a vector: Triton >= 3.9 rejects a scalar bool inside a load mask
        local = (tl.load(ids_ptr + t * TOP_K + j) + tl.zeros([BLOCK_H], dtype=tl.int32)) >= 0
        for s in tl.static_range(SPLIT_K):
            acc += tl.load(y_ptr + s * stride_ys + (t * TOP_K + j) * H + offs, mask=h_ok & local,
                           other=0.0).to(tl.float32)
    tl.store(out_ptr + t * H + offs, acc.to(out_ptr.dtype.element_ty), mask=h_ok)
