"""SGLang 0.5.23 on CPU: our HunYuanMoEV1ForCausalLM vs SGLang's built-in class, same checkpoint.

    ~/.cache/hunyuan-plugins/venvs/sglang/bin/python benchmarks/sglang_cpu.py [--out DIR]

Checkpoint: the mid-size tiny A13B (hidden 512, 4 layers, 16 experts top-2 + shared, vocab 2048)
in the form Hugging Face hosts A13B (``model_type: hunyuan_v1_moe`` with Tencent's fields and
tensor names, see make_checkpoint) so SGLang's built-in class can read it without our plugin; fp32
weights and compute. The built-in class also needs ``--json-model-override-args
'{"moe_intermediate_size": 512}'`` (SGLang's CPU padding bug; our plugin hooks it instead). Each
class runs in its own subprocess with SGLang's offline Engine (``SGLANG_USE_CPU_ENGINE=1``,
``torch_native`` attention, the test-only ``sgl_kernel`` stand-in from tests/sglang on PYTHONPATH).
The built-in class is selected by ``SGLANG_PLUGINS=none`` (SGLang then loads no plugin of ours); a
crash is reported, not hidden.

Measured per class: engine start, prefill latency (256-token prompt, 1 new token), single-stream
decode (64 new tokens) and batched decode (8 prompts x 32 new tokens); median of 3 after a warm-up.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "tests" / "sglang" / "stub_sgl_kernel"


# SGLang's built-in class needs the CPU padding workaround for the per-layer list (ours hooks it).
BUILTIN_OVERRIDE = {"moe_intermediate_size": 512}


def make_checkpoint(path: Path) -> None:
    """The tiny 'mid' A13B in the form Hugging Face hosts A13B today: Tencent's fields and tensor
    names with ``model_type: hunyuan_v1_moe`` (so transformers reads it without our config class,
    and SGLang's built-in class finds the fields it reads). Experts are sized like the shared
    expert (512), as in the real A13B (3072 both), so every reading of the config agrees."""
    import dataclasses

    from hunyuan_plugins.core import tiny

    tiny.SIZES["bench"] = dataclasses.replace(tiny.SIZES["mid"], expert_intermediate=512)
    tiny.make_tiny(str(path), model="a13b", dialect="tencent", fmt="fp32", size="bench")
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(model_type="hunyuan_v1_moe", head_dim=cfg["attention_head_dim"])
    (path / "config.json").write_text(json.dumps(cfg, indent=2))


def worker(path: str, override: str) -> None:
    import sglang as sgl

    t0 = time.time()
    engine = sgl.Engine(model_path=path, json_model_override_args=override, device="cpu",
                        attention_backend="torch_native", sampling_backend="pytorch", dtype="float32",
                        mem_fraction_static=0.05, max_total_tokens=8192,
                        disable_overlap_schedule=True, chunked_prefill_size=-1, max_running_requests=8,
                        disable_cuda_graph=True, skip_server_warmup=True, log_level="info")
    res = {"start_s": time.time() - t0}
    try:
        prompt = [(i * 37 + 11) % 1900 + 1 for i in range(256)]
        batch = [[(i * 13 + j * 7) % 1900 + 1 for i in range(64)] for j in range(8)]

        def timed(fn, n=3):
            fn()  # warm-up
            runs = []
            for _ in range(n):
                t = time.time()
                fn()
                runs.append(time.time() - t)
            return statistics.median(runs)

        sp = lambda n: {"max_new_tokens": n, "temperature": 0.0, "ignore_eos": True}  # noqa: E731
        res["prefill_256_s"] = timed(lambda: engine.generate(input_ids=prompt, sampling_params=sp(1)))
        dec = timed(lambda: engine.generate(input_ids=prompt[:16], sampling_params=sp(64)))
        res["decode_1x64_tok_s"] = 64 / dec
        bat = timed(lambda: engine.generate(input_ids=batch, sampling_params=sp(32)))
        res["decode_8x32_tok_s"] = 8 * 32 / bat
    finally:
        engine.shutdown()
    print("BENCH " + json.dumps(res), flush=True)


def run(kind: str, path: str, log_dir: Path) -> dict:
    env = dict(os.environ, SGLANG_USE_CPU_ENGINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(STUB)] + ([os.environ["PYTHONPATH"]]
                                                         if os.environ.get("PYTHONPATH") else [])))
    env.pop("SGLANG_EXTERNAL_MODEL_PACKAGE", None)
    override = "{}"
    if kind == "builtin":
        env["SGLANG_PLUGINS"] = "none"  # whitelist naming no plugin: ours is not loaded
        override = json.dumps(BUILTIN_OVERRIDE)
    else:
        env.pop("SGLANG_PLUGINS", None)
    log = log_dir / f"{kind}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", path, "--override", override], stdout=f,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    text = log.read_text()
    try:  # anything SGLang left in the worker's process group
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    for line in text.splitlines():
        if line.startswith("BENCH "):
            out = json.loads(line[6:])
            out["class"] = ("hunyuan_plugins.sglang.model" if "served by hunyuan_plugins.sglang.model" in text
                            else "sglang.srt.models.hunyuan (built-in)")
            return out
    errors = [ln.strip() for ln in text.splitlines()
              if ("Error:" in ln or "Error(" in ln) and not ln.lstrip().startswith("File")]
    return {"class": "sglang.srt.models.hunyuan (built-in)" if kind == "builtin" else "ours",
            "crashed": errors[-1] if errors else f"exit {proc.returncode}", "log": str(log)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--override", default="{}")
    ap.add_argument("--out", default=None, help="directory for the checkpoint and logs (default: a temp dir)")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.override)
    import sglang
    import torch
    out = Path(args.out or tempfile.mkdtemp(prefix="sglang-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "a13b-hf-mid"
    if not (ckpt / "config.json").exists():
        make_checkpoint(ckpt)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(f"device: CPU {cpu}, {os.cpu_count()} cores visible; torch threads {torch.get_num_threads()}")
    print(f"versions: sglang {sglang.__version__}, torch {torch.__version__}, python {platform.python_version()}")
    print(f"checkpoint: {ckpt} (tiny A13B hidden 512, 4 layers, 16 experts top-2 + shared, "
          "HF-hosted config form, fp32)")
    print(f"built-in class gets --json-model-override-args {json.dumps(BUILTIN_OVERRIDE)}")
    results = {kind: run(kind, str(ckpt), out) for kind in ("ours", "builtin")}
    cols = [("start_s", "engine start [s]"), ("prefill_256_s", "prefill 256 tok [s]"),
            ("decode_1x64_tok_s", "decode 1x64 [tok/s]"), ("decode_8x32_tok_s", "decode 8x32 [tok/s]")]
    print(f"\n| metric | ours ({results['ours']['class']}) | SGLang built-in |")
    print("|---|---|---|")
    for key, label in cols:
        cells = []
        for kind in ("ours", "builtin"):
            r = results[kind]
            cells.append(f"{r[key]:.3f}" if key in r else ("crashed" if "crashed" in r else "-"))
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    for kind, r in results.items():
        if "crashed" in r:
            print(f"\n{kind}: CRASHED: {r['crashed']}\n  (log: {r['log']})")
    print("\nJSON " + json.dumps(results))


if __name__ == "__main__":
    main()
