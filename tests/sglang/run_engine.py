"""Run SGLang's offline Engine (CPU, torch_native) on checkpoints; print one JSON line per checkpoint.

Started by tests/sglang/conftest.py in a subprocess with the SGLang venv's python, the test-only
sgl_kernel stub on PYTHONPATH and SGLANG_USE_CPU_ENGINE=1. One Engine per checkpoint, one after
the other, in this one process. Usage:
    python run_engine.py --prompt-ids 1,2,3 --max-new-tokens 8 CKPT [CKPT...]
Output lines: ``RESULT {"path": ..., "tokens": [...], "prompt_logprobs": [...], "seconds": ...}``
"""

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeat", type=int, default=1, help="timed generate() calls after the first")
    args = ap.parse_args()
    import sglang as sgl

    ids = [int(x) for x in args.prompt_ids.split(",")]
    for path in args.paths:
        with open(f"{path}/config.json") as f:
            quantized = "quantization_config" in json.load(f)
        # SGLang refuses fp32 with an fp8/gptq config and has no CPU kernels for them anyway: hide the
        # config from SGLang; our plugin reads it from the files and dequantises at load.
        override = json.dumps({"quantization_config": None}) if quantized else "{}"
        t0 = time.time()
        engine = sgl.Engine(model_path=path, json_model_override_args=override, device="cpu",
                            attention_backend="torch_native", sampling_backend="pytorch", dtype=args.dtype,
                            mem_fraction_static=0.05,
                            max_total_tokens=2048, disable_overlap_schedule=True, chunked_prefill_size=-1,
                            max_running_requests=4, disable_cuda_graph=True, skip_server_warmup=True,
                            log_level="info")
        init_s = time.time() - t0
        try:
            sp = {"max_new_tokens": args.max_new_tokens, "temperature": 0.0, "ignore_eos": True}
            out = engine.generate(input_ids=ids, sampling_params=sp, return_logprob=True, logprob_start_len=0)
            times = []
            for _ in range(args.repeat):
                t1 = time.time()
                engine.generate(input_ids=ids, sampling_params=sp)
                times.append(time.time() - t1)
        finally:
            engine.shutdown()
        meta = out["meta_info"]
        result = {"path": path, "tokens": out["output_ids"],
                  "prompt_logprobs": [lp for lp, _tid, _ in meta["input_token_logprobs"][1:]],
                  "init_seconds": init_s, "generate_seconds": times}
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
