"""SGLang 0.5.23 end-to-end tests, for real, on CPU.

Run with the SGLang venv's python (ci/setup-sglang.sh):
    ~/.cache/hunyuan-plugins/venvs/sglang/bin/python -m pytest -q -p no:cacheprovider tests/sglang

SGLang runs in subprocesses started here with ``SGLANG_USE_CPU_ENGINE=1``, ``--attention-backend
torch_native`` and the TEST-ONLY ``sgl_kernel`` stand-in (tests/sglang/stub_sgl_kernel) on their
PYTHONPATH only. Our plugin is picked up through its ``sglang.srt.plugins`` entry point (the
package is installed editable in the venv): no environment variable selects it.

Everything runs with dtype float32 and no flag, override or environment variable of ours:
quantized checkpoints load through SGLang's quantized layers as they are.

To keep the run short: ONE subprocess runs one offline Engine per tiny checkpoint, one after the
other (run_engine.py); ONE more runs the MoE-backend checks (HUNYUAN_MOE_BACKEND=hunyuan with our
Triton kernels in Triton's interpreter); the bad-input checkpoints each get a subprocess (SGLang
kills its launcher when a model fails to load), run side by side; ONE HTTP server serves the chat /
concurrency tests. Every process we start is stopped by its PID (its process group), on success
and on failure.
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
# name -> (model, dialect, format); fp32 compute everywhere (quantized ones loaded quantized)
CHECKPOINTS = {
    "a13b-tencent": ("a13b", "tencent", "fp32"),
    "a13b-native": ("a13b", "native", "fp32"),
    "large-cla": ("large", "tencent", "fp32"),
    "dense": ("dense", "tencent", "fp32"),
    "a13b-fp8": ("a13b", "tencent", "fp8"),
    "large-fp8": ("large", "tencent", "fp8"),
    "a13b-gptq-int4": ("a13b", "tencent", "gptq-int4"),
}
QUANTIZED = {"a13b-fp8": "fp8", "large-fp8": "fp8", "a13b-gptq-int4": "gptq"}
#: extra engine runs: name -> (checkpoint, run_engine mode); "hidden" hides the quant config from SGLang
HIDDEN = {"a13b-fp8-hidden": ("a13b-fp8", "hidden")}
#: the HUNYUAN_MOE_BACKEND=hunyuan run (our Triton kernels, in Triton's interpreter)
BACKEND_RUN = ("a13b-tencent", "a13b-fp8", "a13b-gptq-int4")
BACKEND_ENV = {"HUNYUAN_MOE_BACKEND": "hunyuan", "HUNYUAN_TRITON_ON_CPU": "1", "TRITON_INTERPRET": "1"}


def sglang_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(STUB)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(SGLANG_USE_CPU_ENGINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("SGLANG_EXTERNAL_MODEL_PACKAGE", None)  # the entry point alone must select our classes
    env.pop("SGLANG_PLUGINS", None)
    # SGLang's own ways past its context-length check: the plugin must not need them
    env.pop("SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN", None)
    env.pop("SGLANG_IS_IN_CI", None)
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


def start_engines(entries: list[str], log_path: Path, env: dict | None = None,
                  args: list[str] | None = None, prompt_ids: list[int] = PROMPT_IDS) -> subprocess.Popen:
    """run_engine.py on `entries` in a subprocess of its own session, output to `log_path`."""
    cmd = [sys.executable, str(HERE / "run_engine.py"), "--prompt-ids", ",".join(map(str, prompt_ids)),
           "--max-new-tokens", str(MAX_NEW_TOKENS), *(args or []), *entries]
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**sglang_env(), **(env or {})},
                                start_new_session=True)


def wait(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop(proc)
    return proc.returncode


def read_results(named_entries: dict[str, str], log_path: Path) -> tuple[dict, str]:
    """run_engine.py's RESULT lines in its log -> ({name: result or None}, log text)."""
    text = log_path.read_text()
    by_entry = {}
    for line in text.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            by_entry[r["entry"]] = r
    return {name: by_entry.get(entry) for name, entry in named_entries.items()}, text


def run_engines(named_entries: dict[str, str], log_path: Path, env: dict | None = None,
                args: list[str] | None = None, prompt_ids: list[int] = PROMPT_IDS) -> tuple[dict, str]:
    """{name: run_engine entry} through SGLang's offline Engine, one subprocess -> (results by name, log)."""
    rc = wait(start_engines(list(named_entries.values()), log_path, env, args, prompt_ids), timeout=1500)
    results, text = read_results(named_entries, log_path)
    if rc != 0 or None in results.values():
        pytest.fail(f"run_engine.py exited {rc}; missing results for "
                    f"{[n for n, r in results.items() if r is None]}; log tail:\n{text[-6000:]}")
    return results, text


@pytest.fixture(scope="session")
def engine_run(checkpoints, tmp_path_factory):
    """Every checkpoint (plus the hidden-config run) through SGLang's offline Engine -> (results, log)."""
    entries = {**checkpoints, **{name: f"{checkpoints[ckpt]}#{mode}" for name, (ckpt, mode) in HIDDEN.items()}}
    return run_engines(entries, tmp_path_factory.mktemp("sglang-logs") / "engine.log")


