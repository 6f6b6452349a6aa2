#!/usr/bin/env python
"""Tile-config sweep for the grouped expert GEMMs on a CUDA GPU; writes configs/moe_{up,down}.json.

    python benchmarks/tune_moe.py --dtypes bf16,fp8,fp8_block,int4 --inter 3072,1536,768,384
    python benchmarks/tune_moe.py --list          # show the keys and candidate grid (no GPU needed)
    python benchmarks/tune_moe.py --tokens 1,8,64 --budget-s 150 --out $OUT   # decode sweep, time-boxed
    python benchmarks/tune_moe.py --check --out /tmp/t   # rehearsal: tiny shapes, interpreter, no timing

For each (dtype, I = moe_intermediate_size / TP, T) it times ``fused_experts`` (routing excluded)
under a CUDA graph with rotating routing (as moe_layer.py does): first the gate/up config with the
down config at its default, then the down config with the best gate/up one. Every winner is
checked against the torch reference before it is written. Results merge into
``kernels/hunyuan_plugins_kernels/configs/moe_{up,down}.json`` (or ``--out``) under the key
``E=..,N=I,K=H,dtype=..,device=<torch.cuda.get_device_name>``, inner key T. Commit them together
with the benchmark table that shows they help; until then only default.json ships.

Cost: each distinct config compiles once per kernel variant (seconds each), then times fast; a
full sweep is long, so split it with --dtypes / --inter / --tokens to fit a machine's time limit
(results merge into the JSON files run after run).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "kernels"), str(ROOT / "benchmarks")]


def candidates(kind: str, T: int, top_k: int, E: int, grid: str = "full") -> list[dict]:
    """Tile configs to try. fp8 always includes BLOCK_M 64: below it Triton compiles fp8 for Hopper
    as an upcast mma.sync, not e4m3 wgmma (benchmarks/results/compile_report.md). ``grid="small"``
    is the device script's time-boxed decode sweep."""
    per_expert = max(1, T * top_k // E)
    bms = [bm for bm in (16, 32, 64, 128) if bm <= max(16, 2 * per_expert)]
    if kind.startswith("fp8") and 64 not in bms:
        bms.append(64)
    bks = (128,) if kind == "fp8_block" else (64, 128)
    gms = (1, 8) if T * top_k >= 2 * E else (1,)
    bns, warps, stages = ((64, 128), (4,), (3, 4)) if grid == "small" else ((64, 128, 256), (4, 8), (3, 4))
    out = []
    for bm, bn, bk, gm, w, s in itertools.product(bms, bns, bks, gms, warps, stages):
        if bm * bn >= 128 * 256 and w == 4:
            continue  # register pressure: skip the obviously bad
        out.append(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, num_warps=w, num_stages=s))
    if T * top_k <= E:  # decode: few programs, so explicit K splits compete with the launcher's rule
        out += [dict(c, SPLIT_K=sk) for c in out if c["num_stages"] == 3 for sk in (1, 2, 4)]
    return out


