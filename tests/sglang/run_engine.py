"""Run SGLang's offline Engine (CPU, torch_native) on checkpoints; print one JSON line per checkpoint.

Started by tests/sglang/conftest.py in a subprocess with the SGLang venv's python, the test-only
sgl_kernel stub on PYTHONPATH and SGLANG_USE_CPU_ENGINE=1. One Engine per checkpoint, one after
the other, in this one process, with dtype float32 and NO quantization flag, override or
environment variable of ours: quantized checkpoints load as they are. Usage:
    python run_engine.py --prompt-ids 1,2,3 --max-new-tokens 8 ENTRY [ENTRY...]
ENTRY is a checkpoint directory, or ``DIR#hidden`` to hide its quantization config from SGLang
(``json_model_override_args={"quantization_config": null}``: the plugin's dequantise-at-load path),
or ``DIR#eagle3=0,1,2`` / ``DIR#eagle3`` to capture EAGLE-3 auxiliary hidden states without a draft
(SGLang's ``enable_return_aux_hidden_states`` with ``speculative_algorithm="EAGLE3"`` and
``return_aux_hidden_state_layer_ids`` = the ids, SGLang's convention, or none): the result then has
``aux_hidden_states``, one row per token the target ran (prompt, then each decode step).
``--tp-size N`` runs SGLang's tensor parallel (CPU: see conftest.tp_env). ``--context-length N``
serves N tokens (past the config's max_position_embeddings for the long-context test) and adds
SGLang's scheduler limits to the result (``server_info``); ``--chunked-prefill-size`` sets SGLang's
chunk (default -1: off); ``--too-long N`` also sends an N-token prompt and records SGLang's answer
(``too_long``).
Output lines: ``RESULT {"entry": ..., "tokens": [...], "prompt_logprobs": [...], "seconds": ...}``,
or ``FAILED {"entry": ..., "error": ...}`` when the Engine could not start (then the run stops:
SGLang tears its processes down).
"""

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("entries", nargs="+")
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeat", type=int, default=1, help="timed generate() calls after the first")
    ap.add_argument("--context-length", type=int, default=None)
    ap.add_argument("--chunked-prefill-size", type=int, default=-1)
    ap.add_argument("--too-long", type=int, default=0, help="also send a prompt of this many tokens")
    ap.add_argument("--tp-size", type=int, default=1)
    args = ap.parse_args()
    import sglang as sgl

    ids = [int(x) for x in args.prompt_ids.split(",")]
    for entry in args.entries:
        path, _, mode = entry.partition("#")
        override = json.dumps({"quantization_config": None}) if mode == "hidden" else "{}"
        eagle3 = {}
        if mode.startswith("eagle3"):  # SGLang's aux-hidden-state capture on the target, no draft
            layer_ids = mode.partition("=")[2]
            eagle3 = {"enable_return_aux_hidden_states": True, "speculative_algorithm": "EAGLE3",
                      "return_aux_hidden_state_layer_ids": [int(i) for i in layer_ids.split(",")] if layer_ids
                      else None}
        t0 = time.time()
        try:
            engine = sgl.Engine(model_path=path, json_model_override_args=override, device="cpu",
                                attention_backend="torch_native", sampling_backend="pytorch", dtype=args.dtype,
                                mem_fraction_static=0.05,
                                max_total_tokens=2048, disable_overlap_schedule=True,
                                chunked_prefill_size=args.chunked_prefill_size, context_length=args.context_length,
                                max_running_requests=4, disable_cuda_graph=True, skip_server_warmup=True,
                                tp_size=args.tp_size, log_level="info", **eagle3)
        except BaseException as e:  # noqa: BLE001  (reported, then the run stops)
            print("FAILED " + json.dumps({"entry": entry, "error": f"{type(e).__name__}: {e}"}), flush=True)
            raise SystemExit(3) from e
        init_s = time.time() - t0
        try:
            sp = {"max_new_tokens": args.max_new_tokens, "temperature": 0.0, "ignore_eos": True}
            out = engine.generate(input_ids=ids, sampling_params=sp, return_logprob=True, logprob_start_len=0,
                                  **({"return_hidden_states": True} if eagle3 else {}))
            times = []
            for _ in range(args.repeat):
                t1 = time.time()
                engine.generate(input_ids=ids, sampling_params=sp)
                times.append(time.time() - t1)
            extra = {}
            if args.context_length is not None:
                info = engine.get_server_info()
                extra["server_info"] = {k: info.get(k) for k in (
                    "context_length", "chunked_prefill_size", "max_total_num_tokens", "max_req_input_len")}
            if args.too_long:
                try:
                    bad = engine.generate(input_ids=[ids[i % len(ids)] for i in range(args.too_long)],
                                          sampling_params={"max_new_tokens": 1})
                    extra["too_long"] = {"served": True, "meta_info": bad.get("meta_info")}
                except Exception as e:  # noqa: BLE001  (SGLang's refusal is the expected answer)
                    extra["too_long"] = {"served": False, "error": f"{type(e).__name__}: {e}"}
        finally:
            engine.shutdown()
        meta = out["meta_info"]
        result = {"entry": entry, "path": path, "tokens": out["output_ids"],
                  "prompt_logprobs": [lp for lp, _tid, _ in meta["input_token_logprobs"][1:]],
                  "init_seconds": init_s, "generate_seconds": times, **extra}
        if eagle3:  # [prompt rows] then one row per decode step -> one list of rows
            result["aux_hidden_states"] = [row for step in meta["hidden_states"]
                                           for row in (step if isinstance(step[0], list) else [step])]
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
