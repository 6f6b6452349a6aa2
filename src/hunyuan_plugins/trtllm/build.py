"""``hunyuan-trtllm-build``: a Hunyuan checkpoint -> everything TensorRT-LLM 1.2.x needs to serve it.

    hunyuan-trtllm-build --model DIR --output OUT [--tp N] [--ep N] [--dtype auto|bfloat16|float16|float32]
                         [--quant fp8|int4] [--kv-cache-dtype auto|fp8] [--max-batch-size 128]
                         [--moe-backend CUTLASS] [--engine-checkpoint] [--build-engine]

writes what TensorRT-LLM's PyTorch backend serves::

    OUT/pytorch/                      model dir for the PyTorch backend (our model classes)
        config.json, model*.safetensors, hf_quant_config.json (quantized), tokenizer/generation files
    OUT/extra_llm_api_options.yaml    LLM-API options: MoE backend, KV-cache dtype, CUDA-graph batch sizes
    OUT/serve.sh                      the serve command, ready to run
    OUT/build.json                    summary

and, only with ``--engine-checkpoint`` (opt-in)::

    OUT/engine_checkpoint/            TensorRT-engine-backend checkpoint: config.json + rank{N}.safetensors

No TensorRT-LLM release has a Hunyuan network for the TensorRT engine backend, so that checkpoint
cannot be built into an engine today; it is the input such a network would take. (``--no-engine-checkpoint``,
the old opt-out, is still accepted and does nothing.)

Everything runs on CPU with torch + safetensors; no TensorRT-LLM import. The engine build itself is
not available (see :func:`engine_build_status`), and the tool says why.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys

from hunyuan_plugins.config import HunyuanConfigError
from hunyuan_plugins.core.checkpoint import Checkpoint, CheckpointError
from hunyuan_plugins.trtllm.convert import (
    TRTLLM_PINNED_VERSION,
    BuildError,
    Plan,
    SafetensorsWriter,
    converted_tensors,
    engine_config,
    hf_quant_config,
    make_plan,
    tp_slice,
)

MAX_SHARD_BYTES = 4 << 30
_SKIP_FILES = ("config.json", "model.safetensors.index.json", "hf_quant_config.json")


def plugin_module_dir() -> str:
    """The directory to pass as ``trtllm-serve --custom_module_dirs``: a package that imports ours."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "custom_module", "hunyuan_trtllm_plugin")


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but never fail a build over a progress bar
        class _Bar:
            def __init__(self):
                self.n = 0

            def update(self, k=1):
                self.n += k
                if self.n == total or self.n % max(1, total // 20) == 0:
                    print(f"{desc}: {self.n}/{total}", file=sys.stderr)

            def close(self):
                pass
        return _Bar()
    return tqdm(total=total, desc=desc, unit="tensor", file=sys.stderr)


def _pytorch_config(ckpt: Checkpoint, plan: Plan, max_seq_len: int | None = None) -> dict:
    raw = dict(ckpt.cfg.raw)
    raw["torch_dtype"] = plan.dtype
    if max_seq_len is not None and max_seq_len > ckpt.cfg.max_position_embeddings:
        # TensorRT-LLM sizes the RoPE table from max_position_embeddings and caps max_seq_len at it
        # (times rope_scaling.factor, 1.0 for Hunyuan); Hunyuan's alpha-NTK base is static, so serving
        # past the config's value is exact: raise it to the served context, keep the original.
        raw["max_position_embeddings"] = max_seq_len
        raw["hunyuan_plugins_source_max_position_embeddings"] = ckpt.cfg.max_position_embeddings
    if plan.quant is not None:
        # TensorRT-LLM 1.2.x reads hf_quant_config.json (ModelOpt) first; Tencent's per-tensor
        # quantization_config in config.json is kept under our own key, for provenance only.
        raw["hunyuan_plugins_source_quantization_config"] = raw.pop("quantization_config")
    raw["hunyuan_plugins"] = {"converted_for": f"tensorrt_llm=={TRTLLM_PINNED_VERSION}",
                              "tensor_names": "canonical (hunyuan_plugins.core.checkpoint)"}
    return raw


def llm_api_options_yaml(plan: Plan, kv_cache_dtype: str, max_batch_size: int, moe_backend: str,
                         max_seq_len: int | None = None) -> str:
    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch_size)
    lines = [
        f"# TensorRT-LLM {TRTLLM_PINNED_VERSION} LLM-API options (trtllm-serve --extra_llm_api_options FILE,",
        "# or LLM(model=..., **yaml.safe_load(FILE))), written by hunyuan-trtllm-build",
        f"# for {plan.cfg.architecture}: tp={plan.tp} ep={plan.ep} dtype={plan.dtype} quant={plan.quant or 'none'}",
    ]
    if max_seq_len is not None:
        lines += [f"max_seq_len: {max_seq_len}"]
    if plan.cfg.is_moe:
        lines += ["moe_config:", f"  backend: {moe_backend}"]
    lines += [
        "kv_cache_config:",
        f"  dtype: {kv_cache_dtype}",
        "  free_gpu_memory_fraction: 0.85",
        "  enable_block_reuse: true",
        "cuda_graph_config:",
        "  enable_padding: true",
        f"  batch_sizes: [{', '.join(map(str, sizes))}]",
    ]
    return "\n".join(lines) + "\n"


