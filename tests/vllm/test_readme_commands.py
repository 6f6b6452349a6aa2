"""README's real-weights ``vllm serve`` lines, as far as a CPU without the weights can take them: each
is parsed by vLLM's own ``serve`` argument parser and checks (plugins loaded, as ``vllm serve``
does), then vLLM builds its engine configuration with the Hub name replaced by a tiny checkpoint of
the same architecture and format (an EAGLE-3 draft by a tiny draft). That checks every flag and
parser name, the context length asked for (no environment variable), the parallel layout and which
quantization backend and speculative method vLLM picks; serving such a configuration on CPU is
what the other tests here do. Not run: the real weights, GPUs.
"""

import json
import os

import pytest
from readme_commands import argv, commands

from hunyuan_plugins.core.eagle3 import make_eagle3_draft

#: Hub name in README -> make_tiny arguments of the checkpoint standing in for it (Large: the mid size,
#: whose 8 heads divide by the README's tensor-parallel 8 as the real 80 do)
STAND_INS = {"tencent/Hunyuan-A13B-Instruct": ("a13b", "tencent", "bf16"),
             "tencent/Hunyuan-A13B-Instruct-FP8": ("a13b", "tencent", "fp8"),
             "tencent/Hunyuan-A13B-Instruct-GPTQ-Int4": ("a13b", "tencent", "gptq-int4"),
             "tencent/Tencent-Hunyuan-Large": ("large", "tencent", "bf16", "mid"),
             "tencent/Hunyuan-7B-Instruct": ("dense", "tencent", "fp32")}
DRAFTS = {"AngelSlim/Hunyuan-7B-Instruct_eagle3": "tencent/Hunyuan-7B-Instruct"}
SERVE = [c for c, real in commands() if c.startswith("vllm serve ")]


def test_readme_has_the_vllm_lines():
    assert len(SERVE) >= 6 and all(real for c, real in commands() if c.startswith("vllm "))


def stand_in(tiny, name: str) -> str:
    model, dialect, fmt, *size = STAND_INS[name]
    return tiny(model, dialect, fmt, **({"size": size[0]} if size else {}))


@pytest.mark.parametrize("line", SERVE, ids=[f"line{i}" for i in range(len(SERVE))])
def test_readme_vllm_serve_line(line, tiny, tmp_path):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.plugins import load_general_plugins
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    load_general_plugins()  # what every vLLM process does: our entry point registers classes and parsers
    words = argv(line)[2:]
    name = words[0]
    assert name in STAND_INS, f"README serves {name}: give it a tiny stand-in here"
    words[0] = stand_in(tiny, name)
    spec = None
    if "--speculative-config" in words:
        i = words.index("--speculative-config") + 1
        spec = json.loads(words[i])
        assert spec["model"] in DRAFTS, f"README's draft {spec['model']}: give it a tiny stand-in here"
        make_eagle3_draft(stand_in(tiny, DRAFTS[spec["model"]]), str(tmp_path / "draft"))
        words[i] = json.dumps({**spec, "model": str(tmp_path / "draft")})
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(words)
    args.model = args.model_tag  # what `vllm serve MODEL` does
    validate_parsed_serve_args(args)
    if args.reasoning_parser:
        assert "hunyuan_plugins" in ReasoningParserManager.get_reasoning_parser(args.reasoning_parser).__module__
    if args.tool_call_parser:
        assert "hunyuan_plugins" in ToolParserManager.get_tool_parser(args.tool_call_parser).__module__

    config = AsyncEngineArgs.from_cli_args(args).create_engine_config()
    model, parallel = config.model_config, config.parallel_config
    print(f"\n{line}\n  -> {model.architectures} max_model_len {model.max_model_len}, quantization "
          f"{model.quantization}, TP {parallel.tensor_parallel_size} PP {parallel.pipeline_parallel_size} "
          f"EP {parallel.enable_expert_parallel}, speculative {spec and config.speculative_config.method}")
    assert "VLLM_ALLOW_LONG_MAX_MODEL_LEN" not in os.environ  # the 256K line needs no variable
    assert model.max_model_len == (args.max_model_len or model.hf_config.max_position_embeddings)
    assert parallel.tensor_parallel_size == args.tensor_parallel_size
    assert parallel.pipeline_parallel_size == args.pipeline_parallel_size
    assert parallel.enable_expert_parallel == args.enable_expert_parallel
    assert model.quantization == ("hunyuan" if STAND_INS[name][2] in ("fp8", "gptq-int4") else None)
    if spec:
        assert config.speculative_config.method == spec["method"] == "eagle3"
        assert config.speculative_config.num_speculative_tokens == spec["num_speculative_tokens"]
    assert os.path.isdir(model.model)
