"""Tiny, offline stand-in for the Hunyuan-A13B tokenizer (test fixtures only).

Mirrored from the real ``tencent/Hunyuan-A13B-Instruct`` tokenizer:

* the 210 special tokens and their order at the *end* of the vocabulary
  (``<|endoftext|>``, ``<|startoftext|>``, ``<|bos|>``, ``<|eos|>``, ``<|pad|>``,
  ``<|extra_0|>`` .. ``<|extra_204|>``; real ids 127957..128166);
* the token roles: bos ``<|bos|>``, eos ``<|eos|>``, pad ``<|pad|>``,
  eod ``<|extra_5|>``, sep ``<|extra_0|>`` (end of a user/tool turn),
  ``<|extra_4|>`` between the system prompt and the first user message;
* ``<think>``/``<answer>``/``<tool_calls>``/``<tool_response>`` tags are plain
  text (several BPE pieces each), not special tokens;
* the chat-template semantics (see :data:`CHAT_TEMPLATE`).

What differs: the ids (the specials occupy ``vocab_size-210 .. vocab_size-1``
of a tiny vocab) and the base vocab/merges, which are a byte-level BPE learned
deterministically by ``tokenizers``' ``BpeTrainer`` from the small corpus below
(the real one is a 128k tiktoken BPE). If the corpus runs out of merges before
the requested size, the vocab is topped up with unreachable
``<|reserved_N|>`` entries so that the size is always exact.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS: list[str] = [
    "<|endoftext|>",
    "<|startoftext|>",
    "<|bos|>",
    "<|eos|>",
    "<|pad|>",
] + [f"<|extra_{i}|>" for i in range(205)]

ROLE_TOKENS = {
    "bos_token_id": "<|bos|>",
    "eos_token_id": "<|eos|>",
    "pad_token_id": "<|pad|>",
    "eod_token_id": "<|extra_5|>",
    "sep_token_id": "<|extra_0|>",
}

_N_BYTES = 256  # ByteLevel alphabet
MIN_VOCAB_SIZE = _N_BYTES + len(SPECIAL_TOKENS)
MODEL_MAX_LENGTH = 32768

_CORPUS = """\
Hello! How can I help you today?
The weather in Beijing is sunny today, with a high of 25 degrees.
What is the weather like in Shanghai tomorrow? It will rain in the afternoon.
<think>
The user asks about the weather. I should call the get_weather tool.
</think>
<answer>
The answer is 42. Let me think about it step by step.
</answer>
<tool_calls>[{"name": "get_weather", "arguments": {"location": "Beijing", "unit": "celsius"}}]</tool_calls>
<tool_response>{"temperature": 25, "condition": "sunny", "humidity": 40}</tool_response>
{"name": "search", "arguments": {"query": "Hunyuan model", "top_k": 3}}
{"type": "function", "function": {"name": "get_time", "description": "Get the current time", "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}}
You are a helpful assistant. Please answer the question and explain your reasoning.
You have access to the following tools. Call a tool when it helps to answer.
The quick brown fox jumps over the lazy dog. 0123456789
def add(a, b):
    return a + b
print("hello world", [1, 2, 3], {"key": "value"}, None, true, false, null)
Tencent Hunyuan is a large language model with a mixture of experts.
Tokens, attention, experts, routing, layers, hidden states and logits.
Thank you very much! You are welcome. Goodbye, see you tomorrow.
Question: what is 2 + 3 * 4? Answer: 14.
你好！今天天气怎么样？
北京今天晴天，最高气温二十五度。
上海明天有雨，请记得带伞。
我是腾讯混元大模型，很高兴为你服务。
请一步一步地思考，然后给出答案。
用户想知道天气，我应该调用工具。
这个问题的答案是四十二。
谢谢你的帮助！不客气。
中文、英文和代码都可以。
混合专家模型使用路由选择专家。
{"城市": "北京", "天气": "晴", "温度": 25}
"""


def _check(vocab_size: int) -> None:
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size!r} is too small: need at least {MIN_VOCAB_SIZE} "
            f"({_N_BYTES} byte symbols + {len(SPECIAL_TOKENS)} special tokens)"
        )


def special_token_ids(vocab_size: int) -> dict[str, int]:
    """Map every special token to its id (they are the last 210 ids)."""
    _check(vocab_size)
    start = vocab_size - len(SPECIAL_TOKENS)
    return {tok: start + i for i, tok in enumerate(SPECIAL_TOKENS)}


def _role_ids(vocab_size: int) -> dict[str, int]:
    ids = special_token_ids(vocab_size)
    return {role: ids[tok] for role, tok in ROLE_TOKENS.items()}


def build_tokenizer(vocab_size: int) -> Tokenizer:
    """Byte-level BPE with exactly ``vocab_size`` entries (base vocab + specials)."""
    _check(vocab_size)
    base_size = vocab_size - len(SPECIAL_TOKENS)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=base_size,
        min_frequency=0,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_CORPUS.splitlines(keepends=True), trainer=trainer)

    # Top up (deterministically) if the corpus ran out of merges.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    i = 0
    while len(vocab) < base_size:
        vocab.setdefault(f"<|reserved_{i}|>", len(vocab))
        i += 1
    assert len(vocab) == base_size and sorted(vocab.values()) == list(range(base_size))
    tok = Tokenizer.from_str(json.dumps(spec))

    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, single_word=False, lstrip=False, rstrip=False)
         for t in SPECIAL_TOKENS]
    )
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size
    assert tok.token_to_id(SPECIAL_TOKENS[0]) == base_size
    return tok


def write_tokenizer(out_dir, vocab_size: int, *, model_max_length: int = MODEL_MAX_LENGTH) -> dict:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json.

    Returns the role ids: bos/eos/pad/eod/sep ``*_token_id``.
    """
    _check(vocab_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(vocab_size).save(str(out / "tokenizer.json"))
    roles = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **roles,
        "model_max_length": model_max_length,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(roles, indent=2) + "\n")
    return _role_ids(vocab_size)


# Hunyuan-A13B chat format:
#   <|startoftext|>[SYSTEM<|extra_4|>]USER<|extra_0|>ASSISTANT<|eos|><|startoftext|>USER<|extra_0|>...
# Tools are described in a system block (joined to any system prompt); assistant
# tool calls are <tool_calls>[...]</tool_calls>; tool results are
# <tool_response>...</tool_response><|extra_0|>. enable_thinking=False appends an
# empty think block; add_generation_prompt has no effect.
CHAT_TEMPLATE = r"""{%- set ns = namespace(sys='', prev='') -%}
{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set ns.sys = messages[0]['content'] or '' -%}
  {%- set loop_messages = messages[1:] -%}
{%- else -%}
  {%- set loop_messages = messages -%}
{%- endif -%}
{%- if tools -%}
  {%- set tool_block = 'You have access to the following tools:\n' ~ (tools | tojson) ~ '\nTo call tools, reply with <tool_calls>[{"name": <tool name>, "arguments": <JSON object>}, ...]</tool_calls>. Tool results are returned inside <tool_response></tool_response>.' -%}
  {%- set ns.sys = (ns.sys ~ '\n\n' ~ tool_block) if ns.sys else tool_block -%}
{%- endif -%}
{%- if not loop_messages and ns.sys -%}
  {{- '<|startoftext|>' ~ ns.sys ~ '<|extra_4|>' -}}
{%- endif -%}
{%- for message in loop_messages -%}
  {%- set role = message['role'] -%}
  {%- set content = message['content'] if message['content'] is defined and message['content'] is not none else '' -%}
  {%- if loop.first or ns.prev == 'assistant' -%}
    {%- if role != 'assistant' -%}{{- '<|startoftext|>' -}}{%- endif -%}
    {%- if loop.first and ns.sys -%}{{- ns.sys ~ '<|extra_4|>' -}}{%- endif -%}
  {%- endif -%}
  {%- if role == 'user' -%}
    {{- content ~ '<|extra_0|>' -}}
  {%- elif role == 'tool' -%}
    {{- '<tool_response>' ~ (content if content is string else content | tojson) ~ '</tool_response><|extra_0|>' -}}
  {%- elif role == 'assistant' -%}
    {{- content -}}
    {%- if message['tool_calls'] is defined and message['tool_calls'] -%}
      {{- '<tool_calls>[' -}}
      {%- for tc in message['tool_calls'] -%}
        {%- set f = tc['function'] if tc['function'] is defined else tc -%}
        {%- set args = f['arguments'] if f['arguments'] is defined else {} -%}
        {{- '{"name": ' ~ (f['name'] | tojson) ~ ', "arguments": ' ~ (args if args is string else args | tojson) ~ '}' -}}
        {%- if not loop.last -%}{{- ', ' -}}{%- endif -%}
      {%- endfor -%}
      {{- ']</tool_calls>' -}}
    {%- endif -%}
    {{- '<|eos|>' -}}
  {%- else -%}
    {{- raise_exception('Unsupported role: ' ~ role) -}}
  {%- endif -%}
  {%- set ns.prev = role -%}
{%- endfor -%}
{%- if enable_thinking is defined and not enable_thinking and ns.prev != 'assistant' -%}
  {{- '<think>\n\n</think>\n' -}}
{%- endif -%}"""