def serve_command(out: str, plan: Plan, trust_remote_code: bool) -> list[list[str]]:
    model_dir = os.path.join(out, "pytorch")
    args = [model_dir, "--backend", "pytorch", "--tp_size", str(plan.tp), "--ep_size", str(plan.ep),
            "--extra_llm_api_options", os.path.join(out, "extra_llm_api_options.yaml")]
    if trust_remote_code:
        args.append("--trust_remote_code")
    return [["hunyuan-trtllm", "serve", *args],
            ["trtllm-serve", *args, "--custom_module_dirs", plugin_module_dir()]]


NO_HUNYUAN_NETWORK = ("neither TensorRT-LLM nor hunyuan-plugins has a Hunyuan network definition for the TensorRT "
                      "engine backend (no tensorrt_llm/models/hunyuan in any release, nothing for trtllm-build "
                      "--model_cls_file yet)")


def engine_checkpoint_note(eng_dir: str) -> str:
    """What --engine-checkpoint output is, and why it cannot become an engine today."""
    return (f"{eng_dir} is the input a Hunyuan engine network would take, but {NO_HUNYUAN_NETWORK}, so it cannot "
            "be built into a TensorRT engine today. Serve with the PyTorch backend (serve.sh).")


def engine_build_status() -> tuple[bool, str]:
    """(can_build, why). Never true today: see the message."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("tensorrt_llm")
    except PackageNotFoundError:
        return False, ("TensorRT-LLM is not installed here (its PyPI packages are stubs that download the real wheel "
                       "from pypi.nvidia.com), so no TensorRT engine can be built.")
    if not installed.startswith("1.2."):
        return False, (f"the installed TensorRT-LLM is {installed}; its TensorRT engine backend exists only up to "
                       f"1.2.x (removed upstream afterwards). This builder is pinned to {TRTLLM_PINNED_VERSION}.")
    return False, (f"TensorRT-LLM {installed} has the engine backend, but {NO_HUNYUAN_NETWORK}, so the engine cannot "
                   "be built; serve with the PyTorch backend (serve.sh).")


def build(model: str, output: str, tp: int = 1, ep: int = 1, dtype: str = "auto", quant: str | None = None,
          kv_cache_dtype: str = "auto", max_batch_size: int = 128, moe_backend: str = "CUTLASS",
          engine_checkpoint: bool = False, progress: bool = True, max_seq_len: int | None = None) -> dict:
    """Validate, convert and write; returns a summary dict (also written to OUT/build.json).

    ``max_seq_len``: the context to serve. Past the config's ``max_position_embeddings`` (A13B's
    says 32768, trained to 256K) the written config is raised to it, so TensorRT-LLM's RoPE table and
    its max_seq_len cap follow (exact: Hunyuan's alpha-NTK RoPE base does not depend on length).

    ``engine_checkpoint=True`` also writes OUT/engine_checkpoint/ (TensorRT engine backend), which no
    TensorRT-LLM release can build into an engine today (see :func:`engine_checkpoint_note`).
    """
    ckpt = Checkpoint(model)                      # validates every tensor against the config, reads nothing yet
    plan = make_plan(ckpt, tp, ep, dtype, quant)
    if kv_cache_dtype not in ("auto", "fp8"):
        raise BuildError(f"--kv-cache-dtype {kv_cache_dtype!r}: expected auto or fp8")
    if max_batch_size < 1:
        raise BuildError(f"--max-batch-size must be >= 1, got {max_batch_size}")
    if max_seq_len is not None and (isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int)
                                    or max_seq_len < 1):
        raise BuildError(f"--max-seq-len must be a positive integer, got {max_seq_len!r}")
    pt_dir = os.path.join(output, "pytorch")
    eng_dir = os.path.join(output, "engine_checkpoint")
    os.makedirs(pt_dir, exist_ok=True)

    # --- tensors: one pass over the source, writing the PyTorch dir and every rank file together ---
    shards: list[SafetensorsWriter] = []
    weight_map: dict[str, int] = {}

    def pt_writer() -> SafetensorsWriter:
        if not shards or shards[-1].nbytes >= MAX_SHARD_BYTES:
            shards.append(SafetensorsWriter(os.path.join(pt_dir, f"part-{len(shards)}.tmp")))
        return shards[-1]

    ranks: list[SafetensorsWriter] = []
    if engine_checkpoint:
        os.makedirs(eng_dir, exist_ok=True)
        ranks = [SafetensorsWriter(os.path.join(eng_dir, f"rank{r}.safetensors")) for r in range(plan.tp)]
    bar = _progress(len(ckpt.entries), "converting") if progress else None
    n_out = 0
    for name, t in converted_tensors(ckpt, plan, None if bar is None else bar.update):
        w = pt_writer()
        w.add(name, t)
        weight_map[name] = len(shards) - 1
        for r, rw in enumerate(ranks):
            part = tp_slice(name, t, plan, r)
            if part is not None:
                rw.add(name, part)
        n_out += 1
    if bar is not None:
        bar.close()

    # --- PyTorch-backend dir: shards, index, config, quant config, tokenizer & friends ---
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for w, fname in zip(shards, names):
        w.close()
        os.replace(w.path, os.path.join(pt_dir, fname))
    if len(shards) > 1:
        with open(os.path.join(pt_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": sum(w.nbytes for w in shards)},
                       "weight_map": {n: names[i] for n, i in sorted(weight_map.items())}}, f, indent=2)
    elif os.path.exists(os.path.join(pt_dir, "model.safetensors.index.json")):
        os.unlink(os.path.join(pt_dir, "model.safetensors.index.json"))
    with open(os.path.join(pt_dir, "config.json"), "w") as f:
        json.dump(_pytorch_config(ckpt, plan, max_seq_len), f, indent=2)
    qc = hf_quant_config(plan)
    if qc is not None:
        with open(os.path.join(pt_dir, "hf_quant_config.json"), "w") as f:
            json.dump(qc, f, indent=2)
    for entry in sorted(os.listdir(model)):
        src = os.path.join(model, entry)
        if os.path.isfile(src) and not entry.endswith(".safetensors") and entry not in _SKIP_FILES:
            shutil.copy2(src, os.path.join(pt_dir, entry))

    # --- engine-backend checkpoint ---
    for rw in ranks:
        rw.close()
    if engine_checkpoint:
        with open(os.path.join(eng_dir, "config.json"), "w") as f:
            json.dump(engine_config(plan), f, indent=2)

    # --- options, serve command ---
    with open(os.path.join(output, "extra_llm_api_options.yaml"), "w") as f:
        f.write(llm_api_options_yaml(plan, kv_cache_dtype, max_batch_size, moe_backend, max_seq_len))
    trust = ckpt.cfg.model_type == "hunyuan"   # Tencent's dialect ships its own configuration_hunyuan.py
    cmds = serve_command(os.path.abspath(output), plan, trust)
    with open(os.path.join(output, "serve.sh"), "w") as f:
        f.write("#!/usr/bin/env bash\n# Serve with TensorRT-LLM "
                f"{TRTLLM_PINNED_VERSION} (PyTorch backend) and the hunyuan-plugins model classes.\n"
                "# Equivalent without the wrapper:\n#   " + shlex.join(cmds[1]) + "\n"
                "exec " + shlex.join(cmds[0]) + ' "$@"\n')
    os.chmod(os.path.join(output, "serve.sh"), 0o755)
    _can_build, why = engine_build_status()
    summary = {"architecture": ckpt.cfg.architecture, "dtype": plan.dtype, "quant": plan.quant, "tp": plan.tp,
               "ep": plan.ep, "tensors": n_out, "pytorch_dir": pt_dir,
               "engine_checkpoint": eng_dir if engine_checkpoint else None,
               "engine_checkpoint_note": engine_checkpoint_note(eng_dir) if engine_checkpoint else None,
               "engine_built": False,
               "engine_status": why, "serve": [shlex.join(c) for c in cmds],
               "kv_cache_layers": ckpt.cfg.num_kv_layers, "trtllm_version": TRTLLM_PINNED_VERSION}
    with open(os.path.join(output, "build.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hunyuan-trtllm-build", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="Hunyuan checkpoint directory (any dialect, bf16/fp32/fp8/gptq)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel size (default 1)")
    p.add_argument("--ep", type=int, default=1, help="expert parallel size, divides --tp (default 1)")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32 (default: the checkpoint's)")
    p.add_argument("--quant", choices=("fp8", "int4"), default=None,
                   help="expect this quantized checkpoint format (default: whatever the checkpoint is)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "fp8"))
    p.add_argument("--max-batch-size", type=int, default=128, help="largest CUDA-graph batch size (default 128)")
    p.add_argument("--max-seq-len", type=int, default=None,
                   help="context to serve; past the config's max_position_embeddings it is raised to this "
                        "(exact for Hunyuan's static alpha RoPE; A13B is trained to 262144)")
    p.add_argument("--moe-backend", default="CUTLASS", help="TensorRT-LLM moe_config.backend (default CUTLASS)")
    eng = p.add_mutually_exclusive_group()
    eng.add_argument("--engine-checkpoint", action="store_true",
                     help="also write OUT/engine_checkpoint/ (TensorRT-engine-backend checkpoint; no TensorRT-LLM "
                          "release has a Hunyuan engine network, so it cannot be built into an engine today)")
    eng.add_argument("--no-engine-checkpoint", action="store_true",
                     help="deprecated, does nothing: the engine checkpoint is written only with --engine-checkpoint")
    p.add_argument("--build-engine", action="store_true",
                   help="also build a TensorRT engine (fails with the reason: not available, see docs/trtllm.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.no_engine_checkpoint:
        print("hunyuan-trtllm-build: note: --no-engine-checkpoint is deprecated and does nothing (the engine "
              "checkpoint is now written only with --engine-checkpoint)", file=sys.stderr)
    if not os.path.isdir(a.model):
        print(f"hunyuan-trtllm-build: --model {a.model}: not a directory", file=sys.stderr)
        return 2
    try:
        s = build(a.model, a.output, a.tp, a.ep, a.dtype, a.quant, a.kv_cache_dtype, a.max_batch_size,
                  a.moe_backend, a.engine_checkpoint, not a.quiet, a.max_seq_len)
    except (BuildError, CheckpointError, HunyuanConfigError, FileNotFoundError, ValueError) as e:
        print(f"hunyuan-trtllm-build: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {s['tensors']} tensors for {s['architecture']} (dtype={s['dtype']}, quant={s['quant'] or 'none'}, "
          f"tp={s['tp']}, ep={s['ep']}, KV-cache layers={s['kv_cache_layers']})")
    print(f"  PyTorch-backend model: {s['pytorch_dir']}")
    print(f"  LLM-API options: {os.path.join(a.output, 'extra_llm_api_options.yaml')}")
    print(f"  serve: {s['serve'][0]}  (or {os.path.join(a.output, 'serve.sh')})")
    if s["engine_checkpoint"]:
        ranks = "rank0.safetensors" if s["tp"] == 1 else f"rank0..rank{s['tp'] - 1}.safetensors"
        print(f"  TensorRT-engine-backend checkpoint: {s['engine_checkpoint']} (config.json + {ranks})")
        print(f"  note: {s['engine_checkpoint_note']}")
    elif os.path.isdir(os.path.join(a.output, "engine_checkpoint")):
        print(f"  note: {os.path.join(a.output, 'engine_checkpoint')} is left over from an earlier build and was not "
              "updated (pass --engine-checkpoint to rewrite it)")
    print(f"  TensorRT engine: not built. {s['engine_status']}")
    if a.build_engine:
        print("hunyuan-trtllm-build: error: --build-engine: " + s["engine_status"], file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
