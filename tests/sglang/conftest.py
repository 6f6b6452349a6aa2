"""SGLang 0.5.23 end-to-end tests, for real, on CPU.

Run with the SGLang venv's python (ci/setup-sglang.sh):
    ~/.cache/hunyuan-plugins/venvs/sglang/bin/python -m pytest -q -p no:cacheprovider tests/sglang

SGLang runs in subprocesses started here with ``SGLANG_USE_CPU_ENGINE=1``, ``--attention-backend
torch_native`` and the TEST-ONLY ``sgl_kernel`` stand-in (tests/sglang/stub_sgl_kernel) on their
PYTHONPATH only. Our plugin is picked up through its ``sglang.srt.plugins`` entry point (the
package is installed editable in the venv): no environment variable selects it.

To keep the run short: ONE subprocess runs one offline Engine per tiny checkpoint, one after the
other (run_engine.py), and ONE HTTP server serves the chat / concurrency tests. Every process we
start is stopped by its PID (its process group), on success and on failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from engine_import import require_engine

HERE = Path(__file__).resolve().parent
require_engine("sglang.srt", "SGLang", HERE, "sglang")  # a missing or broken SGLang stops the run, naming it

STUB = HERE / "stub_sgl_kernel"
PROMPT_IDS = [1, 5, 9, 33, 70, 101, 7, 260, 44, 12]
MAX_NEW_TOKENS = 8
# name -> (model, dialect, format); fp32 compute everywhere (quantized ones dequantise to fp32)
CHECKPOINTS = {
    "a13b-tencent": ("a13b", "tencent", "fp32"),
    "a13b-native": ("a13b", "native", "fp32"),
    "large-cla": ("large", "tencent", "fp32"),
    "dense": ("dense", "tencent", "fp32"),
    "a13b-fp8": ("a13b", "tencent", "fp8"),
    "a13b-gptq-int4": ("a13b", "tencent", "gptq-int4"),
}


def sglang_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(STUB)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(SGLANG_USE_CPU_ENGINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("SGLANG_EXTERNAL_MODEL_PACKAGE", None)  # the entry point alone must select our classes
    env.pop("SGLANG_PLUGINS", None)
    return env


def stop(proc: subprocess.Popen) -> None:
    """Stop a process we started (and its children, which share its new session) by its PID."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:  # children SGLang may leave behind in the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    from hunyuan_plugins.core.tiny import make_tiny

    root = tmp_path_factory.mktemp("sglang-tiny")
    out = {}
    for name, (model, dialect, fmt) in CHECKPOINTS.items():
        out[name] = str(root / name)
        make_tiny(out[name], model=model, dialect=dialect, fmt=fmt)
    return out


@pytest.fixture(scope="session")
def engine_run(checkpoints, tmp_path_factory):
    """All checkpoints through SGLang's offline Engine in one subprocess -> (results by name, log)."""
    log_path = tmp_path_factory.mktemp("sglang-logs") / "engine.log"
    cmd = [sys.executable, str(HERE / "run_engine.py"), "--prompt-ids", ",".join(map(str, PROMPT_IDS)),
           "--max-new-tokens", str(MAX_NEW_TOKENS), *checkpoints.values()]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=sglang_env(), start_new_session=True)
        try:
            proc.wait(timeout=1200)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop(proc)
    text = log_path.read_text()
    by_path = {}
    for line in text.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            by_path[r["path"]] = r
    results = {name: by_path.get(path) for name, path in checkpoints.items()}
    if proc.returncode != 0 or None in results.values():
        pytest.fail(f"run_engine.py exited {proc.returncode}; missing results for "
                    f"{[n for n, r in results.items() if r is None]}; log tail:\n{text[-6000:]}")
    return results, text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(checkpoints, tmp_path_factory):
    """``python -m sglang.launch_server`` on the tiny A13B (fp32), with our A13B parsers."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("sglang-server") / "server.log"
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", checkpoints["a13b-tencent"],
           "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--attention-backend", "torch_native",
           "--sampling-backend", "pytorch", "--dtype", "float32", "--mem-fraction-static", "0.05",
           "--max-total-tokens", "8192", "--disable-overlap-schedule", "--chunked-prefill-size", "-1",
           "--max-running-requests", "32", "--disable-cuda-graph", "--skip-server-warmup",
           "--reasoning-parser", "hunyuan_a13b", "--tool-call-parser", "hunyuan_a13b",
           "--enable-custom-logit-processor"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=sglang_env(), start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 600
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited {proc.returncode}:\n{log_path.read_text()[-6000:]}")
                try:
                    with urllib.request.urlopen(base + "/health", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"server not healthy in 600 s:\n{log_path.read_text()[-6000:]}")
                time.sleep(2)
            yield base, log_path
        finally:
            stop(proc)


def post(url: str, body: dict, timeout: float = 300) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.status == 200
        return json.loads(r.read())


def post_stream(url: str, body: dict, timeout: float = 300) -> list[dict]:
    req = urllib.request.Request(url, data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    chunks = []
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.status == 200
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[len("data: "):]))
    return chunks


def _forced_call(self, logits, custom_param_list=None):
    """Logit processor: the request's next token is target[len(output so far)], then `stop`."""
    for i, p in enumerate(custom_param_list or []):
        n = len(p["__req__"].output_ids)
        target = p["target"]
        logits[i, :] = float("-inf")
        logits[i, target[n] if n < len(target) else p["stop"]] = 0.0
    return logits


def forced_decoding(model_path: str, text: str) -> dict:
    """Request fields that make the server's model generate exactly `text` (token by token, through
    SGLang's sampler, detokenizer and our parsers) -- the tiny model's random weights would
    otherwise produce noise. Uses SGLang's custom logit processors (--enable-custom-logit-processor);
    the class is serialised by value with dill, as SGLang's own CustomLogitProcessor.to_str does."""
    import dill
    from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor
    from tokenizers import Tokenizer

    _forced_call.__module__ = "__main__"  # dill serialises __main__ objects by value
    cls = type("ForcedTokens", (CustomLogitProcessor,), {"__call__": _forced_call, "__module__": "__main__"})
    tok = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    with open(Path(model_path) / "config.json") as f:
        eos = json.load(f)["eos_token_id"]
    return {"custom_logit_processor": json.dumps({"callable": dill.dumps(cls, recurse=True).hex()}),
            "custom_params": {"target": ids, "stop": eos}}