@pytest.fixture(scope="session")
def backend_run(checkpoints, tmp_path_factory):
    """HUNYUAN_MOE_BACKEND=hunyuan with our Triton kernels in Triton's interpreter -> (results, log)."""
    return run_engines({name: checkpoints[name] for name in BACKEND_RUN},
                       tmp_path_factory.mktemp("sglang-backend") / "engine.log", env=BACKEND_ENV)


#: SGLang's tensor parallel on CPU (TP 2), see docs/sglang.md "Tensor parallel on CPU": one core per rank
#: (SGLang asserts ranks <= NUMA nodes otherwise), and no NCCL library for SGLang's pynccl (torch's
#: CUDA build ships libnccl.so.2, so pynccl starts and calls torch.cuda.device("cpu")); all-reduce then
#: runs on SGLang's gloo group.
TP_RUN = ("a13b-tencent", "large-fp8")


def tp_env() -> dict:
    cores = sorted(os.sched_getaffinity(0))
    return {"SGLANG_CPU_OMP_THREADS_BIND": f"{cores[0]}|{cores[-1]}",
            "SGLANG_NCCL_SO_PATH": "/nonexistent/hunyuan-plugins-no-nccl/libnccl.so.2"}


@pytest.fixture(scope="session")
def tp_run(checkpoints, tmp_path_factory):
    """A13B and Large FP8 (CLA) at tensor parallel 2 on CPU -> (results, log)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("tensor parallel 2 on CPU needs 2 cores, one per rank")
    return run_engines({name: checkpoints[name] for name in TP_RUN},
                       tmp_path_factory.mktemp("sglang-tp") / "engine.log", env=tp_env(), args=["--tp-size", "2"])


#: the long-context run: tiny checkpoints whose config.json says max_position_embeddings 64, served
#: with --context-length 512 and a prompt of 150 tokens in chunks of 64, no environment variable
SHORT_MAX_POSITION = 64
LONG_CONTEXT = 512
LONG_CHUNK = 64
LONG_PROMPT_IDS = [(7 * i + 3) % 300 + 1 for i in range(150)]
TOO_LONG = 600
LONG_RUN = ("a13b-tencent", "large-cla")


def short_config_copy(src: str, dst: Path, drop_rope: bool = False) -> str:
    """A copy of checkpoint `src` whose config.json says max_position_embeddings 64 (and, with
    `drop_rope`, has no rope_scaling: plain RoPE, no alpha)."""
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["max_position_embeddings"] = SHORT_MAX_POSITION
    if drop_rope:
        cfg.pop("rope_scaling", None)
        cfg.pop("rope_parameters", None)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return str(dst)


@pytest.fixture(scope="session")
def short_checkpoints(checkpoints, tmp_path_factory) -> dict[str, str]:
    """name -> copy with max_position_embeddings 64; "plain-rope" = the A13B one without alpha RoPE,
    "native" = the transformers-native A13B."""
    root = tmp_path_factory.mktemp("sglang-short")
    out = {name: short_config_copy(checkpoints[name], root / name) for name in LONG_RUN}
    out["native"] = short_config_copy(checkpoints["a13b-native"], root / "native")
    out["plain-rope"] = short_config_copy(checkpoints["a13b-tencent"], root / "plain-rope", drop_rope=True)
    return out


@pytest.fixture(scope="session")
def long_context_run(short_checkpoints, tmp_path_factory):
    """The max_position_embeddings-64 checkpoints served at context 512 (chunked prefill 64) -> (results, log)."""
    args = ["--context-length", str(LONG_CONTEXT), "--chunked-prefill-size", str(LONG_CHUNK),
            "--too-long", str(TOO_LONG)]
    return run_engines({name: short_checkpoints[name] for name in LONG_RUN},
                       tmp_path_factory.mktemp("sglang-long") / "engine.log", args=args, prompt_ids=LONG_PROMPT_IDS)


def _break_fp8(src: str, dst: Path, tensor: str, value) -> str:
    """A copy of the fp8 checkpoint `src` with `tensor` removed (value None) or replaced."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        sd = load_file(f)
        if tensor in sd:
            if value is None:
                del sd[tensor]
            else:
                sd[tensor] = value
            save_file(sd, f, metadata={"format": "pt"})
    for index in dst.glob("*.index.json"):  # a sharded checkpoint's index must not name a removed tensor
        data = json.loads(index.read_text())
        if value is None:
            data["weight_map"].pop(tensor, None)
        index.write_text(json.dumps(data))
    return str(dst)


#: bad fp8 checkpoints: name -> (tensor, replacement or None = removed, what the error must say)
BAD_FP8 = {
    "missing-input-scale": ("model.layers.1.self_attn.k_proj.input_scale", None, "missing tensor"),
    "wrong-scale-shape": ("model.layers.2.mlp.experts.3.up_proj.input_scale", "ones2", "has shape [2]"),
}


@pytest.fixture(scope="session")
def bad_fp8_runs(checkpoints, tmp_path_factory):
    """Each broken fp8 checkpoint through SGLang (side by side) -> {name: (exit code, log)}."""
    import torch

    root = tmp_path_factory.mktemp("sglang-bad")
    procs = {}
    for name, (tensor, value, _) in BAD_FP8.items():
        path = _break_fp8(checkpoints["a13b-fp8"], root / name, tensor, torch.ones(2) if value == "ones2" else None)
        procs[name] = start_engines([path], root / f"{name}.log")
    return {name: (wait(proc, timeout=600), (root / f"{name}.log").read_text()) for name, proc in procs.items()}


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
