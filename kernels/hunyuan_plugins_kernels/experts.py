"""Routed experts: grouped gate/up GEMM (+SiLU*up) and down GEMM (+routing weight), top-k sum.

Public API:

* :class:`ExpertWeights` -- the expert weights of one layer in the layout the kernel reads, built
  once at load time by a ``prepare_*`` function:

  ================================  =========================================================
  :func:`prepare_dense`             w13 [E, 2I, H] (gate rows, then up rows), w2 [E, H, I];
                                    fp32 / fp16 / bf16 (the checkpoint layout, no copy)
  :func:`prepare_fp8_per_tensor`    Tencent static W8A8: e4m3 weights as above; w13 scale
                                    [E, 2] (gate, up: each keeps its own scale, nothing is
                                    requantised), w2 scale [E, 1]; static input scales per
                                    expert and per gate / up, exactly as stored (vLLM and
                                    SGLang collapse them to one max per layer)
  :func:`prepare_fp8_block`         e4m3 weights with [128 x 128] block scales
                                    [E, N/128, K/128]; activations get dynamic scales per token
                                    and 128-group, computed inside the GEMM
  :func:`int4_weights`              int4 W4A16, zero point 8: qweight [E, K/8, N] int32 (8
                                    nibbles along K) with K rows sorted by group, scales
                                    [E, K/G, N], and for act order perm [E, K] (the A column of
                                    each sorted K row) or None; hunyuan_plugins.quant.gptq
                                    converts GPTQ checkpoints into it once at load
  ================================  =========================================================

* :func:`fused_experts` -- x [T, H], topk_weights [T, k], topk_ids [T, k] (local ids, -1 = other
  rank) -> [T, H]: align (2 launches) + 2 grouped GEMMs + top-k reduction; split-K at small T
  (too few programs for the SMs) adds one launch that finishes the SwiGLU from fp32 partials.
* :func:`moe_sum` -- the top-k reduction on its own.

Top-k reduction: the down GEMM writes each slot's weighted row in fp32 and :func:`moe_sum` adds
the k rows of a token in a fixed order (``reduce="sum"``, the default): deterministic run to run,
which the engines' greedy-parity tests need, for T*k*H*8 bytes of extra traffic (small next to
the weights at decode). ``reduce="atomic"`` adds into a zeroed fp32 [T, H] in the epilogue
instead (one launch less, order-dependent rounding on GPU).
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass

import torch
import triton

from hunyuan_plugins_kernels import _config
from hunyuan_plugins_kernels import _experts_kernels as _k
from hunyuan_plugins_kernels._launch import launch
from hunyuan_plugins_kernels.routing import align_block_size

FP8_BLOCK_SHAPE = (128, 128)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Quant(enum.IntEnum):
    """Weight format; values are the kernel's QUANT constexpr."""
    DENSE = 0
    FP8_TENSOR = 1
    FP8_BLOCK = 2
    INT4 = 3


@dataclass(frozen=True)
class Operand:
    """One stacked expert weight as the GEMM reads it (see the module docstring for layouts)."""
    weight: torch.Tensor
    scale: torch.Tensor | None = None        # weight scales (fp8 / int4)
    input_scale: torch.Tensor | None = None  # FP8_TENSOR: static activation scales [E, parts] fp32
    perm: torch.Tensor | None = None         # INT4 act-order: A column of each sorted K row
    group_n: int = 1
    group_k: int = 1

    def b_strides(self, quant: Quant) -> tuple[int, int, int]:
        """(expert, n, k) strides; INT4's k stride is per packed row of 8."""
        w = self.weight
        if quant == Quant.INT4:
            return w.stride(0), w.stride(2), w.stride(1)
        return w.stride(0), w.stride(1), w.stride(2)

    def s_strides(self, quant: Quant) -> tuple[int, int, int]:
        """(expert, n-or-part, k) strides of ``scale`` (zeros when there is none)."""
        s = self.scale
        if quant == Quant.FP8_TENSOR:
            return s.stride(0), s.stride(1), 0
        if quant == Quant.FP8_BLOCK:
            return s.stride(0), s.stride(1), s.stride(2)
        if quant == Quant.INT4:
            return s.stride(0), s.stride(2), s.stride(1)
        return 0, 0, 0


