"""Runs one checkpoint through vLLM's offline LLM API in a fresh process; prints a JSON result.

    python tests/vllm/run_llm.py '{"model": DIR, "dtype": "float32", "prompts": [[ids...]], ...}'

Test helper (each engine start gets its own process, as vLLM's engine-core/worker processes and
their global state do not survive several LLM objects in one process reliably).
"""

import json
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: tiny models, small machine

if __name__ == "__main__":  # vLLM spawns processes: the guard is required
    from vllm import LLM, SamplingParams

    args = json.loads(sys.argv[1])
    llm = LLM(model=args["model"], dtype=args.get("dtype", "float32"), enforce_eager=args.get("eager", True),
              max_model_len=args.get("max_model_len", 512), max_num_seqs=args.get("max_num_seqs", 8),
              tensor_parallel_size=args.get("tp", 1), seed=0, **args.get("extra", {}))
    params = SamplingParams(max_tokens=args.get("max_tokens", 8), temperature=0, prompt_logprobs=0,
                            ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in args["prompts"]], params)
    result = [{"tokens": list(o.outputs[0].token_ids),
               "prompt_logprobs": [None if d is None else d[t].logprob
                                   for t, d in zip(o.prompt_token_ids, o.prompt_logprobs)]}
              for o in outs]
    config = llm.llm_engine.vllm_config
    print("CONFIG " + json.dumps({
        "max_model_len": config.model_config.max_model_len,
        "max_num_batched_tokens": config.scheduler_config.max_num_batched_tokens,
        "pipeline_parallel_size": config.parallel_config.pipeline_parallel_size,
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN": os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN")}), flush=True)
    if args.get("metrics"):  # vLLM's own Prometheus counters (speculative decoding: drafts, acceptance)
        from vllm.v1.metrics.reader import Counter, Vector

        metrics = {m.name: (m.value if isinstance(m, Counter) else m.values)
                   for m in llm.get_metrics() if isinstance(m, (Counter, Vector)) and "spec_decode" in m.name}
        print("METRICS " + json.dumps(metrics), flush=True)
    print("RESULT " + json.dumps(result), flush=True)
