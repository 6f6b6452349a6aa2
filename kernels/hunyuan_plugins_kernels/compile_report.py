"""Ahead-of-time compile report: every shipped kernel configuration, compiled for GPUs that are
not present (no GPU needed), with registers, spills, shared memory and the MMA instructions used.

    python -m hunyuan_plugins_kernels.compile_report                  # sm_90a, sm_89, sm_100a
    python -m hunyuan_plugins_kernels.compile_report --targets sm_90a --out benchmarks/results

What is compiled: the launches the public launchers really make (``_launch.recording()`` over
meta tensors, so grids, strides, constexprs and options are theirs, not a copy), for A13B's MoE
layer (H=4096, E=64, top-8, I = 3072/TP for TP 1, 2, 4, 8) in every weight format (fp32, fp16,
bf16, fp8 e4m3 per-tensor W8A8, fp8 128x128 block, int4 W4A16 g128), with every tile config that
ships (the GPU rules of ``configs/default.json`` and every entry of tuned ``configs/moe_*.json``),
each at SPLIT_K 1 and 2 (split-K is picked per launch at run time), plus the split-K SwiGLU
finish, the routing kernels and the top-k sum at T in {1, 64, 4096}. Arguments are specialised as the
JIT would specialise them on a GPU (16-byte aligned pointers, integer divisibility).

Per compile: registers/thread and stack bytes (spills) from the bundled ``cuobjdump
--dump-resource-usage``, dynamic shared memory from Triton's metadata, num_warps/num_stages, and
from the PTX whether the tensor-core path is Hopper's ``wgmma`` or ``mma.sync``, and for fp8
whether the MMA itself is e4m3 (not an upcast to 16 bit).

Exit status 1 when, on a ``--fail-on`` target (default sm_90a: H100/H200), a shipped config
fails to compile, spills (stack > 0) or needs more shared memory than the target has. The other
targets are reported for information. Needs ``TRITON_INTERPRET`` unset (the interpreter replaces
the compiler). This is a compile report: it measures nothing about speed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton

from hunyuan_plugins_kernels import _config, _launch
from hunyuan_plugins_kernels import experts as X
from hunyuan_plugins_kernels.routing import topk_softmax

# target name -> (GPUTarget args, max dynamic shared memory per block in bytes (opt-in), GPUs)
TARGETS = {
    "sm_90a": (("cuda", 90, 32), 227 * 1024, "H100 / H200"),
    "sm_89": (("cuda", 89, 32), 99 * 1024, "L4 / L40S"),
    "sm_100a": (("cuda", 100, 32), 227 * 1024, "B200"),
}
A13B = dict(H=4096, E=64, top_k=8, I=3072)
TPS = (1, 2, 4, 8)
FORMATS = ("fp32", "fp16", "bf16", "fp8", "fp8_block", "int4")
ROUTING_TOKENS = (1, 64, 4096)
GEMM_TOKENS = 64  # runtime ints only: the tile config, not T, decides the compiled kernel
INT4_GROUP = 128


def _meta(*shape, dtype=torch.bfloat16):
    return torch.empty(*shape, dtype=dtype, device="meta")


def expert_weights(fmt: str, E: int, H: int, I: int) -> tuple[X.ExpertWeights, torch.dtype]:
    """(weights on the meta device in the kernel layout, activation dtype) for one format."""
    act = {"fp32": torch.float32, "fp16": torch.float16}.get(fmt, torch.bfloat16)
    if fmt in ("fp32", "fp16", "bf16"):
        return X.prepare_dense(_meta(E, 2 * I, H, dtype=act), _meta(E, H, I, dtype=act)), act
    f8 = torch.float8_e4m3fn
    if fmt == "fp8":
        return X.prepare_fp8_per_tensor(_meta(E, 2 * I, H, dtype=f8), _meta(E, H, I, dtype=f8),
                                        _meta(E, 2, dtype=torch.float32), _meta(E, 1, dtype=torch.float32),
                                        # input scales per expert and per gate / up (the exact
                                        # form, which quantizes A twice: the heavier variant)
                                        _meta(E, 2, dtype=torch.float32), _meta(E, dtype=torch.float32)), act
    if fmt == "fp8_block":
        return X.prepare_fp8_block(_meta(E, 2 * I, H, dtype=f8), _meta(E, H, I, dtype=f8),
                                   _meta(E, 2 * I // 128, H // 128, dtype=torch.float32),
                                   _meta(E, H // 128, I // 128, dtype=torch.float32)), act
    if fmt == "int4":
        G = INT4_GROUP
        return X.int4_weights(_meta(E, H // 8, 2 * I, dtype=torch.int32), _meta(E, H // G, 2 * I, dtype=torch.float16),
                              _meta(E, I // 8, H, dtype=torch.int32), _meta(E, I // G, H, dtype=torch.float16)), act
    raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")


def shipped_configs(tag: str) -> list[tuple[str, dict | None, dict | None, dict]]:
    """(source, up config, down config, shape) for every tile config that ships for the config-key
    dtype ``tag``: the default GPU rules a launch of that dtype can reach (in order, up to the
    first catch-all) and every tuned entry of that dtype."""
    out = []
    for i, rule in _config.reachable_rules("gpu", tag):
        cfg = _config.tile_fields(rule)
        for tp in TPS:
            out.append((f"default.json gpu[{i}]", cfg, cfg, dict(A13B, I=A13B["I"] // tp, tp=tp)))
    up, down = _config._load("moe_up"), _config._load("moe_down")
    for key, table in up.items():
        fields = dict(kv.split("=", 1) for kv in key.split(","))
        if fields["dtype"] != tag:
            continue
        shape = dict(E=int(fields["E"]), I=int(fields["N"]), H=int(fields["K"]), top_k=A13B["top_k"], tp=None)
        for m, cfg in table.items():
            out.append((f"moe_up.json {key} M={m}", cfg, down.get(key, {}).get(m, cfg), shape))
    return out


def record_layer(fmt: str, shape: dict, T: int, up: dict | None, down: dict | None):
    """The launches of one MoE layer (routing + experts) as the launchers make them."""
    w, act = expert_weights(fmt, shape["E"], shape["H"], shape["I"])
    with _launch.recording() as launches:
        weights, ids, _ = topk_softmax(_meta(T, shape["E"], dtype=act), shape["top_k"], True)
        X.fused_experts(_meta(T, shape["H"], dtype=act), w, weights, ids,
                        config=up, down_config=down)
    return launches, w.tag


def _role(launch: _launch.Launch) -> str:
    if launch.name == "_moe_gemm_kernel":
        return "gemm up (SwiGLU)" if launch.meta.get("SWIGLU") else "gemm down"
    return launch.name.strip("_").replace("_kernel", "")


class Compiler:
    """Compiles recorded launches for one target with the JIT's own argument specialisation."""

    def __init__(self, target_name: str):
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend

        args, self.smem_limit, self.gpus = TARGETS[target_name]
        self.name = target_name
        self.target = GPUTarget(*args)
        self.backend = make_backend(self.target)
        self.cache: dict[str, dict] = {}
        self.cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"

    def _specialise(self, launch: _launch.Launch):
        from triton.runtime.jit import create_function_from_signature

        k = launch.kernel
        binder = create_function_from_signature(k.signature, k.params, self.backend)
        bound, spec, options = binder(*launch.args, **launch.meta)
        return k._pack_args(self.backend, launch.meta, bound, spec, options)

    def compile(self, launch: _launch.Launch) -> dict:
        from triton.compiler import ASTSource

        options, signature, constexprs, attrs = self._specialise(launch)
        key = repr((launch.name, sorted(signature.items()), sorted(constexprs.items(), key=str),
                    sorted(attrs.items(), key=str), sorted(options.__dict__.items(), key=str)))
        if key in self.cache:
            return self.cache[key]
        info = {"num_warps": options.num_warps, "num_stages": options.num_stages}
        try:
            ck = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs), target=self.target,
                                options=options.__dict__)
        except Exception as e:  # noqa: BLE001 -- the report records any compiler failure
            root = e
            while root.__cause__ is not None:  # Triton nests the failing call sites; the cause is innermost
                root = root.__cause__
            lines = [ln for ln in str(root).strip().splitlines() if ln.strip() and ln.strip() != "^"]
            info["error"] = f"{type(root).__name__}: {lines[-1] if lines else ''}"[:300]
            self.cache[key] = info
            return info
        ptx = ck.asm["ptx"]
        info.update(self._resources(ck.asm["cubin"]), shared=ck.metadata.shared,
                    wgmma="wgmma.mma_async" in ptx, tcgen05="tcgen05.mma" in ptx, mma_sync="mma.sync" in ptx,
                    mma_e4m3=bool(re.search(r"(wgmma\.mma_async|mma\.sync)\S*e4m3|tcgen05\.mma\S*kind::f8f6f4", ptx)))
        self.cache[key] = info
        return info

    def _resources(self, cubin: bytes) -> dict:
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(cubin)
            f.flush()
            out = subprocess.run([str(self.cuobjdump), "--dump-resource-usage", f.name], capture_output=True,
                                 text=True, check=True).stdout
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
        if not m:
            raise RuntimeError(f"cuobjdump printed no resource line:\n{out}")
        return {"registers": int(m[1]), "stack": int(m[2]), "static_shared": int(m[3]), "local": int(m[4])}

    def problems(self, info: dict) -> list[str]:
        if "error" in info:
            return ["does not compile"]
        out = []
        if info["stack"] > 0:
            out.append(f"spills ({info['stack']} B stack)")
        if info["shared"] + info["static_shared"] > self.smem_limit:
            out.append(f"shared {info['shared'] + info['static_shared']} B > {self.smem_limit} B")
        return out


