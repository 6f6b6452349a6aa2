"""README's real-weights ``python -m sglang.launch_server`` line, as far as a CPU without the weights
can take it: in a fresh process with our plugin loaded the way ``launch_server`` loads it, SGLang's
own ``prepare_server_args`` parses the line with the Hub name replaced by a tiny checkpoint of the
same architecture, and SGLang builds its ``ModelConfig`` from it. That checks every flag, that the
parser names are ours, which model class SGLang resolves, and the context length asked for (no
environment variable). Not run: the real weights, GPUs, the server itself (tests/sglang/test_server.py
serves a tiny checkpoint with the same parsers).
"""

import json
import subprocess
import sys

from conftest import sglang_env
from readme_commands import argv, commands

STAND_INS = {"tencent/Hunyuan-A13B-Instruct": ("a13b", "tencent", "fp32")}

PARSE = """
import json, sys
from sglang.srt.plugins import load_plugins
load_plugins()  # what launch_server does first
from sglang.srt.configs.model_config import ModelConfig
from sglang.srt.function_call.function_call_parser import FunctionCallParser
from sglang.srt.models.registry import ModelRegistry
from sglang.srt.parser.reasoning_parser import ReasoningParser
from sglang.srt.server_args import prepare_server_args

args = prepare_server_args(json.loads(sys.argv[1]))
args.resolve_once()
config = ModelConfig.from_server_args(args)
cls, arch = ModelRegistry.resolve_model_cls(config.hf_config.architectures)
print("RESULT " + json.dumps({
    "tp": args.tp_size, "context": config.context_len, "class": f"{cls.__module__}.{cls.__name__}",
    "reasoning": ReasoningParser.DetectorMap[args.reasoning_parser].__module__ if args.reasoning_parser else None,
    "tool": FunctionCallParser.ToolCallParserEnum[args.tool_call_parser].__module__ if args.tool_call_parser else None,
}))
"""


def test_readme_sglang_launch_server_line(tiny):
    lines = [c for c, real in commands() if c.startswith("python -m sglang.launch_server ")]
    assert lines and all(real for c, real in commands() if "sglang" in c)
    for line in lines:
        words = argv(line)[3:]
        i = words.index("--model-path") + 1
        assert words[i] in STAND_INS, f"README serves {words[i]}: give it a tiny stand-in here"
        words[i] = tiny(*STAND_INS[words[i]])
        env = sglang_env()
        assert "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN" not in env
        proc = subprocess.run([sys.executable, "-c", PARSE, json.dumps(words)], capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        got = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])
        print(f"\n{line}\n  -> {got}")
        assert got["class"].startswith("hunyuan_plugins.sglang.")
        assert got["tp"] == int(words[words.index("--tp") + 1])
        if "--context-length" in words:
            assert got["context"] == int(words[words.index("--context-length") + 1])
        for flag, key in (("--reasoning-parser", "reasoning"), ("--tool-call-parser", "tool")):
            if flag in words:
                assert got[key] == "hunyuan_plugins.sglang.parsers", (flag, got)
