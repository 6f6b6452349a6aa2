"""The Hunyuan reference model in plain torch: A13B (MoE), Large (MoE + CLA) and dense.

Readable in one sitting, runs on CPU, the ground truth every engine adapter is tested against.
One forward pass, per decoder layer:

    x = input_layernorm(h)
    q = rope(Wq x) ; k = rope(Wk x) (own layers)      NeoX rotate-half RoPE, alpha-NTK base
    q = query_layernorm(q)                            QK-norm comes AFTER RoPE
    k, v: own layers compute them, CLA cross layers read their partner's from the cache
    h = h + Wo attention(q, k, v)                     causal, GQA, softmax in fp32
    h = h + mlp(post_attention_layernorm(h))          MoE (routed + shared) or dense SwiGLU

Exact KV sharing for CLA (docs/architecture.md, "CLA"): key_layernorm(k) = w * k_hat with
k_hat = k / rms(k), and q . (w * k_hat) = (q * w) . k_hat. So every layer caches the *weight-free*
normalised key k_hat, and folds its own key-norm weight into its query (:func:`fold_key_norm`, which
every adapter uses too). A CLA pair then shares one cache entry exactly while each layer keeps its
own key norm. Layers without QK-norm cache plain keys.

Parameter names are the canonical checkpoint names (see checkpoint.py), except that the routed
experts of a layer are held fused: ``mlp.experts.w13`` [E, 2I, H] (gate rows then up rows) and
``mlp.experts.w2`` [E, H, I].

Quantized checkpoints run as the checkpoint specifies. Tencent FP8 is static per-tensor W8A8:
every quantized projection (:class:`Fp8Linear`, and each routed expert in :class:`Fp8Experts`)
quantizes its input with its own stored ``input_scale`` before multiplying with its e4m3 weight
(``torch.ops.hunyuan.linear_fp8`` / ``moe_experts_fp8``). Weight-only FP8 is an explicit option of
:func:`load_model` (``fp8_activations="none"``), never the default. GPTQ-Int4 is W4A16: its
weights are dequantised exactly at load and activations stay in the model dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hunyuan_plugins import ops
from hunyuan_plugins.config import HunyuanConfig


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) over the last dim, computed in fp32, returned in x's dtype (no weight)."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def fold_key_norm(q: torch.Tensor, k: torch.Tensor | None, key_norm_weight: torch.Tensor, eps: float,
                  head_dim: int, own_k: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CLA recipe: `q` (already query-normed) gets this layer's key-norm weight folded in, and
    the layer's own `k` becomes the weight-free k / rms(k) that both layers of a pair cache. A
    cross layer's `k` (its partner's, normalised already; or None) comes back unchanged
    (``own_k=False``). Any layout whose last dims are (heads * head_dim) or (heads, head_dim);
    shapes are kept."""
    q = (q.reshape(-1, head_dim) * key_norm_weight).reshape(q.shape)
    if k is not None and own_k:
        k = rms_normalize(k.reshape(-1, head_dim), eps).reshape(k.shape)
    return q, k


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * rms_normalize(x, self.eps)


