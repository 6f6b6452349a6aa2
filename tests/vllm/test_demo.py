"""The main job (README's first command) end to end: `bash ci/demo.sh` serves the trained toy with
vLLM and our plugin, and the answer shows Hunyuan's behaviour as vLLM's parsers (ours) see it."""

import json
import subprocess

from readme_commands import ROOT, argv, commands


def test_demo_shows_reasoning_and_a_parsed_tool_call():
    (line,) = [c for c, _ in commands() if c.startswith("bash ci/demo.sh")]  # README's main job, as written
    r = subprocess.run(argv(line), capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-4000:]
    answer = json.loads(r.stdout)
    print("\n" + r.stdout)
    assert "hunyuan_plugins: HunYuanMoEV1ForCausalLM" in r.stderr  # our class served it
    assert answer["reasoning"] == "The user asks about the weather in Beijing. I should call the get_weather tool."
    assert answer["content"] is None and answer["finish_reason"] == "tool_calls"
    (call,) = answer["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "Beijing"}
