import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from hunyuan_plugins.core import tokenizer as T  # noqa: E402

VOCAB = 512


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tok")
    ids = T.write_tokenizer(out, VOCAB)
    tok = AutoTokenizer.from_pretrained(str(out))
    tok._role_ids = ids
    return tok


def render(tok, messages, **kw):
    return tok.apply_chat_template(messages, tokenize=False, **kw)


def test_module_does_not_import_transformers():
    code = "import sys, hunyuan_plugins.core.tokenizer; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": _src()})


def _src():
    return os.path.dirname(os.path.dirname(os.path.dirname(T.__file__)))


@pytest.mark.parametrize("vocab_size", [466, 512, 1024, 2048])
def test_exact_vocab_size(vocab_size):
    tok = T.build_tokenizer(vocab_size)
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size
    assert sorted(tok.get_vocab(with_added_tokens=True).values()) == list(range(vocab_size))


def test_deterministic():
    a = T.build_tokenizer(1024).to_str()
    assert a == T.build_tokenizer(1024).to_str()
    # also across processes (Rust hash seeds differ per process)
    code = "from hunyuan_plugins.core.tokenizer import build_tokenizer; print(build_tokenizer(1024).to_str(), end='')"
    b = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": _src()}).stdout
    assert a == b


def test_special_tokens():
    assert len(T.SPECIAL_TOKENS) == 210 and len(set(T.SPECIAL_TOKENS)) == 210
    assert T.SPECIAL_TOKENS[:6] == ["<|endoftext|>", "<|startoftext|>", "<|bos|>", "<|eos|>", "<|pad|>", "<|extra_0|>"]
    assert T.SPECIAL_TOKENS[-1] == "<|extra_204|>"
    ids = T.special_token_ids(VOCAB)
    assert ids["<|endoftext|>"] == VOCAB - 210 and ids["<|extra_204|>"] == VOCAB - 1
    tok = T.build_tokenizer(VOCAB)
    for t, i in ids.items():
        assert tok.token_to_id(t) == i
    for tag in ["<think>", "</think>", "<answer>", "</answer>", "<tool_calls>", "</tool_calls>",
                "<tool_response>", "</tool_response>"]:
        assert tok.token_to_id(tag) is None
        assert len(tok.encode(tag).ids) > 1


def test_write_tokenizer_role_ids(tmp_path):
    ids = T.write_tokenizer(tmp_path, VOCAB)
    assert ids == {"bos_token_id": 304, "eos_token_id": 305, "pad_token_id": 306,
                   "eod_token_id": 312, "sep_token_id": 307}
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert cfg["add_bos_token"] is False and cfg["clean_up_tokenization_spaces"] is False
    assert cfg["chat_template"] == T.CHAT_TEMPLATE
    assert (tmp_path / "special_tokens_map.json").exists()


def test_too_small_vocab(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        T.build_tokenizer(465)
    with pytest.raises(ValueError, match="vocab_size"):
        T.special_token_ids(100)
    with pytest.raises(ValueError, match="vocab_size"):
        T.write_tokenizer(tmp_path / "out", 300)
    assert not (tmp_path / "out").exists()


def test_autotokenizer_roundtrip(hf_tok):
    tok = hf_tok
    assert len(tok) == VOCAB
    assert tok.bos_token_id == tok._role_ids["bos_token_id"]
    assert tok.eos_token_id == tok._role_ids["eos_token_id"]
    assert tok.pad_token_id == tok._role_ids["pad_token_id"]
    for s in ["Hello world! The weather in Beijing is sunny.",
              "北京今天晴天，最高气温二十五度。你好🙂",
              '{"name": "get_weather", "arguments": {"location": "北京", "unit": "celsius"}}',
              "  leading spaces\n\ttabs\n<think>\n\n</think>\n"]:
        ids = tok.encode(s, add_special_tokens=False)
        assert tok.encode(s) == ids  # no BOS/EOS added
        assert tok.decode(ids) == s
    for t, i in T.special_token_ids(VOCAB).items():
        assert tok.encode(t, add_special_tokens=False) == [i]
    s = "<|startoftext|>Hi<|extra_0|>"
    assert tok.decode(tok.encode(s)) == s


def test_template_user_only(hf_tok):
    msgs = [{"role": "user", "content": "Hi"}]
    assert render(hf_tok, msgs) == "<|startoftext|>Hi<|extra_0|>"
    assert render(hf_tok, msgs, add_generation_prompt=True) == "<|startoftext|>Hi<|extra_0|>"
    assert render(hf_tok, msgs, enable_thinking=True) == "<|startoftext|>Hi<|extra_0|>"
    assert render(hf_tok, msgs, enable_thinking=False) == "<|startoftext|>Hi<|extra_0|><think>\n\n</think>\n"


def test_template_system_multiturn(hf_tok):
    msgs = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Again"}]
    expected = "<|startoftext|>SYS<|extra_4|>Hi<|extra_0|>A1<|eos|><|startoftext|>Again<|extra_0|>"
    assert render(hf_tok, msgs) == expected
    assert render(hf_tok, msgs, add_generation_prompt=True) == expected
    assert render(hf_tok, msgs, enable_thinking=False) == expected + "<think>\n\n</think>\n"


def test_template_keeps_no_think(hf_tok):
    msgs = [{"role": "user", "content": "/no_think Hi"}]
    assert render(hf_tok, msgs) == "<|startoftext|>/no_think Hi<|extra_0|>"


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather of a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]


def test_template_tools(hf_tok):
    msgs = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "Weather in Beijing?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Beijing"}}},
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"location": "北京"}'}},
        ]},
        {"role": "tool", "content": '{"temperature": 25}'},
        {"role": "tool", "content": '{"temperature": 26}'},
    ]
    out = render(hf_tok, msgs, tools=TOOLS)
    tools_json = json.dumps(TOOLS, ensure_ascii=False)
    assert out.startswith("<|startoftext|>SYS")
    assert tools_json in out
    system_part, rest = out.split("<|extra_4|>")
    assert tools_json in system_part and "<tool_calls>" in system_part
    assert rest == (
        "Weather in Beijing?<|extra_0|>"
        '<tool_calls>[{"name": "get_weather", "arguments": {"location": "Beijing"}}, '
        '{"name": "get_weather", "arguments": {"location": "北京"}}]</tool_calls><|eos|>'
        '<|startoftext|><tool_response>{"temperature": 25}</tool_response><|extra_0|>'
        '<tool_response>{"temperature": 26}</tool_response><|extra_0|>'
    )
    # without a user system prompt the tool block alone is the system prompt
    out2 = render(hf_tok, msgs[1:2], tools=TOOLS, enable_thinking=False)
    assert out2.startswith("<|startoftext|>You have access to the following tools:\n" + tools_json)
    assert out2.endswith("<|extra_4|>Weather in Beijing?<|extra_0|><think>\n\n</think>\n")
    # rendered prompt tokenizes with each special marker as a single id
    ids = hf_tok.encode(out, add_special_tokens=False)
    assert ids.count(T.special_token_ids(VOCAB)["<|extra_4|>"]) == 1
    assert hf_tok.decode(ids) == out
