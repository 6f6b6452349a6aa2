#!/usr/bin/env python
"""One Hunyuan-A13B MoE layer (routed experts): our ops vs peers, on an H100/H200.

    python benchmarks/moe_layer.py                       # full sweep, needs a CUDA GPU
    python benchmarks/moe_layer.py --peers-dir _peers    # + vLLM/SGLang Triton fused MoE (see below)
    python benchmarks/moe_layer.py --check               # tiny shapes, correctness only, CPU is fine

What one measurement is: ``torch.ops.hunyuan.moe_route`` + ``moe_experts[_fp8|_fp8_block|_int4]``
(router logits [T, E] and x [T, H] in, [T, H] out) at H=4096, E=64, top-8, I in {3072 (TP1),
1536 (TP2)}, T in {1, 8, 64, 256, 1024, 4096}, for bf16, fp8 (Tencent static per-tensor W8A8),
fp8 with 128x128 block scales and int4 (GPTQ W4A16 g128, in the layout prepared at load).

Method (docs/kernels.md, "Benchmark (GPU)"):
  * correctness first: every implementation is compared with the torch reference of the same
    format at every shape; one that disagrees is reported as WRONG and not timed;
  * CUDA graph of ``--calls`` consecutive layer calls, each on its own router logits; before each
    replay another set of logits is copied in (outside the timed region), so routing -- and which
    experts are touched -- changes on every call (``--pools`` distinct sets, cycled);
  * weights: one layer is >= 1.2 GB (int4, TP1) against a 50-60 MB L2; if a layer were smaller
    than 4x L2, several copies would be cycled (``weight_sets`` in the results);
  * time per call = replay time / calls; median and p10/p90 over ``--replays`` replays;
  * GB/s from the bytes a call must move (distinct experts hit in the actual routing x bytes per
    expert + activations), TFLOP/s from 6*T*k*H*I, %roofline = max(bytes/peak BW, flops/peak
    FLOP/s) / time with the spec peaks of the device (``SPECS`` below), routing share = our
    routing alone (top-k softmax + block alignment, timed the same way) / our layer;
  * ratio = peer time / our time (> 1: we are faster), peers measured in the same run.

Peers. ``torch._grouped_mm`` (bf16; torch routing, permute, 2 grouped GEMMs, scatter-add) always.
vLLM's / SGLang's Triton ``fused_moe_kernel`` (and vLLM's ``fused_moe_kernel_gptq_awq`` for int4)
when ``--peers-dir`` / ``$HUNYUAN_PEERS_DIR`` holds ``vllm_fused_moe.py`` / ``sglang_fused_moe.py``
made by ``benchmarks/extract_peers.py`` from their wheels (third-party code: keep it in the
git-ignored ``_peers/``, never commit it). Their CUDA glue ops cannot be carried to the GPU machine,
so a peer layer = our routing kernels + the peer GEMM kernel twice + torch silu*up (and fp8
activation quantisation) + torch top-k sum, with vLLM's default tile configs or the JSON configs in
``--peer-configs`` (vLLM's ``E=..,N=..,device_name=...json`` files).

Results: a markdown table on stdout and ``benchmarks/results/moe_layer-<device>-<utc>.{md,json}``
with device, versions, git commit and date. Nothing is written for shapes that were not measured.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("bf16", "fp8", "fp8_block", "int4")
PEERS_ENV = "HUNYUAN_PEERS_DIR"

# Spec peaks (NVIDIA's H100 SXM / H200 datasheets): HBM bytes/s, dense bf16 and fp8 FLOP/s.
SPECS = {
    "H100": (3.35e12, 989e12, 1979e12),
    "H200": (4.80e12, 989e12, 1979e12),
}
# correctness bounds (relative Frobenius error vs the torch reference of the same format)
CHECK_TOL = {"bf16": 2e-2, "fp32": 1e-3, "fp8": 3e-2, "fp8_block": 3e-2, "int4": 2e-2}


# ----------------------------------------------------------------------------- layers


@dataclass
class Layer:
    kind: str
    E: int
    H: int
    I: int
    top_k: int
    ours: Callable            # (x, logits) -> [T, H]
    reference: Callable       # (x, logits) -> [T, H]
    bytes_per_expert: int
    peers: dict = field(default_factory=dict)  # name -> (x, logits) -> [T, H]


def _route(logits, top_k):
    return torch.ops.hunyuan.moe_route(logits, top_k, top_k > 1)


def _randn(shape, dtype, device, gen, std):
    return (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * std).to(dtype)


def _per_expert(fn, *stacks):
    """Apply fn to each expert's slices (keeps fp32 temporaries to one expert at a time)."""
    outs = [fn(*(s[e] for s in stacks)) for e in range(stacks[0].shape[0])]
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(o) for o in zip(*outs))
    return torch.stack(outs)


