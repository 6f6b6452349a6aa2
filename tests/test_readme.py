"""Every command README.md gives runs as written in CI, or is labelled as needing real weights.

Who runs what: the ``hunyuan-plugins`` lines run here, as written (output under a temporary
directory instead of /tmp/tiny); ``bash ci/demo.sh ...`` is run as written by
tests/vllm/test_demo.py; ``bash ci/test.sh`` is what .ci/run calls; the real-weights lines (``vllm
serve``, ``python -m sglang.launch_server``) are parsed by the engine's own CLI, with its config
built on a tiny stand-in, by tests/vllm/test_readme_commands.py and tests/sglang/test_readme_commands.py.
"""

import json
import os

from readme_commands import ROOT, argv, commands

from hunyuan_plugins.cli import main, tiny_suite
from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.checkpoint import Checkpoint
from hunyuan_plugins.core.eagle3 import load_draft

ENGINE_TESTS = {"vllm": "tests/vllm/test_readme_commands.py", "python": "tests/sglang/test_readme_commands.py"}


def test_every_command_is_run_in_ci_or_labelled_real_weights():
    found = commands()
    assert len(found) >= 10, found
    for command, real in found:
        program = command.split()[0]
        if real:
            assert program in ENGINE_TESTS, f"no engine test parses this real-weights command: {command}"
            assert command.startswith(("vllm serve ", "python -m sglang.launch_server ")), command
            assert os.path.exists(os.path.join(ROOT, ENGINE_TESTS[program]))
        elif command.startswith("bash ci/demo.sh"):
            with open(os.path.join(ROOT, "tests/vllm/test_demo.py")) as f:
                assert "readme_commands" in f.read()  # the demo test runs README's line
        elif command == "bash ci/test.sh":
            with open(os.path.join(ROOT, ".ci/run")) as f:
                assert "\nbash ci/test.sh\n" in f.read()
        else:
            assert program == "hunyuan-plugins", f"README command neither run by CI nor labelled: {command}"


def test_hunyuan_plugins_commands_run_as_written(tmp_path, capsys):
    lines = [argv(c) for c, _ in commands() if c.startswith("hunyuan-plugins ")]
    assert any("--eagle3" in a for a in lines) and any("--trained" in a for a in lines)
    for a in lines:
        a = [x.replace("/tmp/tiny", str(tmp_path)) for x in a]
        assert main(a[1:]) == 0, a
        out = a[a.index("--all" if "--all" in a else "--out") + 1]
        if "--all" in a:
            assert len(os.listdir(out)) == len(tiny_suite()) >= 20
            for name in os.listdir(out):
                Checkpoint(os.path.join(out, name))  # every tensor validated against its config
        elif "--eagle3" in a:
            draft = load_draft(out)
            assert json.load(open(os.path.join(out, "training.json")))["acceptance"] >= 0.95
            assert draft.c["target_model_type"] == "hunyuan_v1_dense"
        else:
            Checkpoint(out)
            fmt = a[a.index("--format") + 1] if "--format" in a else "bf16"
            quant = HunyuanConfig.from_pretrained(out).quantization_config
            assert (quant or {}).get("quant_method") == {"fp8": "fp8", "gptq-int4": "gptq"}.get(fmt), (a, quant)
    print("\n" + capsys.readouterr().out)