@dataclass(frozen=True)
class ExpertWeights:
    quant: Quant
    w13: Operand  # N = 2I (gate rows, then up rows), K = H
    w2: Operand   # N = H, K = I
    num_experts: int
    hidden: int
    inter: int

    @property
    def tag(self) -> str:
        """dtype part of the config key."""
        if self.quant == Quant.FP8_TENSOR:
            return "fp8_w8a8"
        if self.quant == Quant.FP8_BLOCK:
            return f"fp8_w8a8_block{self.w13.group_k}"
        if self.quant == Quant.INT4:
            return f"int4_w4a16_g{self.w13.group_k}"
        return _config.DTYPE_NAMES[self.w13.weight.dtype]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _check_stacks(w13: torch.Tensor, w2: torch.Tensor, dtypes) -> tuple[int, int, int]:
    _check(w13.dim() == 3 and w2.dim() == 3, f"w13/w2 must be 3-D, got {list(w13.shape)} {list(w2.shape)}")
    E, two_i, H = w13.shape
    _check(two_i % 2 == 0 and tuple(w2.shape) == (E, H, two_i // 2),
           f"w13 [E, 2I, H] and w2 [E, H, I] disagree: {list(w13.shape)} vs {list(w2.shape)}")
    _check(w13.dtype in dtypes and w2.dtype == w13.dtype,
           f"weights must be one of {dtypes}, got {w13.dtype}/{w2.dtype}")
    return E, H, two_i // 2


def prepare_dense(w13: torch.Tensor, w2: torch.Tensor) -> ExpertWeights:
    E, H, I = _check_stacks(w13, w2, FLOAT_DTYPES)
    return ExpertWeights(Quant.DENSE, Operand(w13), Operand(w2), E, H, I)


def _input_scales(scale: torch.Tensor, num_experts: int, parts: int, name: str) -> torch.Tensor:
    """Static activation scales as [E, parts] fp32 (parts: 2 = gate, up; 1 = down), from [] / [1]
    (one for all), [E] (per expert) or, for parts 2, [E, 2]; broadcast by stride 0 (a view when fp32)."""
    E, s = num_experts, scale.float()
    if s.numel() == 1:
        return s.reshape(1, 1).expand(E, parts)
    if tuple(s.shape) == (E,):
        return s.reshape(E, 1).expand(E, parts)
    _check(parts == 2 and tuple(s.shape) == (E, 2),
           f"{name} must be [], [1], [E]{' or [E, 2]' if parts == 2 else ''} with E={E}, got {list(scale.shape)}")
    return s


def prepare_fp8_per_tensor(w13: torch.Tensor, w2: torch.Tensor, w13_scale: torch.Tensor,
                           w2_scale: torch.Tensor, a13_scale: torch.Tensor, a2_scale: torch.Tensor
                           ) -> ExpertWeights:
    """Tencent FP8: w13_scale [E] / [E, 1] (one scale) or [E, 2] (gate, up); w2_scale [E] / [E, 1];
    static input scales a13_scale [E, 2] (gate, up) / [E] / [] and a2_scale [E] / [], each expert's
    projections quantizing their input with their own (no max-collapsing).

    Canonical forms (what a caller should prepare once at load): w13_scale [E, 2] fp32
    contiguous, w2_scale [E] or [E, 1] fp32, input scales fp32. With those nothing is allocated or
    launched here (the op can run once per forward without rebuilding scales); other dtypes cost
    a small copy per call. a13_scale [E, 2] quantizes each activation tile twice (gate, up): pass
    [E] when gate and up share their input scale (they see the same input, so calibration gives
    them the same one) to quantize once."""
    E, H, I = _check_stacks(w13, w2, (torch.float8_e4m3fn,))
    s13 = w13_scale.float().reshape(E, -1)
    _check(s13.shape[1] in (1, 2), f"w13_scale must be [E], [E, 1] or [E, 2], got {list(w13_scale.shape)}")
    s13 = s13.expand(E, 2).contiguous()
    s2 = w2_scale.float().reshape(E, 1)
    return ExpertWeights(Quant.FP8_TENSOR,
                         Operand(w13, s13, _input_scales(a13_scale, E, 2, "a13_scale")),
                         Operand(w2, s2, _input_scales(a2_scale, E, 1, "a2_scale")), E, H, I)


def prepare_fp8_block(w13: torch.Tensor, w2: torch.Tensor, w13_scale: torch.Tensor,
                      w2_scale: torch.Tensor, block_shape: tuple[int, int] = FP8_BLOCK_SHAPE) -> ExpertWeights:
    """Block-scaled FP8: scales [E, ceil(N/bn), ceil(K/bk)], real = fp8 * scale of its block."""
    E, H, I = _check_stacks(w13, w2, (torch.float8_e4m3fn,))
    bn, bk = block_shape
    _check(I % bn == 0 and H % bk == 0 and I % bk == 0,
           f"fp8 block {block_shape} needs H and I divisible by it (gate/up blocks must not straddle)")
    _check(tuple(w13_scale.shape) == (E, 2 * I // bn, H // bk), f"w13_scale must be [E, 2I/{bn}, H/{bk}]")
    _check(tuple(w2_scale.shape) == (E, triton.cdiv(H, bn), I // bk), f"w2_scale must be [E, H/{bn}, I/{bk}]")
    return ExpertWeights(Quant.FP8_BLOCK,
                         Operand(w13, w13_scale.float(), group_n=bn, group_k=bk),
                         Operand(w2, w2_scale.float(), group_n=bn, group_k=bk), E, H, I)


def int4_weights(w13_qweight: torch.Tensor, w13_scales: torch.Tensor, w2_qweight: torch.Tensor,
                 w2_scales: torch.Tensor, w13_perm: torch.Tensor | None = None,
                 w2_perm: torch.Tensor | None = None) -> ExpertWeights:
    """Wrap tensors in the kernel's int4 layout (see the module docstring)."""
    _check(w13_qweight.dtype == torch.int32 and w2_qweight.dtype == torch.int32, "int4 qweights must be int32")
    E, H8, two_i = w13_qweight.shape
    H, I = H8 * 8, two_i // 2
    _check(tuple(w2_qweight.shape) == (E, I // 8, H), f"w2_qweight must be [E, I/8, H], got {list(w2_qweight.shape)}")
    _check(w13_scales.shape[0] == E and w13_scales.shape[2] == two_i and H % w13_scales.shape[1] == 0,
           "w13_scales must be [E, H/G, 2I]")
    _check(w2_scales.shape[0] == E and w2_scales.shape[2] == H and I % w2_scales.shape[1] == 0,
           "w2_scales must be [E, I/G, H]")
    return ExpertWeights(Quant.INT4,
                         Operand(w13_qweight, w13_scales, perm=w13_perm, group_k=H // w13_scales.shape[1]),
                         Operand(w2_qweight, w2_scales, perm=w2_perm, group_k=I // w2_scales.shape[1]), E, H, I)


# ---------------------------------------------------------------------------------------------
# launch


def _tile_config(op: str, w: ExpertWeights, T: int, device: torch.device, given: dict | None) -> dict:
    cfg = dict(given) if given else _config.lookup(op, T, w.num_experts, w.inter, w.hidden, w.tag, device)
    if w.quant == Quant.FP8_BLOCK:
        cfg["BLOCK_K"] = w.w13.group_k  # activation groups are quantised whole, per K-step
    elif w.quant == Quant.INT4:
        # one scale row per K-step: BLOCK_K must divide both GEMMs' group size
        group = math.gcd(w.w13.group_k, w.w2.group_k)
        cfg["BLOCK_K"] = math.gcd(cfg["BLOCK_K"], group & -group)  # largest power of 2 dividing both
        _check(cfg["BLOCK_K"] >= 16, f"int4 group sizes {w.w13.group_k}/{w.w2.group_k} need a power-of-2 "
               "K tile >= 16 dividing them")
    return cfg


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def split_k(cfg: dict, programs: int, k: int, device: torch.device, sm_count: int | None = None) -> int:
    """K splits for one grouped GEMM: the config's ``SPLIT_K`` when it has one; otherwise, on a GPU,
    the largest power of 2 that keeps the launch within the SMs (programs * split <= SMs) with at
    least 4 K-steps per split; 1 elsewhere. ``programs`` is the launch's worst-case program count
    (from shapes: no host sync). An untuned rule, like the default tiles."""
    if "SPLIT_K" in cfg:
        return int(cfg["SPLIT_K"])
    if sm_count is None:
        if device.type != "cuda":
            return 1
        sm_count = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    split, steps = 1, triton.cdiv(k, cfg["BLOCK_K"])
    while programs * split * 2 <= sm_count and steps // (split * 2) >= 4:
        split *= 2
    return split


def _grouped_gemm(a: torch.Tensor, b: Operand, quant: Quant, c: torch.Tensor, cfg: dict, routing: tuple,
                  topk_weights: torch.Tensor, *, n: int, k: int, a_row_div: int, swiglu: bool = False,
                  mul_routed_weight: bool = False, c_row_div: int = 1, atomic: bool = False,
                  split: int = 1) -> None:
    """One grouped GEMM launch. split > 1: c is [split, rows, cols] fp32 partials (see the kernel)."""
    sorted_ids, expert_ids, num_post, num_slots, num_m_blocks = routing
    dummy = sorted_ids  # stands in for absent optional pointers (never dereferenced)
    grid = (num_m_blocks * triton.cdiv(n, cfg["BLOCK_N"]), split)
    c_strides = (c.stride(0), c.stride(1), c.stride(2)) if split > 1 else (0, c.stride(0), c.stride(1))
    a_s = b.input_scale
    a_s_strides = (a_s.stride(0), a_s.stride(1) if a_s.shape[1] > 1 else 0) if a_s is not None else (0, 0)
    launch(
        _k._moe_gemm_kernel, grid, a, b.weight, c,
        b.input_scale if b.input_scale is not None else dummy,
        b.scale if b.scale is not None else dummy,
        b.perm if b.perm is not None else dummy,
        topk_weights, sorted_ids, expert_ids, num_post,
        n, k, num_slots, num_m_blocks,
        a.stride(0), a.stride(1), *b.b_strides(quant), *c_strides,
        *b.s_strides(quant), b.perm.stride(0) if b.perm is not None else 0, *a_s_strides,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], GROUP_M=cfg.get("GROUP_M", 1),
        SPLIT_K=split, QUANT=int(quant), GROUP_N=b.group_n, GROUP_K=b.group_k,
        EMULATE_CAST=_config.interpreting(), A_ROW_DIV=a_row_div, HAS_PERM=b.perm is not None, SWIGLU=swiglu,
        MUL_ROUTED_WEIGHT=mul_routed_weight, C_ROW_DIV=c_row_div, ATOMIC=atomic,
        SEPARATE_UP_SCALE=swiglu and quant == Quant.FP8_TENSOR and a_s_strides[1] != 0,
        num_warps=cfg.get("num_warps", 4), num_stages=cfg.get("num_stages", 3),
    )


def moe_sum(y: torch.Tensor, local_ids: torch.Tensor, out_dtype: torch.dtype, *, block_h: int | None = None
            ) -> torch.Tensor:
    """[T*k, H] (or split-K partials [S, T*k, H]) per-slot rows -> [T, H]: the sum of each token's
    k rows whose local id is >= 0 (and of their S partials), in a fixed order."""
    T, top_k = local_ids.shape
    H = y.shape[-1]
    splits, stride_s = (y.shape[0], y.stride(0)) if y.dim() == 3 else (1, 0)
    out = torch.empty(T, H, dtype=out_dtype, device=y.device)
    if T == 0:
        return out
    block_h = block_h or min(triton.next_power_of_2(H), 1024)
    launch(_k._moe_sum_kernel, (T, triton.cdiv(H, block_h)),
           y, local_ids.contiguous(), out, H, stride_s, TOP_K=top_k, SPLIT_K=splits, BLOCK_H=block_h)
    return out


def fused_experts(x: torch.Tensor, w: ExpertWeights, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
                  config: dict | None = None, down_config: dict | None = None, reduce: str = "sum"
                  ) -> torch.Tensor:
    """Routed-expert SwiGLU MLP of ``hunyuan::moe_experts`` (any weight format) -> [T, H] in x.dtype.

    ``config`` / ``down_config``: tile dicts (BLOCK_M/N/K, GROUP_M, num_warps, num_stages, and
    optionally SPLIT_K; see :func:`split_k`) for the gate/up and down GEMM; default: configs/*.json
    lookup. Both GEMMs share the token blocks, so the down GEMM always uses the gate/up BLOCK_M.
    """
    _check(x.dim() == 2 and x.dtype in FLOAT_DTYPES, f"x must be [T, H] fp32/fp16/bf16, got {x.dtype} {list(x.shape)}")
    T, H = x.shape
    _check(H == w.hidden, f"x has hidden size {H}, weights {w.hidden}")
    _check(topk_ids.shape == topk_weights.shape and topk_ids.dim() == 2 and topk_ids.shape[0] == T,
           f"topk_weights/topk_ids must both be [T={T}, k]")
    _check(w.quant != Quant.DENSE or w.w13.weight.dtype == x.dtype, "dense weights must have x's dtype")
    _check(reduce in ("sum", "atomic"), f"reduce must be 'sum' or 'atomic', got {reduce!r}")
    top_k, E, I = topk_ids.shape[1], w.num_experts, w.inter
    if T == 0:
        return torch.empty_like(x)

    up_cfg = _tile_config("moe_up", w, T, x.device, config)
    down_cfg = _tile_config("moe_down", w, T, x.device, down_config)
    down_cfg["BLOCK_M"] = up_cfg["BLOCK_M"]
    ids = topk_ids.to(torch.int32).contiguous()
    weights = topk_weights.float().contiguous()
    sorted_ids, expert_ids, num_post = align_block_size(ids, E, up_cfg["BLOCK_M"])
    m_blocks = min(expert_ids.numel(), T * top_k)  # at most one non-empty M-block per slot
    routing = (sorted_ids, expert_ids, num_post, T * top_k, m_blocks)
    slots, dev = T * top_k, x.device

    inter = torch.empty(slots, I, dtype=x.dtype, device=dev)
    up_split = split_k(up_cfg, m_blocks * triton.cdiv(I, up_cfg["BLOCK_N"]), H, dev)
    if up_split > 1:  # fp32 gate | up partials, then silu(gate) * up in a fixed order
        part = torch.empty(up_split, slots, 2 * I, dtype=torch.float32, device=dev)
        _grouped_gemm(x, w.w13, w.quant, part, up_cfg, routing, weights, n=I, k=H, a_row_div=top_k,
                      swiglu=True, split=up_split)
        block_n = min(triton.next_power_of_2(I), 1024)
        launch(_k._swiglu_sum_kernel, (slots, triton.cdiv(I, block_n)), part, inter, I, part.stride(0),
               part.stride(1), inter.stride(0), SPLIT_K=up_split, BLOCK_N=block_n)
    else:
        _grouped_gemm(x, w.w13, w.quant, inter, up_cfg, routing, weights, n=I, k=H, a_row_div=top_k, swiglu=True)

    down_split = split_k(down_cfg, m_blocks * triton.cdiv(H, down_cfg["BLOCK_N"]), I, dev)
    if reduce == "atomic":  # partials of every split add into the same fp32 rows
        acc = torch.zeros(T, H, dtype=torch.float32, device=dev)
        _grouped_gemm(inter, w.w2, w.quant, acc.unsqueeze(0).expand(down_split, T, H) if down_split > 1 else acc,
                      down_cfg, routing, weights, n=H, k=I, a_row_div=1, mul_routed_weight=True, c_row_div=top_k,
                      atomic=True, split=down_split)
        return acc.to(x.dtype)
    y = torch.empty(*((down_split,) if down_split > 1 else ()), slots, H, dtype=torch.float32, device=dev)
    _grouped_gemm(inter, w.w2, w.quant, y, down_cfg, routing, weights, n=H, k=I, a_row_div=1,
                  mul_routed_weight=True, split=down_split)
    return moe_sum(y, ids, x.dtype)