def _unpack_int4(qweight, scales):
    """Kernel int4 layout (qweight [K/8, N] int32, nibble j of row r = K row 8r+j; scales [K/G, N],
    zero point 8) -> dense fp32 [N, K]. Independent of the library's own dequantizer."""
    K8, N = qweight.shape
    shifts = torch.arange(8, device=qweight.device, dtype=torch.int32) * 4
    q = (qweight.unsqueeze(1) >> shifts[None, :, None]) & 0xF      # [K/8, 8, N]
    q = q.reshape(K8 * 8, N).float() - 8.0
    G = K8 * 8 // scales.shape[0]
    return (q * scales.float().repeat_interleave(G, dim=0)).t().contiguous()


def make_layer(kind: str, E: int, H: int, I: int, top_k: int, device, act_dtype, seed: int = 0,
               calib_tokens: int = 64) -> Layer:
    from hunyuan_plugins.ops import reference as ref
    from hunyuan_plugins.quant import fp8

    g = torch.Generator(device=device).manual_seed(seed)
    w13 = _randn((E, 2 * I, H), act_dtype, device, g, H ** -0.5)
    w2 = _randn((E, H, I), act_dtype, device, g, I ** -0.5)
    ops = torch.ops.hunyuan
    renorm = top_k > 1

    def with_routing(experts):
        def layer(x, logits):
            weights, ids = _route(logits, top_k)
            return experts(x, weights, ids)
        return layer

    def ref_with_routing(experts):
        def layer(x, logits):
            weights, ids = ref.route(logits, top_k, renorm)
            return experts(x, weights, ids)
        return layer

    if kind in ("bf16", "fp32"):
        layer = Layer(kind, E, H, I, top_k,
                      with_routing(lambda x, w, i: ops.moe_experts(x, w13, w2, w, i)),
                      ref_with_routing(lambda x, w, i: ref.expert_mlp(x, w13, w2, w, i)),
                      3 * H * I * w13.element_size())
        layer.dense = (w13, w2)
        return layer

    if kind == "fp8":
        def q_expert(w13_e, w2_e):
            gq, gs = fp8.quantize(w13_e[:I])
            uq, us = fp8.quantize(w13_e[I:])
            dq, ds = fp8.quantize(w2_e)
            return torch.cat([gq, uq]), torch.stack([gs, us]), dq, ds.reshape(1)
        q13, s13, q2, s2 = _per_expert(q_expert, w13, w2)
        # static input scales, calibrated like Tencent's: amax over calibration tokens, all experts
        xc = _randn((calib_tokens, H), act_dtype, device, g, 1.0)
        a13 = fp8.input_scale(xc)
        hmax = torch.zeros((), device=device)
        for e in range(E):
            h = F.linear(xc.float(), w13[e].float())
            hmax = torch.maximum(hmax, (F.silu(h[:, :I]) * h[:, I:]).abs().max())
        a2 = (hmax / fp8.E4M3_MAX).reshape(())
        args = (q13, q2, s13, s2, a13, a2)
        layer = Layer(kind, E, H, I, top_k,
                      with_routing(lambda x, w, i: ops.moe_experts_fp8(x, *args, w, i)),
                      ref_with_routing(lambda x, w, i: ref.expert_mlp_fp8(x, *args, w, i)),
                      3 * H * I + 3 * 4)
        layer.fp8 = args
        return layer

    if kind == "fp8_block":
        q13, s13 = _per_expert(fp8.quantize_block, w13)
        q2, s2 = _per_expert(fp8.quantize_block, w2)
        args = (q13, q2, s13, s2)
        layer = Layer(kind, E, H, I, top_k,
                      with_routing(lambda x, w, i: ops.moe_experts_fp8_block(x, *args, w, i)),
                      ref_with_routing(lambda x, w, i: ref.expert_mlp_fp8_block(x, *args, w, i)),
                      3 * H * I + (s13[0].numel() + s2[0].numel()) * 4)
        layer.fp8_block = args
        return layer

    if kind == "int4":
        G = 128
        def rand_q(K, N):
            return torch.randint(-2 ** 31, 2 ** 31, (E, K // 8, N), generator=g, device=device, dtype=torch.int64
                                 ).to(torch.int32)
        def rand_s(K, N):  # |w| ~ K^-1/2 like the dense weights (uniform nibbles: std ~ 4.6 * s)
            return ((torch.rand(E, K // G, N, generator=g, device=device) * 0.5 + 0.75) / (4.6 * K ** 0.5)
                    ).to(torch.float16)
        q13, s13, q2, s2 = rand_q(H, 2 * I), rand_s(H, 2 * I), rand_q(I, H), rand_s(I, H)
        # reference: dense weights unpacked here (not by the library), in the activation dtype
        d13 = _per_expert(_unpack_int4, q13, s13).to(act_dtype)
        d2 = _per_expert(_unpack_int4, q2, s2).to(act_dtype)
        args = (q13, s13, q2, s2)
        layer = Layer(kind, E, H, I, top_k,
                      with_routing(lambda x, w, i: ops.moe_experts_int4(x, *args, w, i)),
                      ref_with_routing(lambda x, w, i: ref.expert_mlp(x, d13, d2, w, i)),
                      3 * H * I // 2 + (s13[0].numel() + s2[0].numel()) * 2)
        layer.int4 = args
        return layer

    raise ValueError(f"unknown kind {kind!r}")


# ----------------------------------------------------------------------------- peers


def grouped_mm_peer(layer: Layer) -> Callable | None:
    """bf16 (fp32 in --check on CPU) torch._grouped_mm layer with torch routing and glue."""
    if not hasattr(torch, "_grouped_mm") or not hasattr(layer, "dense"):
        return None
    w13, w2 = layer.dense
    E, I, k = layer.E, layer.I, layer.top_k
    w13t, w2t = w13.transpose(-2, -1), w2.transpose(-2, -1)

    def run(x, logits):
        probs = torch.softmax(logits.float(), dim=-1)
        weights, ids = torch.topk(probs, k, dim=-1)
        if k > 1:
            weights = weights / weights.sum(-1, keepdim=True)
        flat = ids.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.zeros(E, dtype=torch.int32, device=x.device).scatter_add_(
            0, flat, torch.ones_like(flat, dtype=torch.int32))
        offs = torch.cumsum(counts, 0, dtype=torch.int32)
        tok = order // k
        h = torch._grouped_mm(x[tok], w13t, offs=offs)
        h = F.silu(h[:, :I]) * h[:, I:]
        y = torch._grouped_mm(h, w2t, offs=offs)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        out.index_add_(0, tok, y.float() * weights.reshape(-1)[order, None])
        return out.to(x.dtype)
    return run


def load_peer_modules(peers_dir: str | None) -> dict:
    """{'vllm': module, 'sglang': module} for the extracted kernel files present in peers_dir."""
    mods = {}
    if not peers_dir:
        return mods
    for name in ("vllm", "sglang"):
        path = Path(peers_dir) / f"{name}_fused_moe.py"
        if not path.is_file():
            continue
        spec = importlib.util.spec_from_file_location(f"_peer_{name}_fused_moe", path)
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except Exception as e:  # report, carry on without this peer
            print(f"[peers] {path}: cannot import ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        if hasattr(mod, "fused_moe_kernel"):
            mods[name] = mod
    return mods


def vllm_default_config(M: int, E: int, kind: str) -> dict:
    """vLLM's get_default_config (fused_moe.py @13cb3e4) for the cases we run."""
    if kind == "fp8_block":
        return dict(BLOCK_SIZE_M=64, BLOCK_SIZE_N=128, BLOCK_SIZE_K=128, GROUP_SIZE_M=32, num_warps=4, num_stages=3)
    if kind == "int4":
        bm = 16 if M <= 20 else 32 if M <= 40 else 64
        return dict(BLOCK_SIZE_M=bm, GROUP_SIZE_M=1, BLOCK_SIZE_N=32 if M == 1 else 64,
                    BLOCK_SIZE_K=64 if M == 1 else 32)
    if M <= E:
        return dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=64, GROUP_SIZE_M=1)
    return dict(BLOCK_SIZE_M=64, BLOCK_SIZE_N=64, BLOCK_SIZE_K=32, GROUP_SIZE_M=8)


def peer_config(config_dir: str | None, M: int, E: int, N: int, kind: str, device) -> tuple[dict, str]:
    """(config, source): a vLLM-style tuned JSON when one exists for this shape, else the default."""
    if config_dir and device.type == "cuda":
        dev = torch.cuda.get_device_name(device).replace(" ", "_")
        dtype = {"fp8": ",dtype=fp8_w8a8", "fp8_block": ",dtype=fp8_w8a8,block_shape=[128,128]",
                 "int4": ",dtype=int4_w4a16"}.get(kind, "")
        path = Path(config_dir) / f"E={E},N={N},device_name={dev}{dtype}.json"
        if path.is_file():
            table = json.loads(path.read_text())
            best = min(table, key=lambda m: abs(int(m) - M))
            return dict(table[best]), path.name
    return vllm_default_config(M, E, kind), "vllm-default"


def _bind(kernel, known: dict) -> dict:
    """Keyword arguments for a peer jit kernel, by parameter name (signatures vary by version).
    Parameters with a default in the kernel's Python signature may be left out."""
    import inspect

    params = inspect.signature(getattr(kernel, "fn", kernel)).parameters
    kwargs, missing = {}, []
    for name, p in params.items():
        if name in known:
            kwargs[name] = known[name]
        elif p.default is inspect.Parameter.empty:
            missing.append(name)
    if missing:
        raise TypeError(f"peer kernel has parameters this harness does not know: {missing}")
    return kwargs


# Peer-kernel parameters of newer versions (vLLM 0.32, SGLang 0.5.23), set to their plain path:
# no swapped operands, no TMA descriptors, no fused bias / mask / add / all-reduce epilogues.
PLAIN_PEER_FLAGS = dict(
    SWAP_AB=False, swap_ab=False, USE_TD=False, a_desc=None, b_desc=None, bias_ptr=None, add_mask_ptr=None,
    stride_bias_e=0, stride_bias_n=0, c_sorted=False, FUSE_ADD_TO_OUTPUT=False, MASK_OUTPUT=False,
    FUSE_SUM_ALL_REDUCE=False,
)


def triton_peer(mod, layer: Layer, config_dir: str | None, block_route: Callable) -> Callable | None:
    """Peer layer: our routing + the peer's fused_moe_kernel (x2) + torch activation / top-k sum."""
    import triton
    import triton.language as tl

    kind, E, H, I, k = layer.kind, layer.E, layer.H, layer.I, layer.top_k
    if kind == "int4" and not hasattr(mod, "fused_moe_kernel_gptq_awq"):
        return None
    compute_type = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}

    own_reference = None
    if kind in ("bf16", "fp32"):
        b13, b2 = layer.dense
        s13 = s2 = None
    elif kind == "fp8":
        q13, q2, fs13, fs2, a13, a2 = layer.fp8
        if not torch.equal(fs13[:, 0], fs13[:, 1]):
            # vLLM requantises gate/up to one scale at load (max); do the same, once, here
            m = fs13.amax(dim=1)
            deq = q13.float() * fs13.repeat_interleave(I, dim=1)[..., None]
            q13 = (deq / m[:, None, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
            fs13 = m[:, None].expand(E, 2).contiguous()
            # ... so its output is checked against the reference of *its* weights (the requantisation
            # itself is vLLM's/SGLang's reading of Tencent FP8, not a kernel error)
            from hunyuan_plugins.ops import reference as ref
            args = (q13, q2, fs13, fs2, a13, a2)
            own_reference = lambda x, logits: ref.expert_mlp_fp8(x, *args, *ref.route(logits, k, k > 1))  # noqa: E731
        b13, b2, s13, s2 = q13, q2, fs13[:, 0].contiguous(), fs2.reshape(E).contiguous()
    elif kind == "fp8_block":
        b13, b2, s13, s2 = layer.fp8_block
    elif kind == "int4":
        # our layout [E, K/8, N] int32 -> vLLM's [E, N, K/2] uint8 (2 nibbles along K), scales [E, N, K/G]
        q13, t13, q2, t2 = layer.int4

        def to_u8(q):
            shifts = torch.arange(8, device=q.device, dtype=torch.int32) * 4
            nib = ((q.unsqueeze(2) >> shifts[None, None, :, None]) & 0xF).to(torch.uint8)  # [E, K/8, 8, N]
            nib = nib.reshape(q.shape[0], -1, q.shape[2]).transpose(1, 2)                   # [E, N, K]
            return (nib[..., 0::2] | (nib[..., 1::2] << 4)).contiguous()
        b13, b2 = to_u8(q13), to_u8(q2)
        s13, s2 = t13.transpose(1, 2).contiguous(), t2.transpose(1, 2).contiguous()

    def gemm(A, B, C, B_scale, A_scale, weights, routing, N, Kdim, top_k, mul_routed, cfg):
        sorted_ids, expert_ids, num_post = routing
        cfg = dict(cfg)
        num_warps, num_stages = cfg.pop("num_warps", 4), cfg.pop("num_stages", 3)
        EM = sorted_ids.shape[0]
        if A.shape[0] < cfg["BLOCK_SIZE_M"]:
            EM = min(EM, A.shape[0] * top_k * cfg["BLOCK_SIZE_M"])
        grid = (triton.cdiv(EM, cfg["BLOCK_SIZE_M"]) * triton.cdiv(N, cfg["BLOCK_SIZE_N"]),)
        block = kind == "fp8_block"
        known = dict(
            a_ptr=A, b_ptr=B, c_ptr=C, a_scale_ptr=A_scale, b_scale_ptr=B_scale, b_zp_ptr=None, b_bias_ptr=None,
            topk_weights_ptr=weights, sorted_token_ids_ptr=sorted_ids, expert_ids_ptr=expert_ids,
            num_tokens_post_padded_ptr=num_post, N=N, K=Kdim, EM=EM, num_valid_tokens=weights.numel(),
            stride_am=A.stride(0), stride_ak=A.stride(1), stride_be=B.stride(0), stride_bk=B.stride(2),
            stride_bn=B.stride(1), stride_cm=C.stride(1), stride_cn=C.stride(2),
            stride_asm=A_scale.stride(0) if A_scale is not None and A_scale.ndim == 2 else 0,
            stride_ask=A_scale.stride(1) if A_scale is not None and A_scale.ndim == 2 else 0,
            stride_bse=B_scale.stride(0) if B_scale is not None and B_scale.ndim >= 2 else 0,
            stride_bsk=B_scale.stride(2) if B_scale is not None and B_scale.ndim == 3 else 0,
            stride_bsn=B_scale.stride(1) if B_scale is not None and B_scale.ndim >= 2 else 0,
            stride_bze=0, stride_bzk=0, stride_bzn=0, stride_bbe=0, stride_bbn=0,
            group_n=128 if block else 0, group_k=128 if block else 0, group_size=128,
            block_k_diviable=Kdim % cfg["BLOCK_SIZE_K"] == 0, even_Ks=Kdim % cfg["BLOCK_SIZE_K"] == 0,
            MUL_ROUTED_WEIGHT=mul_routed, top_k=top_k, compute_type=compute_type[C.dtype],
            use_fp8_w8a8=kind in ("fp8", "fp8_block"), use_int8_w8a8=False, use_int8_w8a16=False,
            use_int4_w4a16=kind == "int4", has_zp=False, per_channel_quant=False, HAS_BIAS=False,
            naive_block_assignment=False, SPLIT_K=1, filter_expert=True, ROUTER_TOPK=top_k,
            **PLAIN_PEER_FLAGS, **cfg)
        kernel = mod.fused_moe_kernel_gptq_awq if kind == "int4" else mod.fused_moe_kernel
        kernel[grid](**_bind(kernel, known), num_warps=num_warps, num_stages=num_stages)

    def quant_a(a, static_scale):
        if kind == "fp8":
            return (a.float() / static_scale).clamp(-448, 448).to(torch.float8_e4m3fn), static_scale.reshape(1)
        if kind == "fp8_block":
            T_, K_ = a.shape
            grp = a.float().reshape(T_, K_ // 128, 128)
            amax = grp.abs().amax(-1)
            s = torch.where(amax > 0, amax / 448.0, torch.ones_like(amax))
            return (grp / s[..., None]).clamp(-448, 448).to(torch.float8_e4m3fn).reshape(T_, K_), s.contiguous()
        return a, None

    def run(x, logits):
        T = x.shape[0]
        cfg, _ = peer_config(config_dir, T, E, I, kind, x.device)
        weights, ids, routing = block_route(logits, cfg["BLOCK_SIZE_M"])
        a1, a1s = quant_a(x, layer.fp8[4] if kind == "fp8" else None)
        c1 = torch.empty(T, k, 2 * I, dtype=x.dtype, device=x.device)
        gemm(a1, b13, c1, s13, a1s, weights, routing, 2 * I, H, k, False, cfg)
        h = c1.view(T * k, 2 * I)
        h = (F.silu(h[:, :I].float()) * h[:, I:].float()).to(x.dtype)
        a2, a2s = quant_a(h, layer.fp8[5] if kind == "fp8" else None)
        c2 = torch.empty(T * k, 1, H, dtype=x.dtype, device=x.device)
        gemm(a2, b2, c2, s2, a2s, weights, routing, H, I, 1, True, cfg)
        return c2.view(T, k, H).float().sum(1).to(x.dtype)
    run.reference = own_reference
    return run


# ----------------------------------------------------------------------------- timing


def our_block_route(top_k):
    """Our routing kernels, sized for a peer's BLOCK_M: (weights, ids, (sorted, expert_ids, num_post))."""
    from hunyuan_plugins_kernels import route

    def block_route(logits, block_m):
        r = route(logits, top_k, top_k > 1, block_m)
        return r.topk_weights, r.topk_ids, (r.sorted_token_ids, r.expert_ids, r.num_tokens_post_padded)
    return block_route


def time_graph(fn, x, logit_pools, calls: int, replays: int) -> list[float]:
    """Per-call µs of ``calls`` captured calls, one replay per sample (logits rotated in between)."""
    static = logit_pools[0].clone()  # [calls, T, E]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(min(calls, 3)):
            fn(x, static[i])
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(x, static[i])
    for _ in range(3):
        graph.replay()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(replays)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(replays)]
    for r in range(replays):
        static.copy_(logit_pools[r % len(logit_pools)])
        starts[r].record()
        graph.replay()
        ends[r].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e3 / calls for s, e in zip(starts, ends)]


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))]


def rel_err(out, want):
    return float((out.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------- environment


def environment(device) -> dict:
    env = {"date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "python": platform.python_version(), "torch": torch.__version__, "device": str(device)}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(device=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   sm_count=p.multi_processor_count, memory_gb=round(p.total_memory / 2 ** 30, 1),
                   l2_bytes=getattr(p, "L2_cache_size", None))
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        env["git"] = sha + ("+dirty" if dirty else "")
    except OSError:
        env["git"] = None
    return env


def device_peaks(env: dict, args) -> tuple[float, float, float] | None:
    if args.peak_bw and args.peak_tflops:
        return args.peak_bw * 1e12, args.peak_tflops * 1e12, 2 * args.peak_tflops * 1e12
    for key, peaks in SPECS.items():
        if key in str(env.get("device", "")):
            return peaks
    return None


# ----------------------------------------------------------------------------- main


def run(args) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "kernels"))
    import hunyuan_plugins.ops  # noqa: F401  (registers torch.ops.hunyuan.*)

    cuda = torch.cuda.is_available() and not args.check
    if not cuda and not args.check:
        print("moe_layer.py: no CUDA GPU here. The benchmark needs an H100/H200; on CPU run it with --check "
              "(tiny shapes, correctness of every implementation against the torch reference, no timing).",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    if args.check:  # tiny, structurally faithful shapes (2 K/N tiles, 2 int4 groups, 128x128 fp8 blocks)
        H, E, k, inters, tokens = 256, 8, 2, [128], args.tokens or [1, 5, 33]
        act = {"bf16": torch.float32}  # bf16 is broken in Triton's interpreter; the dense path runs fp32
    else:
        H, E, k, inters = args.hidden, args.experts, args.top_k, args.inter
        tokens = args.tokens or [1, 8, 64, 256, 1024, 4096]
        act = {}
    env = environment(device)
    peaks = device_peaks(env, args)
    peer_mods = load_peer_modules(args.peers_dir)
    env["peers"] = {"torch._grouped_mm": hasattr(torch, "_grouped_mm"), **{n: True for n in peer_mods}}
    l2 = env.get("l2_bytes") or 50 * 2 ** 20
    print(f"# moe_layer: {env.get('device')} torch {env['torch']} triton {env['triton']} git {env.get('git')} "
          f"{env['date_utc']}" + ("  [--check: correctness only, no timing]" if args.check else ""))

    rows = []
    columns = ["ours", "torch._grouped_mm", *peer_mods]  # one table: a peer that cannot run a case shows "-"
    for kind in args.dtypes:
        act_dtype = act.get(kind, torch.bfloat16 if cuda else torch.float32)
        for I in inters:
            layer_bytes = E * (3 * H * I * {"bf16": 2, "fp8": 1, "fp8_block": 1, "int4": 0.5}[kind])
            n_sets = 1 if args.check else max(1, math.ceil(4 * l2 / layer_bytes))
            layers = [make_layer(kind if act_dtype != torch.float32 or kind != "bf16" else "fp32",
                                 E, H, I, k, device, act_dtype, seed=s) for s in range(n_sets)]
            impls = {"ours": [l.ours for l in layers]}
            gm = [grouped_mm_peer(l) for l in layers]
            if all(gm):
                impls["torch._grouped_mm"] = gm
            for name, mod in peer_mods.items():
                p = [triton_peer(mod, l, args.peer_configs, our_block_route(k)) for l in layers]
                if all(p):
                    impls[name] = p
            for T in tokens:
                g = torch.Generator(device=device).manual_seed(1000 + T)
                x = torch.randn(T, H, generator=g, device=device).to(act_dtype)
                pools = [torch.randn(args.calls, T, E, generator=g, device=device) for _ in range(args.pools)]
                want = layers[0].reference(x, pools[0][0])
                # bytes a call must move: distinct experts actually hit (mean over the pools) + activations
                hit = sum(len(torch.unique(torch.topk(p[c], k, -1).indices)) for p in pools for c in range(args.calls))
                hit /= args.calls * len(pools)
                nbytes = hit * layers[0].bytes_per_expert + 2 * T * H * x.element_size() + T * E * 4
                flops = 6.0 * T * k * H * I
                row = dict(dtype=kind, I=I, T=T, E=E, H=H, top_k=k, experts_hit=round(hit, 2), bytes=nbytes,
                           flops=flops, weight_sets=n_sets, act_dtype=str(act_dtype).replace("torch.", ""))
                if peaks:
                    bw, bf16_peak, fp8_peak = peaks
                    peak = fp8_peak if kind.startswith("fp8") else bf16_peak
                    row["roofline_us"] = max(nbytes / bw, flops / peak) * 1e6
                for name, fns in impls.items():
                    try:
                        own = getattr(fns[0], "reference", None)
                        err = rel_err(fns[0](x, pools[0][0]), own(x, pools[0][0]) if own else want)
                        if own:
                            row[f"{name}_checked_against"] = "its own requantised weights (one gate/up scale)"
                    except Exception as e:  # a peer that cannot run this case
                        row[f"{name}_error"] = f"{type(e).__name__}: {e}"[:300]
                        continue
                    row[f"{name}_rel_err"] = err
                    ok = err <= CHECK_TOL[layers[0].kind]
                    row[f"{name}_correct"] = ok
                    if not ok or not cuda:
                        continue
                    fn_sets = fns
                    step = {"i": 0}

                    def cycled(xx, ll, fn_sets=fn_sets, step=step):
                        f = fn_sets[step["i"] % len(fn_sets)]
                        step["i"] += 1
                        return f(xx, ll)
                    times = time_graph(cycled, x, pools, args.calls, args.replays)
                    row[f"{name}_us"] = pct(times, 0.5)
                    row[f"{name}_us_p10_p90"] = (pct(times, 0.1), pct(times, 0.9))
                if cuda and row.get("ours_us"):
                    br = our_block_route(k)
                    rt = time_graph(lambda xx, ll: br(ll, 16), x, pools, args.calls, args.replays)
                    row["routing_us"] = pct(rt, 0.5)
                rows.append(row)
                print_row(row, columns)
    write_results(rows, env, args, columns)
    bad = [r for r in rows if r.get("ours_correct") is False or "ours_error" in r]
    if bad:
        print(f"# ours: {len(bad)} case(s) WRONG or failed: see ours_rel_err / ours_error", file=sys.stderr)
    return 1 if bad else 0


def fmt_row(row: dict, impls: list[str]) -> str:
    cells = [row["dtype"], str(row["I"]), str(row["T"])]
    us = row.get("ours_us")
    if us:
        cells += [f"{us:.1f}", f"{row['bytes'] / us / 1e3:.0f}", f"{row['flops'] / us / 1e6:.1f}",
                  f"{100 * row['roofline_us'] / us:.0f}%" if "roofline_us" in row else "n/a",
                  f"{100 * row['routing_us'] / us:.1f}%" if "routing_us" in row else "n/a"]
    else:
        cells += ["-"] * 5
    for name in impls[1:]:
        if f"{name}_us" in row and us:
            cells.append(f"{row[f'{name}_us'] / us:.2f}x ({row[f'{name}_us']:.1f})")
        elif f"{name}_error" in row:
            cells.append("error")
        elif row.get(f"{name}_correct") is False:
            cells.append("WRONG")
        else:
            cells.append("ok" if row.get(f"{name}_correct") else "-")
    checks = " ".join(f"{n}:{row[f'{n}_rel_err']:.1e}" for n in impls if f"{n}_rel_err" in row)
    return "| " + " | ".join(cells + [checks]) + " |"


def header(impls: list[str]) -> str:
    cols = ["dtype", "I", "T", "ours µs", "GB/s", "TFLOP/s", "% roofline", "routing share"]
    cols += [f"{n} (time ratio, µs)" for n in impls[1:]] + ["rel err vs reference"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


_printed = {"header": False}


def print_row(row, impls):
    if not _printed["header"]:
        print(header(impls))
        _printed["header"] = True
    print(fmt_row(row, impls), flush=True)


def write_results(rows, env, args, impls):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = str(env.get("device", "cpu")).replace(" ", "_").replace("/", "_")
    stamp = env["date_utc"].replace(":", "").replace("-", "")
    base = out / f"moe_layer-{'check-' if args.check else ''}{dev}-{stamp}"
    meta = {"environment": env, "args": {k: v for k, v in vars(args).items()}, "rows": rows}
    base.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str))
    lines = [f"# MoE layer benchmark ({'--check, correctness only' if args.check else 'timed'})", "",
             "| key | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env.items()] + ["", header(impls)]
    lines += [fmt_row(r, impls) for r in rows]
    lines += ["", "ratio = peer µs / our µs (> 1: ours faster). % roofline = max(bytes/peak BW, FLOPs/peak) / "
              "measured, spec peaks. Peer layers use our routing kernels and torch glue (see moe_layer.py)."]
    base.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"# wrote {base}.md / .json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="tiny shapes, correctness only (runs on CPU)")
    p.add_argument("--dtypes", type=lambda s: s.split(","), default=list(DTYPES))
    p.add_argument("--tokens", type=lambda s: [int(t) for t in s.split(",")], default=None,
                   help="default 1,8,64,256,1024,4096 (--check: 1,5,33)")
    p.add_argument("--inter", type=lambda s: [int(t) for t in s.split(",")], default=[3072, 1536])
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--calls", type=int, default=10, help="layer calls captured per CUDA graph")
    p.add_argument("--replays", type=int, default=100)
    p.add_argument("--pools", type=int, default=8, help="distinct router-logit sets cycled across replays")
    p.add_argument("--peers-dir", default=os.environ.get(PEERS_ENV), help=f"extracted peer kernels (${PEERS_ENV})")
    p.add_argument("--peer-configs", default=None, help="folder of vLLM-style tuned JSON configs for the peers")
    p.add_argument("--peak-bw", type=float, help="TB/s, overrides the spec table")
    p.add_argument("--peak-tflops", type=float, help="bf16 TFLOP/s, overrides the spec table")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    bad = [d for d in args.dtypes if d not in DTYPES]
    if bad:
        p.error(f"unknown dtypes {bad}; choose from {DTYPES}")
    return args


if __name__ == "__main__":
    sys.exit(run(parse_args()))