def build_rows(targets: list[str], formats: list[str], tps: list[int] | None = None) -> list[dict]:
    rows = []
    for tname in targets:
        comp = Compiler(tname)
        for fmt in formats:
            tag = expert_weights(fmt, 8, 256, 128)[0].tag
            for source, up, down, shape in shipped_configs(tag):
                if tps and shape["tp"] is not None and shape["tp"] not in tps:
                    continue
                # split-K is chosen per launch at run time (experts.split_k): compile both variants
                for split in (1, 2):
                    su, sd = (up, down) if split == 1 else (dict(up, SPLIT_K=2), dict(down, SPLIT_K=2))
                    launches, tag = record_layer(fmt, shape, GEMM_TOKENS, su, sd)
                    for launch in launches:
                        if launch.name in ("_moe_gemm_kernel", "_swiglu_sum_kernel"):
                            rows.append(_row(comp, launch, source, fmt, tag, shape, GEMM_TOKENS))
        for T in ROUTING_TOKENS:  # routing and the top-k sum do not depend on the weight format
            launches, _ = record_layer("bf16", A13B | {"tp": 1}, T, None, None)
            for launch in launches:
                if launch.name != "_moe_gemm_kernel":
                    rows.append(_row(comp, launch, "launcher default", "bf16", "bf16", A13B | {"tp": 1}, T))
    return rows


