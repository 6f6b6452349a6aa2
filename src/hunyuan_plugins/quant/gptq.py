"""GPTQ-Int4: 4-bit symmetric GPTQ in the AutoGPTQ *v1* packing (W4A16). Per quantized linear::

    <prefix>.qweight  int32   [in/8, out]         8 nibbles along the INPUT dim
    <prefix>.qzeros   int32   [ceil(in/g), out/8] 8 nibbles along the OUTPUT dim, stored as (zero - 1)
    <prefix>.scales   float16 [ceil(in/g), out]
    <prefix>.g_idx    int32   [in]                group of each input row

``w[o, i] = scales[g_idx[i], o] * (q[i, o] - (qzeros[g_idx[i], o] + 1))``. Activations stay in the
model dtype (A16). With ``desc_act`` (act order) the groups are non-contiguous sets of input rows.

Also here: :func:`int4_expert_layout`, the load-time conversion of a layer's GPTQ experts into the
layout of ``hunyuan::moe_experts_int4`` (K rows sorted by group, act order as a permutation).
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Mapping

import torch
from torch import Tensor

from hunyuan_plugins.quant import DEFAULT_IGNORED, QuantFormat, QuantSpec, register, shared_input

BITS = 4
#: Number of 4-bit values packed in one int32.
PACK_FACTOR = 32 // BITS  # 8
#: Zero point of symmetric 4-bit GPTQ (stored as SYM_ZERO - 1 = 7 in v1).
SYM_ZERO = 2 ** (BITS - 1)  # 8
#: Largest |q - zero| that is used on the positive side: q in [1, 15] -> [-7, 7].
_QMAX = SYM_ZERO - 1  # 7

# --------------------------------------------------------------------------- int4 packing (AutoGPTQ v1)

_U32 = 1 << 32
_I32_SIGN = 1 << 31


def _u32_to_i32(packed: Tensor) -> Tensor:
    """int64 holding values in [0, 2**32) -> int32 with the same bit pattern."""
    return torch.where(packed >= _I32_SIGN, packed - _U32, packed).to(torch.int32)


def _i32_to_u32(packed: Tensor) -> Tensor:
    """int32 (two's complement) -> int64 holding the unsigned bit pattern."""
    if packed.dtype != torch.int32:
        raise ValueError(f"packed int4 tensor must be int32, got {packed.dtype}")
    return packed.to(torch.int64) & (_U32 - 1)


def _check_nibbles(q: Tensor) -> Tensor:
    if q.dtype.is_floating_point or q.dtype.is_complex or q.dtype == torch.bool:
        raise ValueError(f"int4 values must be an integer tensor, got {q.dtype}")
    if q.dim() != 2:
        raise ValueError(f"int4 values must be 2-D, got shape {list(q.shape)}")
    q = q.to(torch.int64)
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise ValueError("int4 values must lie in [0, 15]")
    return q


_SHIFTS = torch.arange(PACK_FACTOR, dtype=torch.int64) * BITS  # 0, 4, ..., 28


def pack_int4_rows(q: Tensor) -> Tensor:
    """Pack ``q`` [rows, cols] (values 0..15) into int32 [rows/8, cols] along dim 0.

    Row ``8*r + j`` goes to bits ``4j .. 4j+3`` of ``packed[r]`` (lowest bits =
    lowest row), i.e. GPTQ ``qweight`` packing along the input dim.
    """
    q = _check_nibbles(q)
    rows, cols = q.shape
    if rows % PACK_FACTOR:
        raise ValueError(f"number of rows ({rows}) must be a multiple of {PACK_FACTOR}")
    q = q.reshape(rows // PACK_FACTOR, PACK_FACTOR, cols)
    packed = (q << _SHIFTS.view(1, -1, 1)).sum(dim=1)
    return _u32_to_i32(packed)


def unpack_int4_rows(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_int4_rows`: int32 [R, cols] -> int64 [R*8, cols] in 0..15."""
    p = _i32_to_u32(packed)
    if p.dim() != 2:
        raise ValueError(f"packed int4 tensor must be 2-D, got shape {list(p.shape)}")
    q = (p.unsqueeze(1) >> _SHIFTS.view(1, -1, 1)) & 0xF
    return q.reshape(p.shape[0] * PACK_FACTOR, p.shape[1])


def pack_int4_cols(q: Tensor) -> Tensor:
    """Pack ``q`` [rows, cols] (values 0..15) into int32 [rows, cols/8] along dim 1.

    Column ``8*c + j`` goes to bits ``4j .. 4j+3`` of ``packed[:, c]``, i.e. GPTQ
    ``qzeros`` packing along the output dim.
    """
    q = _check_nibbles(q)
    rows, cols = q.shape
    if cols % PACK_FACTOR:
        raise ValueError(f"number of columns ({cols}) must be a multiple of {PACK_FACTOR}")
    q = q.reshape(rows, cols // PACK_FACTOR, PACK_FACTOR)
    packed = (q << _SHIFTS.view(1, 1, -1)).sum(dim=2)
    return _u32_to_i32(packed)


def unpack_int4_cols(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_int4_cols`: int32 [rows, C] -> int64 [rows, C*8] in 0..15."""
    p = _i32_to_u32(packed)
    if p.dim() != 2:
        raise ValueError(f"packed int4 tensor must be 2-D, got shape {list(p.shape)}")
    q = (p.unsqueeze(2) >> _SHIFTS.view(1, 1, -1)) & 0xF
    return q.reshape(p.shape[0], p.shape[1] * PACK_FACTOR)


# --------------------------------------------------------------------------- GPTQ int4 (sym, v1)


def _resolve_group_size(group_size: int, in_features: int) -> int:
    """``-1`` (HF "no grouping") means one group spanning the whole input dim."""
    if group_size == -1:
        return in_features
    if not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int or -1, got {group_size!r}")
    return group_size


def _default_act_order(w: Tensor) -> Tensor:
    """Deterministic stand-in for GPTQ's activation order: input columns sorted by
    descending L2 norm (ties broken by index, as the sort is stable)."""
    norms = w.to(torch.float32).norm(dim=0)
    return torch.sort(norms, descending=True, stable=True).indices


def quantize(
    w: Tensor,
    group_size: int = 128,
    desc_act: bool = False,
    perm: Tensor | None = None,
    static_groups: bool = False,
) -> dict[str, Tensor]:
    """Round-to-nearest symmetric 4-bit quantization written in GPTQ v1 layout.

    ``w`` is a linear weight [out, in]. Input rows are split into groups of
    ``group_size`` (``-1``: a single group). With ``desc_act`` the groups are
    formed along the permutation ``perm`` (default: descending column norm),
    i.e. ``g_idx[perm[j]] = j // group_size``; otherwise ``g_idx[i] = i // group_size``.
    ``static_groups`` (with ``desc_act``): GPTQ fixes the groups before permuting, so ``g_idx[i] =
    i // group_size`` although columns were processed in act order (for round-to-nearest the
    order does not matter: the result equals ``desc_act=False``).

    Per (group, output column): ``scale = max|w| / 7`` (rounded to float16, 1.0
    where the group is all zero), ``q = clamp(round(w / scale) + 8, 0, 15)``,
    zero point 8 stored as 7.

    Returns ``dict(qweight=int32 [in/8, out], qzeros=int32 [in/g, out/8],
    scales=float16 [in/g, out], g_idx=int32 [in])``.
    """
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {list(w.shape)}")
    out_features, in_features = w.shape
    if in_features % PACK_FACTOR:
        raise ValueError(
            f"in_features ({in_features}) must be a multiple of {PACK_FACTOR} for GPTQ int4 packing"
        )
    if out_features % PACK_FACTOR:
        raise ValueError(
            f"out_features ({out_features}) must be a multiple of {PACK_FACTOR} for GPTQ int4 packing"
        )
    g = _resolve_group_size(group_size, in_features)
    if in_features % g:
        raise ValueError(f"in_features ({in_features}) must be a multiple of group_size ({g})")
    n_groups = in_features // g

    wt = w.detach().to(torch.float32).t().contiguous()  # [in, out]
    if not bool(torch.isfinite(wt).all()):
        raise ValueError("weight contains non-finite values")

    # Group assignment of every input row.
    if desc_act and static_groups:
        g_idx = torch.arange(in_features) // g
    elif desc_act:
        if perm is None:
            perm = _default_act_order(w)
        perm = perm.to(torch.int64).flatten()
        if perm.numel() != in_features or not torch.equal(
            torch.sort(perm).values, torch.arange(in_features)
        ):
            raise ValueError(f"perm must be a permutation of range({in_features})")
        g_idx = torch.empty(in_features, dtype=torch.int64)
        g_idx[perm] = torch.arange(in_features) // g
    else:
        if perm is not None:
            raise ValueError("perm is only meaningful with desc_act=True")
        g_idx = torch.arange(in_features) // g

    # Per-(group, out) scale: max |w| over the rows of the group / 7.
    # Every group has exactly g rows, so sorting rows by group gives [groups, g, out].
    rows_by_group = torch.sort(g_idx, stable=True).indices
    amax = wt[rows_by_group].abs().reshape(n_groups, g, out_features).amax(dim=1)
    fp16 = torch.finfo(torch.float16)
    scale = amax / _QMAX
    scale = torch.where(amax == 0, torch.ones_like(scale), scale)
    # Keep the scale a positive, finite, normal float16 so it survives storage.
    scale = scale.clamp(fp16.tiny, fp16.max).to(torch.float16)

    # Quantize with the *stored* (float16) scale so dequantization is exact RTN.
    s_rows = scale.to(torch.float32)[g_idx]  # [in, out]
    q = (torch.round(wt / s_rows) + SYM_ZERO).clamp(0, 15).to(torch.int64)

    zeros = torch.full((n_groups, out_features), SYM_ZERO - 1, dtype=torch.int64)  # v1: zero - 1
    return {
        "qweight": pack_int4_rows(q),
        "qzeros": pack_int4_cols(zeros),
        "scales": scale,
        "g_idx": g_idx.to(torch.int32),
    }


def dequantize(
    qweight: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    g_idx: Tensor,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """GPTQ v1 int4 -> dense weight [out, in].

    ``w[o, i] = scales[g_idx[i], o] * (q[i, o] - (zero[g_idx[i], o] + 1))``,
    computed in float32 (exact: a float16 times a small integer) and cast to ``dtype``.
    """
    q = unpack_int4_rows(qweight)  # [in, out]
    zeros = unpack_int4_cols(qzeros) + 1  # [groups, out]; v1 stores zero - 1
    in_features, out_features = q.shape
    n_groups = scales.shape[0] if scales.dim() == 2 else -1
    if scales.dim() != 2 or scales.shape[1] != out_features:
        raise ValueError(
            f"scales must have shape [groups, {out_features}] to match qweight {list(qweight.shape)}, "
            f"got {list(scales.shape)}"
        )
    if tuple(zeros.shape) != (n_groups, out_features):
        raise ValueError(
            f"qzeros must have shape [{n_groups}, {out_features // PACK_FACTOR}] to match scales, "
            f"got {list(qzeros.shape)}"
        )
    if tuple(g_idx.shape) != (in_features,):
        raise ValueError(f"g_idx must have shape [{in_features}], got {list(g_idx.shape)}")
    g = g_idx.to(torch.int64)
    if in_features and (int(g.min()) < 0 or int(g.max()) >= n_groups):
        raise ValueError(f"g_idx values must lie in [0, {n_groups})")
    w = scales.to(torch.float32)[g] * (q - zeros[g]).to(torch.float32)  # [in, out]
    return w.t().contiguous().to(dtype)


# --------------------------------------------------------------------------- the kernels' expert layout


def _sorted_k(stack: Mapping[str, Tensor], name: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """One GPTQ v1 sym expert stack (qweight [E, K/8, N], qzeros [E, K/G, N/8], scales [E, K/G, N],
    g_idx [E, K]) -> (qweight with K rows sorted by group, scales, perm [E, K] int32 or None)."""
    qweight, qzeros, scales, g_idx = (stack[n] for n in ("qweight", "qzeros", "scales", "g_idx"))
    E, K = g_idx.shape
    G = K // scales.shape[1]
    out, perms = [], []
    for e in range(E):
        zeros = unpack_int4_cols(qzeros[e].cpu()) + 1
        if not bool((zeros == SYM_ZERO).all()):
            raise ValueError(f"{name}.qzeros of expert {e}: only symmetric GPTQ (zero point {SYM_ZERO}) is supported")
        perm = torch.sort(g_idx[e].cpu().long(), stable=True).indices
        if not torch.equal(g_idx[e].cpu().long()[perm], torch.arange(K) // G):
            raise ValueError(f"{name}.g_idx of expert {e} must put exactly {G} input rows in each group")
        out.append(pack_int4_rows(unpack_int4_rows(qweight[e].cpu())[perm]))
        perms.append(perm)
    perm = torch.stack(perms).to(torch.int32)
    identity = bool((perm == torch.arange(K, dtype=torch.int32)).all())
    dev = qweight.device
    return torch.stack(out).to(dev), scales.contiguous(), None if identity else perm.to(dev)


def int4_expert_layout(gate: Mapping[str, Tensor], up: Mapping[str, Tensor], down: Mapping[str, Tensor]
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """A layer's GPTQ experts (each of gate/up/down a dict of per-expert stacks ``qweight``,
    ``qzeros``, ``scales``, ``g_idx``) -> ``(w13_qweight [E, H/8, 2I], w13_scales [E, H/G, 2I],
    w2_qweight [E, I/8, H], w2_scales [E, I/G, H], w13_perm [E, H] | None, w2_perm [E, I] | None)``,
    the arguments of ``hunyuan::moe_experts_int4``. Runs once at load time (CPU work).

    desc_act: K rows are sorted by group here and the kernel reads activations through the
    permutation (no per-call copy). gate and up share their input, so GPTQ gives them the same act
    order; different ones are rejected.
    """
    gq, gs, gp = _sorted_k(gate, "gate_proj")
    uq, us, up_perm = _sorted_k(up, "up_proj")
    dq, ds, dp = _sorted_k(down, "down_proj")
    if not ((gp is None and up_perm is None) or (gp is not None and up_perm is not None and torch.equal(gp, up_perm))):
        raise ValueError("gate_proj and up_proj must share one act order (g_idx)")
    return (torch.cat([gq, uq], dim=2).contiguous(), torch.cat([gs, us], dim=2).contiguous(), dq, ds, gp, dp)


def dequantize_int4_sorted(qweight: Tensor, scales: Tensor, perm: Tensor | None) -> Tensor:
    """One expert of the :func:`int4_expert_layout` layout -> dense fp32 [N, K].

    It is GPTQ v1 sym with the K rows sorted by group: qweight [K/8, N] int32, scales [K/G, N],
    zero point 8, and ``perm[k']`` = the original input row of sorted row k' (None: identity).
    """
    K, N = qweight.shape[0] * PACK_FACTOR, qweight.shape[1]
    G = K // scales.shape[0]
    zeros = pack_int4_cols(torch.full((scales.shape[0], N), SYM_ZERO - 1))
    g_idx = (torch.arange(K) // G).to(torch.int32)
    w_sorted = dequantize(qweight.cpu(), zeros, scales.cpu(), g_idx).to(qweight.device)
    if perm is None:
        return w_sorted
    w = torch.empty_like(w_sorted)
    w[:, perm.long()] = w_sorted
    return w


# --------------------------------------------------------------------------- the checkpoint format


def shapes(out_features: int, in_features: int, group_size: int = 128) -> dict[str, tuple[int, ...]]:
    """Shapes of one GPTQ linear [out, in]; ``group_size=-1`` means a single group."""
    if in_features % PACK_FACTOR:
        raise ValueError(f"in_features ({in_features}) must be a multiple of {PACK_FACTOR} for gptq")
    if out_features % PACK_FACTOR:
        raise ValueError(f"out_features ({out_features}) must be a multiple of {PACK_FACTOR} for gptq")
    g = _resolve_group_size(group_size, in_features)
    n_groups = math.ceil(in_features / g)
    return {"qweight": (in_features // PACK_FACTOR, out_features), "qzeros": (n_groups, out_features // PACK_FACTOR),
            "scales": (n_groups, out_features), "g_idx": (in_features,)}


@register
class GPTQInt4(QuantFormat):
    method = "gptq"
    tiny_name = "gptq-int4"
    ignore_field = "modules_to_not_convert"
    suffixes = {"qweight": (torch.int32,), "qzeros": (torch.int32,), "scales": (torch.float16, torch.bfloat16),
                "g_idx": (torch.int32,)}
    activations = "unquantized, in the model dtype (W4A16)"

    def parse(self, qc: Mapping[str, Any]) -> dict[str, Any]:
        bits = qc.get("bits")
        if bits != BITS:
            raise ValueError(f"quantization_config.bits={bits!r} is not supported; only 4-bit GPTQ is supported")
        if qc.get("sym", True) is not True:
            raise ValueError(f"quantization_config.sym={qc.get('sym')!r} is not supported; "
                             "only symmetric GPTQ is supported")
        fmt = qc.get("checkpoint_format", "gptq")
        if fmt != "gptq":
            raise ValueError(f"quantization_config.checkpoint_format={fmt!r} is not supported; "
                             "only 'gptq' (v1, zeros stored minus one) is supported")
        group_size = qc.get("group_size", 128)
        if isinstance(group_size, bool) or not isinstance(group_size, int) or not (group_size > 0 or group_size == -1):
            raise ValueError(f"quantization_config.group_size={group_size!r} is invalid; "
                             "expected a positive int or -1")
        desc_act = qc.get("desc_act", False)
        if not isinstance(desc_act, bool):
            raise ValueError(f"quantization_config.desc_act={desc_act!r} is invalid; expected a bool")
        static_groups = qc.get("static_groups", False)
        if not isinstance(static_groups, bool):
            raise ValueError(f"quantization_config.static_groups={static_groups!r} is invalid; expected a bool")
        return {"group_size": group_size, "desc_act": desc_act, "static_groups": static_groups}

    def to_hf(self, spec: QuantSpec) -> dict[str, Any]:
        cfg = {"bits": BITS, "checkpoint_format": "gptq", "desc_act": spec.desc_act,
               "group_size": 128 if spec.group_size is None else spec.group_size, "quant_method": "gptq",
               "static_groups": spec.static_groups, "sym": True, "true_sequential": True}
        if spec.ignored != DEFAULT_IGNORED:
            # AngelSlim omits this key; write it only when it carries information.
            cfg["modules_to_not_convert"] = list(spec.ignored)
        return cfg

    def tiny_spec(self, ignored: tuple[str, ...]) -> QuantSpec:
        return QuantSpec("gptq", 128, True, ignored)

    def shapes(self, spec, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
        return shapes(out_features, in_features, 128 if spec is None or spec.group_size is None else spec.group_size)

    checked_suffixes = ("g_idx",)

    def check_values(self, spec: QuantSpec, suffix: str, tensor: Tensor) -> str | None:
        """``g_idx`` must match ``desc_act``: without act order (or with ``static_groups``) input row
        i is in group i // group_size; with act order every group holds exactly group_size rows."""
        K = tensor.shape[0]
        G = _resolve_group_size(128 if spec.group_size is None else spec.group_size, K)
        g = tensor.to(torch.int64)
        contiguous = torch.arange(K) // G
        if not spec.desc_act or spec.static_groups:
            if not torch.equal(g, contiguous):
                why = "static_groups: true" if spec.desc_act else "desc_act: false"
                return (f"is not contiguous groups (row i in group i // {G}) as quantization_config "
                        f"{why} requires" + (" (it looks like act order: set desc_act: true)"
                                             if torch.equal(torch.sort(g).values, contiguous) else ""))
            return None
        if not torch.equal(torch.sort(g).values, contiguous):
            return f"does not put exactly {G} input rows in each of {-(-K // G)} groups (desc_act: true)"
        return None

    def dequantize(self, spec, tensors: Mapping[str, Tensor], dtype: torch.dtype) -> Tensor:
        self.require(tensors, ("qweight", "qzeros", "scales", "g_idx"))
        return dequantize(tensors["qweight"], tensors["qzeros"], tensors["scales"], tensors["g_idx"], dtype)

    def quantize(self, spec: QuantSpec, prefix: str, w: Tensor) -> dict[str, Tensor]:
        # act order comes from the input's statistics (GPTQ sorts by the Hessian diagonal of what the
        # linear reads), so q/k/v and gate/up share theirs, as in real checkpoints: seeded per input
        perm = None
        if spec.desc_act and not spec.static_groups:
            seed = zlib.crc32(shared_input(prefix).encode())
            perm = torch.randperm(w.shape[1], generator=torch.Generator().manual_seed(seed))
        packed = quantize(w, group_size=spec.group_size, desc_act=spec.desc_act, perm=perm,
                          static_groups=spec.static_groups)
        return {f"{prefix}.{k}": v for k, v in packed.items()}
