"""EAGLE-3 drafts for Hunyuan targets, in AngelSlim's format: the reference every engine test uses.

Tencent's AngelSlim publishes EAGLE-3 drafts for the dense models (``AngelSlim/Hunyuan-{1.8B,4B,7B}-
Instruct_eagle3``): ``Eagle3LlamaForCausalLM``, ``model_type: llama``, one decoder layer, a reduced
draft vocabulary (``draft_vocab_size``, ``d2t``/``t2d`` maps) and ``target_model_type:
hunyuan_v1_dense``. The draft reads three *auxiliary hidden states* of the target: the residual
stream entering target layers ``aux_layers`` (vLLM's convention, EAGLE's own: layer ``i`` means the
input of decoder layer ``i``, ``0`` the embeddings), concatenated and projected by ``fc``.

One draft step, as vLLM's ``Eagle3LlamaForCausalLM`` and this module compute it::

    g  = fc(concat(aux))            # [T, H]; later steps feed the draft's own pre-norm output instead
    x  = concat(input_layernorm(embed(next_token)), hidden_norm(g))            # [T, 2H]
    h  = g + o_proj(causal_attention(RoPE(q(x)), RoPE(k(x)), v(x)))
    h  = h + mlp(post_attention_layernorm(h))                                  # pre-norm output
    logits[d2t_target_ids] = lm_head(norm(h))                                  # -inf elsewhere

State-dict names are AngelSlim's (``midlayer.*``, ``fc``, ``norm``, ``lm_head``, ``embed_tokens``,
``d2t`` as offsets ``target_id - draft_id``, ``t2d`` as a bool mask over the target vocabulary).

``make_eagle3_draft`` writes a tiny one for a tiny target: its weights are trained (seeded, full
batch, CPU, seconds) to predict the target's own greedy continuations of a fixed prompt set from the
target's auxiliary hidden states, so an engine that captures the wrong layers gets visibly fewer
drafts accepted. Speculative decoding with greedy sampling is lossless whatever the draft; the
acceptance counters are what shows the draft is being used as trained.
"""

from __future__ import annotations

import itertools
import json
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from hunyuan_plugins.config import ARCH_DENSE, HunyuanConfig
from hunyuan_plugins.core.model import MLP, RMSNorm, apply_rope, attend

DRAFT_ARCH = "Eagle3LlamaForCausalLM"
#: config.json's model_type per target architecture, as AngelSlim writes ``target_model_type``
TARGET_MODEL_TYPES = {ARCH_DENSE: "hunyuan_v1_dense", "HunYuanMoEV1ForCausalLM": "hunyuan_v1_moe"}