def _row(comp: Compiler, launch: _launch.Launch, source: str, fmt: str, tag: str, shape: dict, T: int) -> dict:
    info = comp.compile(launch)
    tiles = {k: launch.meta[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "SPLIT_K", "BLOCK_H",
                                          "BLOCK_T", "BLOCK_E", "BLOCK_S") if k in launch.meta}
    return dict(target=comp.name, kernel=_role(launch), format=fmt, tag=tag, source=source, tp=shape.get("tp"),
                E=shape["E"], H=shape["H"], I=shape["I"], T=T, grid=list(launch.grid), tiles=tiles, **info,
                problems=comp.problems(info))


def static_estimate(H: int, E: int, k: int, I: int) -> list[dict]:
    """Bytes and FLOPs one layer must move/do, from shapes (uniform routing). Not a measurement."""
    bytes_per_weight = {"bf16": 2, "fp8": 1, "int4": 0.5 + 2 / INT4_GROUP}
    out = []
    for T in (1, 8, 64, 256, 1024, 4096):
        hit = E * (1 - (1 - k / E) ** T)
        row = {"T": T, "experts_hit": round(hit, 1), "gflop": 6 * T * k * H * I / 1e9}
        for fmt, b in bytes_per_weight.items():
            row[f"{fmt}_MB"] = hit * 3 * H * I * b / 1e6 + 2 * T * H * 2 / 1e6
        out.append(row)
    return out


def grouped(rows: list[dict]) -> list[dict]:
    """One entry per distinct compiled kernel; ``tp`` lists the TP shards (I = 3072/TP) sharing it."""
    groups: dict = {}
    for r in rows:
        key = (r["target"], r["kernel"], r["format"], json.dumps(r["tiles"]), r.get("num_warps"), r.get("num_stages"),
               r.get("error"), r.get("registers"), r.get("stack"), r.get("shared"), r["source"])
        groups.setdefault(key, []).append(r)
    out = []
    for rs in groups.values():
        tps = sorted({x["tp"] for x in rs if x["tp"]})
        out.append(dict({k: v for k, v in rs[0].items() if k not in ("tp", "I", "grid")}, tp=tps,
                        I=sorted({x["I"] for x in rs}, reverse=True)))
    return out