def rope_cos_sin(cfg: HunyuanConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [T, head_dim] for any positions (static alpha base: valid past max_position_embeddings)."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, d, 2, dtype=torch.float32, device=positions.device) / d))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NeoX (rotate-half) RoPE on [B, T, heads, d] with cos/sin [T, d]."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    cos, sin = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    return x * cos + rotated * sin


class KVCache:
    """One K and one V buffer per *KV-owning* layer: a CLA model holds half as many."""

    def __init__(self, cfg: HunyuanConfig, batch: int, max_len: int, dtype: torch.dtype, device=None):
        self.slot = [cfg.kv_slot(layer) for layer in range(cfg.num_layers)]
        shape = (cfg.num_kv_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        s = self.slot[layer]
        self.k[s, :, start:start + k.shape[1]] = k
        self.v[s, :, start:start + v.shape[1]] = v

    def read(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.slot[layer]
        return self.k[s, :, :end], self.v[s, :, :end]

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
    """Causal GQA attention: q [B, T, Hq, d] at positions start.., k/v [B, S, Hkv, d] -> [B, T, Hq, d]."""
    T, S, d = q.shape[1], k.shape[1], q.shape[-1]
    rep = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(rep, dim=2)
    v = v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) * d ** -0.5
    future = torch.arange(S, device=q.device)[None, :] > (start + torch.arange(T, device=q.device))[:, None]
    scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("bhts,bshd->bthd", probs, v.float()).to(q.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: HunyuanConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        H, d = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(H, cfg.q_size, bias=False)
        if cfg.owns_kv(layer):  # CLA cross layers have no k_proj / v_proj at all
            self.k_proj = nn.Linear(H, cfg.kv_size, bias=False)
            self.v_proj = nn.Linear(H, cfg.kv_size, bias=False)
        self.o_proj = nn.Linear(cfg.q_size, H, bias=False)
        if cfg.use_qk_norm:
            self.query_layernorm = RMSNorm(d, cfg.rms_norm_eps)
            self.key_layernorm = RMSNorm(d, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, cache: KVCache, start: int) -> torch.Tensor:
        B, T, _ = x.shape
        cfg = self.cfg
        owns_kv = cfg.owns_kv(self.layer)
        q = apply_rope(self.q_proj(x).view(B, T, cfg.num_heads, cfg.head_dim), cos, sin)
        k = apply_rope(self.k_proj(x).view(B, T, cfg.num_kv_heads, cfg.head_dim), cos, sin) if owns_kv else None
        if cfg.use_qk_norm:  # this layer's key norm folded into q; weight-free k, exact for both of a pair
            q, k = fold_key_norm(self.query_layernorm(q), k, self.key_layernorm.weight, cfg.rms_norm_eps, cfg.head_dim)
        if owns_kv:
            cache.write(self.layer, start, k, self.v_proj(x).view(B, T, cfg.num_kv_heads, cfg.head_dim))
        k, v = cache.read(self.layer, start + T)
        return self.o_proj(attend(q, k, v, start).reshape(B, T, cfg.q_size))


class MLP(nn.Module):
    """SwiGLU MLP: dense layers, dense models, and the MoE shared expert."""

    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    def __init__(self, hidden: int, num_experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_experts, hidden, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), self.weight.float())  # fp32 router, as Tencent and transformers


class Fp8Linear(nn.Module):
    """A Tencent FP8 projection, W8A8 static: e4m3 ``weight`` [out, in], fp32 ``weight_scale`` and
    ``input_scale`` (0-dim). The input is quantized with ``input_scale`` before the GEMM."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, dtype=torch.float8_e4m3fn),
                                   requires_grad=False)
        self.weight_scale = nn.Parameter(torch.ones(()), requires_grad=False)
        self.input_scale = nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.linear_fp8(x, self.weight, self.weight_scale.reshape(1), self.input_scale.reshape(1),
                              [self.weight.shape[0]])


class Experts(nn.Module):
    def __init__(self, num_experts: int, hidden: int, inter: int):
        super().__init__()
        self.w13 = nn.Parameter(torch.zeros(num_experts, 2 * inter, hidden))
        self.w2 = nn.Parameter(torch.zeros(num_experts, hidden, inter))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return ops.moe_experts(x, self.w13, self.w2, weights, ids)


class Fp8Experts(nn.Module):
    """A layer's routed experts in Tencent FP8, W8A8 static per projection: e4m3 ``w13`` / ``w2`` as
    in :class:`Experts`, weight scales ``w13_scale`` [E, 2] (gate, up) and ``w2_scale`` [E], input
    scales ``a13_scale`` [E, 2] (gate, up) and ``a2_scale`` [E]: each expert's gate, up and down
    projection quantizes its input with its own stored scale."""

    def __init__(self, num_experts: int, hidden: int, inter: int):
        super().__init__()
        E, f8 = num_experts, torch.float8_e4m3fn
        for name, shape, dtype in (("w13", (E, 2 * inter, hidden), f8), ("w2", (E, hidden, inter), f8),
                                   ("w13_scale", (E, 2), torch.float32), ("w2_scale", (E,), torch.float32),
                                   ("a13_scale", (E, 2), torch.float32), ("a2_scale", (E,), torch.float32)):
            setattr(self, name, nn.Parameter(torch.zeros(shape, dtype=dtype), requires_grad=False))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return ops.moe_experts_fp8(x, self.w13, self.w2, self.w13_scale, self.w2_scale, self.a13_scale,
                                   self.a2_scale, weights, ids)


class MoE(nn.Module):
    def __init__(self, cfg: HunyuanConfig, layer: int):
        super().__init__()
        spec = cfg.layers[layer]
        self.top_k, self.renormalize = spec.top_k, spec.renormalize
        self.gate = Router(cfg.hidden_size, cfg.num_experts)
        self.experts = Experts(cfg.num_experts, cfg.hidden_size, spec.expert_size)
        self.shared_mlp = MLP(cfg.hidden_size, spec.shared_size) if spec.shared_size else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        weights, ids = ops.moe_route(self.gate(flat), self.top_k, self.renormalize)
        out = self.experts(flat, weights, ids).view_as(x)
        return out + self.shared_mlp(x) if self.shared_mlp is not None else out


class DecoderLayer(nn.Module):
    def __init__(self, cfg: HunyuanConfig, layer: int):
        super().__init__()
        spec = cfg.layers[layer]
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg, layer) if spec.moe else MLP(cfg.hidden_size, spec.shared_size)

    def forward(self, h, cos, sin, cache, start):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, cache, start)
        return h + self.mlp(self.post_attention_layernorm(h))


class Backbone(nn.Module):
    def __init__(self, cfg: HunyuanConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class HunyuanForCausalLM(nn.Module):
    """The reference model for all three Hunyuan architectures."""

    def __init__(self, cfg: HunyuanConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.model.embed_tokens.weight
        return KVCache(self.cfg, batch, max_len, p.dtype, p.device)

    def forward(self, tokens: torch.Tensor, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """tokens [B, T] at positions start..start+T-1 -> fp32 logits [B, T, vocab]."""
        B, T = tokens.shape
        if cache is None:
            cache = self.new_cache(B, start + T)
        positions = torch.arange(start, start + T, device=tokens.device)
        cos, sin = rope_cos_sin(self.cfg, positions)
        h = self.model.embed_tokens(tokens)
        for layer in self.model.layers:
            h = layer(h, cos, sin, cache, start)
        h = self.model.norm(h)
        head = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, head).float()


@torch.no_grad()
def generate(model: HunyuanForCausalLM, prompt: list[int], max_new_tokens: int,
             stop_ids: tuple[int, ...] = ()) -> list[int]:
    """Greedy decoding with a KV cache; returns the new tokens (stop token included if hit)."""
    device = model.model.embed_tokens.weight.device
    cache = model.new_cache(1, len(prompt) + max_new_tokens)
    logits = model(torch.tensor([prompt], device=device), 0, cache)
    out: list[int] = []
    pos = len(prompt)
    for _ in range(max_new_tokens):
        token = int(logits[0, -1].argmax())
        out.append(token)
        if token in stop_ids:
            break
        logits = model(torch.tensor([[token]], device=device), pos, cache)
        pos += 1
    return out


@torch.no_grad()
def prompt_logprobs(model: HunyuanForCausalLM, ids: list[int]) -> torch.Tensor:
    """log p(ids[i] | ids[:i]) for i >= 1, in fp32: what engines report as prompt logprobs."""
    device = model.model.embed_tokens.weight.device
    logits = model(torch.tensor([ids], device=device))[0]
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return logp.gather(1, torch.tensor(ids[1:], device=device)[:, None]).squeeze(1)


def load_model(path: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               fp8_activations: str = "static") -> HunyuanForCausalLM:
    """Any Hunyuan checkpoint (every dialect) -> reference model in `dtype` (the router in fp32).

    Tencent FP8 runs W8A8 as specified (``fp8_activations="static"``: each projection quantizes its
    input with its stored ``input_scale``); ``fp8_activations="none"`` dequantises the weights and
    leaves activations alone (weight-only W8A16: an explicit approximation). GPTQ-Int4 weights are
    dequantised exactly (W4A16)."""
    from hunyuan_plugins.core.checkpoint import Checkpoint

    if fp8_activations not in ("static", "none"):
        raise ValueError(f"fp8_activations={fp8_activations!r}: expected 'static' (W8A8) or 'none' (weight-only)")
    ckpt = Checkpoint(path)
    cfg = ckpt.cfg
    w8a8 = ckpt.quant is not None and ckpt.quant.method == "fp8" and fp8_activations == "static"
    sd = ckpt.state_dict(dtype, keep_quantized=w8a8)
    with torch.device("meta"):
        model = HunyuanForCausalLM(cfg)
        if w8a8:
            _use_fp8_modules(model, ckpt.quant)
    for i, spec in enumerate(cfg.layers):
        if spec.moe:
            _stack_experts(sd, cfg, i, fp8=isinstance(model.model.layers[i].mlp.experts, Fp8Experts))
    model.load_state_dict(sd, strict=True, assign=True)
    for name, p in model.named_parameters():  # router and fp8 scales in fp32, fp8 weights as stored
        want = torch.float32 if name.endswith(("mlp.gate.weight", "_scale")) else dtype
        if p.dtype not in (want, torch.float8_e4m3fn):
            raise AssertionError(f"{name} loaded as {p.dtype}")
    return model.to(device).eval()


def _use_fp8_modules(model: HunyuanForCausalLM, spec) -> None:
    """Swap every projection the FP8 checkpoint quantizes for its W8A8 module (on meta, before loading)."""
    for name, module in list(model.named_modules()):
        parent_name, _, child = name.rpartition(".")
        if isinstance(module, nn.Linear) and name != "lm_head" and spec.is_quantized(name):
            setattr(model.get_submodule(parent_name), child, Fp8Linear(module.in_features, module.out_features))
        elif isinstance(module, Experts):
            quantized = {spec.is_quantized(f"{name}.{e}.{p}") for e in range(module.w13.shape[0])
                         for p in ("gate_proj", "up_proj", "down_proj")}
            if quantized == {True, False}:
                raise ValueError(f"{name}: the quantization config leaves some routed experts unquantized and "
                                 "quantizes others; a layer's experts must be all FP8 or all unquantized")
            if quantized == {True}:
                E, two_i, H = module.w13.shape
                setattr(model.get_submodule(parent_name), child, Fp8Experts(E, H, two_i // 2))


def _stack_experts(sd: dict[str, torch.Tensor], cfg: HunyuanConfig, layer: int, fp8: bool) -> None:
    """Per-expert canonical tensors of one layer -> the fused parameters of :class:`Experts` or
    :class:`Fp8Experts`, in place."""
    p = f"model.layers.{layer}.mlp.experts"
    E = cfg.num_experts

    def take(suffix: str) -> tuple[list, list, list]:
        return tuple([sd.pop(f"{p}.{e}.{proj}.{suffix}") for e in range(E)]
                     for proj in ("gate_proj", "up_proj", "down_proj"))

    gate, up, down = take("weight")
    sd[f"{p}.w13"] = torch.stack([torch.cat([g, u]) for g, u in zip(gate, up)])
    sd[f"{p}.w2"] = torch.stack(down)
    if fp8:
        for name, suffix in (("w13_scale", "weight_scale"), ("a13_scale", "input_scale")):
            g, u, d = take(suffix)
            sd[f"{p}.{name}"] = torch.stack([torch.stack([a, b]) for a, b in zip(g, u)])
            sd[f"{p}.{name.replace('13', '2')}"] = torch.stack(d)