def default_aux_layers(num_layers: int) -> tuple[int, ...]:
    """vLLM's default auxiliary layers (EAGLE-3's): the inputs of layers 2, L//2 and L-3.

    Raises when they are not three distinct layers (a target with fewer than 8 layers): a draft's
    ``fc`` takes exactly three hidden states, so the draft config must then name its layers
    (``eagle_aux_hidden_state_layer_ids``)."""
    layers = (2, num_layers // 2, num_layers - 3)
    if len(set(layers)) != 3 or min(layers) < 1:
        raise ValueError(
            f"a {num_layers}-layer target has no default EAGLE-3 auxiliary layers ((2, L//2, L-3) = {layers} "
            "are not three distinct layers): the draft's config.json must list them in "
            "'eagle_aux_hidden_state_layer_ids'")
    return layers


def check_aux_layers(layers, num_layers: int, where: str = "eagle_aux_hidden_state_layer_ids") -> tuple[int, ...]:
    """Residual-stream indices a target hands an EAGLE-3 draft (``i`` = the input of layer ``i``,
    ``num_layers`` = the last layer's output), checked: distinct and in 0..num_layers. Every adapter's
    hook calls this with what its engine passed."""
    layers = tuple(int(i) for i in layers)
    if not layers or len(set(layers)) != len(layers) or not all(0 <= i <= num_layers for i in layers):
        raise ValueError(f"{where}: inputs of layers {list(layers)} must be distinct indices in 0..{num_layers} "
                         f"for this {num_layers}-layer target (the residual stream entering layer i; "
                         f"{num_layers} = the last layer's output)")
    return layers


def draft_aux_layers(draft_config: dict, num_layers: int) -> tuple[int, ...]:
    """The target layers a draft reads: its config's ``eagle_aux_hidden_state_layer_ids`` (top level or
    in ``eagle_config``, where vLLM looks) or the default; checked against the target's depth."""
    ids = draft_config.get("eagle_aux_hidden_state_layer_ids") or \
        (draft_config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    layers = tuple(int(i) for i in ids) if ids else default_aux_layers(num_layers)
    if len(layers) != 3 or len(set(layers)) != 3 or not all(0 <= i <= num_layers for i in layers):
        raise ValueError(f"eagle_aux_hidden_state_layer_ids={list(layers)}: expected three distinct layer "
                         f"indices in 0..{num_layers} (the target has {num_layers} layers)")
    return layers


@torch.no_grad()
def residual_stream(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The reference target's residual stream [h_0 .. h_L] for tokens [B, T]: h_i enters layer i
    (h_0 the embeddings, h_L before the final norm)."""
    from hunyuan_plugins.core.model import rope_cos_sin

    B, T = tokens.shape
    cache = model.new_cache(B, T)
    cos, sin = rope_cos_sin(model.cfg, torch.arange(T, device=tokens.device))
    h = model.model.embed_tokens(tokens)
    out = [h]
    for layer in model.model.layers:
        h = layer(h, cos, sin, cache, 0)
        out.append(h)
    return out


class DraftAttention(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        H, self.heads, self.kv_heads = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim, self.theta = c["head_dim"], float(c["rope_theta"])
        self.q_proj = nn.Linear(2 * H, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(2 * H, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(2 * H, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, H, bias=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        d = self.head_dim
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d))
        freqs = positions.float()[:, None] * inv_freq[None, :]
        cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()
        q = apply_rope(self.q_proj(x).view(B, T, self.heads, d), cos, sin)
        k = apply_rope(self.k_proj(x).view(B, T, self.kv_heads, d), cos, sin)
        v = self.v_proj(x).view(B, T, self.kv_heads, d)
        return self.o_proj(attend(q, k, v, 0).reshape(B, T, self.heads * d))


class DraftLayer(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        H, eps = c["hidden_size"], c["rms_norm_eps"]
        self.self_attn = DraftAttention(c)
        self.mlp = MLP(H, c["intermediate_size"])  # Llama's SwiGLU = the core's
        self.hidden_norm = RMSNorm(H, eps)
        self.input_layernorm = RMSNorm(H, eps)
        self.post_attention_layernorm = RMSNorm(H, eps)


class Eagle3Draft(nn.Module):
    """The draft (AngelSlim's ``Eagle3LlamaForCausalLM``, one layer), for full sequences: position t
    takes the token at t+1 and the target's hidden states at t, and predicts the token at t+2."""

    def __init__(self, c: dict):
        super().__init__()
        self.c = c
        H, V, Vd = c["hidden_size"], c["vocab_size"], c["draft_vocab_size"]
        self.midlayer = DraftLayer(c)
        self.fc = nn.Linear(3 * H, H, bias=False)
        self.norm = RMSNorm(H, c["rms_norm_eps"])
        self.embed_tokens = nn.Embedding(V, H)
        self.lm_head = nn.Linear(H, Vd, bias=False)
        self.register_buffer("d2t", torch.zeros(Vd, dtype=torch.int64))
        self.register_buffer("t2d", torch.zeros(V, dtype=torch.bool))

    def forward(self, next_tokens: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """next_tokens [B, T], hidden [B, T, 3H] (target aux) or [B, T, H] (the draft's own) ->
        (logits over the target vocabulary [B, T, V], -inf outside the draft's; pre-norm output)."""
        layer = self.midlayer
        g = self.fc(hidden) if hidden.shape[-1] != self.c["hidden_size"] else hidden
        x = torch.cat([layer.input_layernorm(self.embed_tokens(next_tokens)), layer.hidden_norm(g)], dim=-1)
        h = g + layer.self_attn(x, torch.arange(x.shape[1], device=x.device))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
        draft_logits = self.lm_head(self.norm(h)).float()
        full = draft_logits.new_full((*draft_logits.shape[:-1], self.c["vocab_size"]), float("-inf"))
        full[..., torch.arange(len(self.d2t), device=full.device) + self.d2t] = draft_logits
        return full, h


def draft_config(target: HunyuanConfig, draft_vocab_size: int, aux_layers: tuple[int, ...] | None) -> dict:
    """config.json of a draft for ``target``, in AngelSlim's layout (a Llama config, one layer)."""
    if target.architecture not in TARGET_MODEL_TYPES:
        raise ValueError(f"no EAGLE-3 draft layout for {target.architecture} (AngelSlim drafts target "
                         f"{sorted(TARGET_MODEL_TYPES)})")
    c = {
        "architectures": [DRAFT_ARCH], "model_type": "llama", "torch_dtype": "float32",
        "hidden_size": target.hidden_size, "intermediate_size": 2 * target.hidden_size,
        "num_attention_heads": target.num_heads, "num_key_value_heads": target.num_kv_heads,
        "head_dim": target.head_dim, "num_hidden_layers": 1, "hidden_act": "silu",
        "rms_norm_eps": target.rms_norm_eps, "rope_theta": 10000.0, "rope_scaling": None,
        "max_position_embeddings": target.max_position_embeddings, "attention_bias": False,
        "vocab_size": target.vocab_size, "draft_vocab_size": draft_vocab_size, "tie_word_embeddings": False,
        "bos_token_id": target.bos_token_id, "eos_token_id": target.eos_token_ids[0],
        "target_model_type": TARGET_MODEL_TYPES[target.architecture],
    }
    if aux_layers is not None:
        c["eagle_aux_hidden_state_layer_ids"] = list(aux_layers)
    return c


#: the prompts a tiny draft is trained on (token ids below 300: ordinary BPE tokens of the tiny
#: tokenizer, no special tokens); tests decode some of them, so the draft has seen them
TRAIN_PROMPTS = [[1, 5, 9, 33, 70, 101, 7, 260, 44, 12], [20, 30, 40, 50, 60], [100, 7, 7, 90, 200, 3],
                 [11, 22, 33, 44, 55, 66, 77, 88], [250, 5, 150, 25, 75], [9, 8, 7, 6, 5, 4, 3, 2, 1]]


@torch.no_grad()
def continuations(model, prompts: list[list[int]], continuation: int) -> list[list[int]]:
    """Each prompt followed by the target's greedy continuation."""
    from hunyuan_plugins.core.model import generate

    return [prompt + generate(model, prompt, continuation) for prompt in prompts]


@torch.no_grad()
def training_data(model, sequences: list[list[int]], aux_layers: tuple[int, ...]):
    """(next_tokens [1, T], aux [1, T, 3H], labels [T]) per sequence: the target's residual stream at
    ``aux_layers`` at each position t, the token at t+1 and, as label, the token at t+2."""
    data = []
    for seq in sequences:
        ids = torch.tensor([seq])
        stream = residual_stream(model, ids)
        aux = torch.cat([stream[i] for i in aux_layers], dim=-1)[:, :-2]
        data.append((ids[:, 1:-1], aux, ids[0, 2:]))
    return data


def wrong_layer_sets(num_layers: int, right: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every other ascending triple of residual-stream indices 0..L: what an engine capturing the wrong
    layers (off by one, the embeddings, the last layer's output) would feed the draft."""
    return [t for t in itertools.combinations(range(num_layers + 1), 3) if t != tuple(sorted(right))]


def acceptance(draft: Eagle3Draft, data) -> float:
    """Share of positions whose greedy draft token is the target's next token (first draft step)."""
    with torch.no_grad():
        hits = total = 0
        for next_tokens, aux, labels in data:
            hits += int((draft(next_tokens, aux)[0][0].argmax(-1) == labels).sum())
            total += len(labels)
    return hits / total


def train_draft(draft: Eagle3Draft, data, wrong=(), sentinel: int | None = None, max_steps: int = 600,
                seed: int = 0) -> dict:
    """Full-batch AdamW on the first draft step (embeddings frozen, as AngelSlim trains) until every
    training position is drafted right. ``wrong``: examples whose aux come from the wrong layers,
    trained to propose ``sentinel`` (a token the target never produces here), so that an engine
    capturing the wrong layers shows it as drafts rejected."""
    torch.manual_seed(seed)
    params = [p for n, p in draft.named_parameters() if not n.startswith("embed_tokens")]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    examples = list(data) + [(t, a, torch.full_like(y, sentinel)) for t, a, y in wrong]
    start, step = time.monotonic(), 0
    for step in range(1, max_steps + 1):
        opt.zero_grad()
        loss = sum(F.cross_entropy(draft(t, a)[0][0].clamp_min(-1e4), y, reduction="sum") for t, a, y in examples)
        loss.backward()
        opt.step()
        if step % 25 == 0 and acceptance(draft, examples) == 1.0:
            break
    stats = {"steps": step, "seconds": round(time.monotonic() - start, 1),
             "acceptance": round(acceptance(draft, data), 3),
             "acceptance_wrong_layers": round(acceptance(draft, wrong), 3) if wrong else None}
    if stats["acceptance"] < 0.95 or (wrong and stats["acceptance_wrong_layers"] > 0.05):
        raise RuntimeError(f"EAGLE-3 draft training did not converge: {stats}")
    return stats


def make_eagle3_draft(target_dir: str, out_dir: str, draft_vocab_size: int = 256, continuation: int = 24,
                      aux_layers: tuple[int, ...] | None = None, seed: int = 0, log=print) -> dict:
    """Write a tiny EAGLE-3 draft for the checkpoint in ``target_dir`` (AngelSlim's format), trained on
    the target's greedy continuations of TRAIN_PROMPTS. ``aux_layers`` default: vLLM's default for the
    target's depth when it has one, else (1, L//2, L-1) written into the config. Returns the training
    statistics (also in ``out_dir/training.json``)."""
    from hunyuan_plugins.core.model import load_model

    model = load_model(target_dir, torch.float32)
    cfg = model.cfg
    L = cfg.num_layers
    if aux_layers is None:
        try:
            default_aux_layers(L)
        except ValueError:  # shallower than real targets: name the layers in the config
            aux_layers = (1, L // 2, L - 1)
    c = draft_config(cfg, draft_vocab_size, aux_layers)
    layers = draft_aux_layers(c, L)
    sequences = continuations(model, TRAIN_PROMPTS, continuation)
    data = training_data(model, sequences, layers)

    torch.manual_seed(seed)
    draft = Eagle3Draft(c)
    for name, p in draft.named_parameters():
        if name.endswith("norm.weight"):
            nn.init.ones_(p)
        elif name != "embed_tokens.weight":
            nn.init.normal_(p, std=p.shape[-1] ** -0.5)
    with torch.no_grad():
        draft.embed_tokens.weight.copy_(model.model.embed_tokens.weight)  # AngelSlim copies the target's
        # draft vocabulary: the target tokens the training labels use most (AngelSlim counts its data)
        counts = torch.bincount(torch.cat([y for _, _, y in data]), minlength=cfg.vocab_size)
        used = torch.sort(torch.argsort(counts, descending=True, stable=True)[:draft_vocab_size]).values
        draft.d2t.copy_(used - torch.arange(draft_vocab_size))
        draft.t2d.zero_()
        draft.t2d[used] = True
    wrong = [ex for w in wrong_layer_sets(L, layers) for ex in training_data(model, sequences, w)]
    sentinel = int(used[counts[used] == 0][0]) if (counts[used] == 0).any() else None
    if sentinel is None:
        raise ValueError(f"draft_vocab_size={draft_vocab_size} leaves no unused draft token for the wrong-layer "
                         "sentinel: use a larger draft vocabulary")
    stats = {"aux_layers": list(layers), "before": round(acceptance(draft, data), 3), "sentinel": sentinel}
    stats.update(train_draft(draft, data, wrong, sentinel, seed=seed))
    log(f"[eagle3] draft for {cfg.architecture} ({L} layers, aux {layers}): {stats}")

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    save_file({k: v.detach().contiguous() for k, v in draft.state_dict().items()},
              os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "training.json"), "w") as f:
        json.dump(stats, f, indent=2)
    return stats


def load_draft(path: str) -> Eagle3Draft:
    """A draft directory (AngelSlim's format) -> :class:`Eagle3Draft` (fp32)."""
    from safetensors.torch import load_file

    with open(os.path.join(path, "config.json")) as f:
        c = json.load(f)
    if c.get("architectures") != [DRAFT_ARCH]:
        raise ValueError(f"{path}/config.json: architectures={c.get('architectures')}, expected [{DRAFT_ARCH!r}]")
    draft = Eagle3Draft(c)
    draft.load_state_dict(load_file(os.path.join(path, "model.safetensors")), strict=True)
    return draft.eval()