def markdown(rows: list[dict], env: dict, fail_on: list[str]) -> str:
    lines = ["# Kernel compile report (ahead of time, no GPU)", "",
             "| key | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env.items()]
    lines += ["", f"Fails on: {', '.join(fail_on)} (a shipped config that does not compile, spills, or needs more "
              "shared memory than the target). Other targets: for information. One row per distinct compiled "
              "kernel; `TP` lists the A13B shards (I = 3072/TP) that share it. Tiles: BLOCK_M x BLOCK_N x BLOCK_K x "
              "GROUP_M x SPLIT_K for the GEMMs (split-K is picked per launch at small T; both variants are compiled), "
              "the launchers' block sizes for the others.", ""]
    cols = ["target", "kernel", "format", "tiles", "warps/stages", "TP", "regs", "stack B", "shared KB", "MMA",
            "fp8 e4m3 MMA", "status"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in grouped(rows):
        tiles = "x".join(str(v) for v in r["tiles"].values())
        tps = ",".join(str(t) for t in r["tp"]) or "-"
        if "error" in r:
            cells = [tiles, f"{r['num_warps']}/{r['num_stages']}", tps, "-", "-", "-", "-", "-", f"**{r['error']}**"]
        else:
            mma = "wgmma" if r["wgmma"] else "tcgen05" if r["tcgen05"] else "mma.sync" if r["mma_sync"] else "none"
            e4m3 = ("yes" if r["mma_e4m3"] else "**no (upcast)**") if r["format"].startswith("fp8") and \
                r["kernel"].startswith("gemm") else "-"
            status = "; ".join(r["problems"]) if r["problems"] else "ok"
            if r["problems"] and r["target"] in fail_on:
                status = f"**FAIL: {status}**"
            cells = [tiles, f"{r['num_warps']}/{r['num_stages']}", tps, str(r["registers"]), str(r["stack"]),
                     f"{(r['shared'] + r['static_shared']) / 1024:.1f}", mma, e4m3, status]
        lines.append("| " + " | ".join([r["target"], r["kernel"], r["format"]] + cells) + " |")
    est = static_estimate(A13B["H"], A13B["E"], A13B["top_k"], A13B["I"])
    lines += ["", "## Static estimate (from shapes, not a measurement)", "",
              "One A13B layer at TP 1, uniform routing: weights of the experts hit + bf16 activations in/out. "
              "Divide by the HBM bandwidth (H100 3.35 TB/s, H200 4.8 TB/s) for the memory-bound time "
              "(../shared/facts/roofline.txt).", "",
              "| T | experts hit | GFLOP | bf16 MB | fp8 MB | int4 g128 MB | bf16 µs @ H200 | int4 µs @ H200 |",
              "|---|---|---|---|---|---|---|---|"]
    for e in est:
        lines.append(f"| {e['T']} | {e['experts_hit']} | {e['gflop']:.2f} | {e['bf16_MB']:.0f} | {e['fp8_MB']:.0f} | "
                     f"{e['int4_MB']:.0f} | {e['bf16_MB'] / 4.8e6 * 1e6:.1f} | {e['int4_MB'] / 4.8e6 * 1e6:.1f} |")
    return "\n".join(lines) + "\n"


def environment() -> dict:
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    try:
        ptxas_version = subprocess.run([str(ptxas), "--version"], capture_output=True, text=True).stdout.strip()
        ptxas_version = ptxas_version.splitlines()[-1]
    except OSError:
        ptxas_version = None
    return {"date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "triton": triton.__version__, "torch": torch.__version__, "ptxas": ptxas_version,
            "python": sys.version.split()[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", type=lambda s: s.split(","), default=list(TARGETS))
    p.add_argument("--fail-on", type=lambda s: s.split(","), default=["sm_90a"])
    p.add_argument("--formats", type=lambda s: s.split(","), default=list(FORMATS))
    p.add_argument("--tp", type=lambda s: [int(t) for t in s.split(",")], default=None)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    if _config.interpreting():
        print("compile_report: TRITON_INTERPRET is set; the interpreter replaces the compiler. "
              "Run it with TRITON_INTERPRET unset (env -u TRITON_INTERPRET ...).", file=sys.stderr)
        return 2
    for t in args.targets + args.fail_on:
        if t not in TARGETS:
            p.error(f"unknown target {t!r}; choose from {list(TARGETS)}")
    env = environment()
    rows = build_rows(args.targets, args.formats, args.tp)
    md = markdown(rows, env, args.fail_on)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compile_report.md").write_text(md)
    (args.out / "compile_report.json").write_text(
        json.dumps({"environment": env, "kernels": grouped(rows)}, separators=(",", ":")) + "\n")
    print(md)
    failed = [r for r in rows if r["target"] in args.fail_on and r["problems"]]
    for r in failed:
        print(f"FAIL {r['target']} {r['kernel']} {r['format']} {r['tiles']} TP{r['tp']}: {'; '.join(r['problems'])}"
              + (f" ({r['error']})" if "error" in r else ""), file=sys.stderr)
    print(f"# wrote {args.out / 'compile_report.md'} and .json; {len(failed)} failing row(s) on {args.fail_on}",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