def main(argv=None) -> int:
    import moe_layer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", type=lambda s: s.split(","), default=["bf16", "fp8", "fp8_block", "int4"])
    p.add_argument("--inter", type=lambda s: [int(t) for t in s.split(",")], default=[3072, 1536])
    p.add_argument("--tokens", type=lambda s: [int(t) for t in s.split(",")],
                   default=[1, 8, 64, 256, 1024, 4096])
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--replays", type=int, default=20)
    p.add_argument("--list", action="store_true")
    p.add_argument("--grid", choices=("full", "small"), default="full", help="candidate grid (small: decode sweep)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting new (dtype, I, T) cases after this many seconds (what is done is written)")
    p.add_argument("--check", action="store_true",
                   help="CPU rehearsal: tiny shapes in Triton's interpreter, 2 candidates, correctness only, no timing")
    p.add_argument("--out", type=Path, default=ROOT / "kernels" / "hunyuan_plugins_kernels" / "configs")
    args = p.parse_args(argv)

    from hunyuan_plugins_kernels import _config
    from hunyuan_plugins_kernels import experts as X

    tags = {"bf16": "bf16", "fp8": "fp8_w8a8", "fp8_block": "fp8_w8a8_block128", "int4": "int4_w4a16_g128"}
    if args.list:
        dev = torch.cuda.get_device_name().replace(" ", "_") if torch.cuda.is_available() else "<device>"
        for kind in args.dtypes:
            for I in args.inter:
                key = _config.config_key(args.experts, I, args.hidden, tags[kind], dev)
                n = {T: len(candidates(kind, T, args.top_k, args.experts, args.grid)) for T in args.tokens}
                print(f"{key}: candidates per T {n}")
        return 0
    if not torch.cuda.is_available() and not args.check:
        print("tune_moe.py needs a CUDA GPU (use --list to see what it would tune, --check to rehearse on CPU)",
              file=sys.stderr)
        return 2

    import hunyuan_plugins.ops  # noqa: F401
    device = torch.device("cpu" if args.check else "cuda")
    dev = _config.device_name(device)
    E, H, k = args.experts, args.hidden, args.top_k
    act = torch.bfloat16
    if args.check:  # the shapes moe_layer.py --check uses; fp32 (bf16 is broken in the interpreter)
        E, H, k, act = 8, 256, 2, torch.float32
        args.inter, args.tokens = [128], [t for t in args.tokens if t <= 8] or [1]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tables = {op: json.loads((args.out / f"{op}.json").read_text()) if (args.out / f"{op}.json").is_file() else {}
              for op in ("moe_up", "moe_down")}
    for kind in args.dtypes:
        for I in args.inter:
            layer = moe_layer.make_layer("fp32" if (kind == "bf16" and act == torch.float32) else kind,
                                         E, H, I, k, device, act)
            w = {"bf16": lambda: X.prepare_dense(*layer.dense), "fp32": lambda: X.prepare_dense(*layer.dense),
                 "fp8": lambda: X.prepare_fp8_per_tensor(*layer.fp8),
                 "fp8_block": lambda: X.prepare_fp8_block(*layer.fp8_block),
                 "int4": lambda: X.int4_weights(*layer.int4)}[kind]()
            key = _config.config_key(E, I, H, w.tag, dev)
            for T in args.tokens:
                if args.budget_s is not None and time.monotonic() - started > args.budget_s:
                    print(f"{key} T={T}: skipped, --budget-s {args.budget_s:.0f} spent", file=sys.stderr)
                    continue
                g = torch.Generator(device=device).manual_seed(T)
                x = torch.randn(T, H, generator=g, device=device).to(act)
                pools = [torch.randn(4, T, E, generator=g, device=device) for _ in range(4)]
                want = layer.reference(x, pools[0][0])

                def timed(up, down):
                    def fn(xx, logits):
                        tw, ti = torch.ops.hunyuan.moe_route(logits, k, k > 1)
                        return X.fused_experts(xx, w, tw, ti, config=up, down_config=down)
                    try:
                        if moe_layer.rel_err(fn(x, pools[0][0]), want) > moe_layer.CHECK_TOL[layer.kind]:
                            return float("inf")
                        if args.check:
                            return 0.0  # rehearsal: correctness only, the first correct candidate wins
                        return moe_layer.pct(moe_layer.time_graph(fn, x, pools, 4, args.replays), 0.5)
                    except Exception:  # out of resources etc.
                        return float("inf")

                cands = candidates(kind, T, k, E, args.grid)
                cands = cands[:2] if args.check else cands
                default_down = _config.default_config(T, E, device, w.tag)
                best_up = min(cands, key=lambda c: timed(c, default_down))
                down_cands = [dict(c, BLOCK_M=best_up["BLOCK_M"]) for c in cands
                              if c["BLOCK_M"] == best_up["BLOCK_M"]]
                best_down = min(down_cands, key=lambda c: timed(best_up, c))
                us = timed(best_up, best_down)
                if us == float("inf"):
                    print(f"{key} T={T}: no working config", file=sys.stderr)
                    continue
                tables["moe_up"].setdefault(key, {})[str(T)] = best_up
                tables["moe_down"].setdefault(key, {})[str(T)] = best_down
                print(f"{key} T={T}: {us:.1f} us  up={best_up} down={best_down}", flush=True)
                for op, table in tables.items():
                    (args.out / f"{op}.json").write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
