"""Checkpoint naming: every Hunyuan dialect -> one canonical layout, validated before anything loads.

Canonical names (what the reference model and every adapter consume) are Tencent's per-module
names, with the router renamed from ``mlp.gate.wg`` to ``mlp.gate``::

    model.embed_tokens.weight                      lm_head.weight (untied only)       model.norm.weight
    model.layers.N.{input,post_attention}_layernorm.weight
    model.layers.N.self_attn.{q,k,v,o}_proj.<S>    (no k/v on CLA cross layers)
    model.layers.N.self_attn.{query,key}_layernorm.weight
    model.layers.N.mlp.gate.weight                 fp32 router [E, H]
    model.layers.N.mlp.experts.E.{gate,up,down}_proj.<S>
    model.layers.N.mlp.shared_mlp.{gate,up,down}_proj.<S>
    model.layers.N.mlp.{gate,up,down}_proj.<S>     (dense layers and dense models)

``<S>`` is ``weight`` unquantized, else the suffixes of the checkpoint's quantization format
(``hunyuan_plugins.quant``: ``weight|weight_scale|input_scale`` for Tencent FP8,
``qweight|qzeros|scales|g_idx`` for GPTQ-Int4). Dialects accepted on read:

* Tencent: the names above with ``mlp.gate.wg.weight``;
* transformers-native v5: fused 3-D experts ``mlp.experts.gate_up_proj`` [E, 2I, H] (gate rows
  first) and ``mlp.experts.down_proj`` [E, H, I];
* engine-fused: ``self_attn.qkv_proj.weight`` laid out per KV group [kv, q_per_kv + 2, d, H] and
  ``gate_and_up_proj.weight`` stored [up; gate].

A checkpoint is checked whole, from the safetensors headers, before one tensor is read: a
missing, unexpected, wrongly shaped or wrongly typed tensor raises :class:`CheckpointError`
naming every offender. Nothing loads half.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator

import torch
from safetensors import safe_open

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.quant import QuantSpec
from hunyuan_plugins.quant.stream import dequantized

SAFE_DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn, "I32": torch.int32, "I64": torch.int64, "I8": torch.int8,
    "U8": torch.uint8, "I16": torch.int16, "BOOL": torch.bool,
}
FLOATS = (torch.float32, torch.bfloat16, torch.float16)


class CheckpointError(ValueError):
    """The tensors of a checkpoint do not match its config; lists every problem found."""

    def __init__(self, path: str, problems: list[str]):
        self.problems = problems
        shown = "\n  ".join(problems[:40]) + (f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else "")
        super().__init__(f"checkpoint {path} does not match its config ({len(problems)} problem(s)):\n  {shown}")


# ---- what a config says must be there ---------------------------------------------------------
def linear_shapes(cfg: HunyuanConfig) -> dict[str, tuple[int, int]]:
    """Canonical prefix of every linear projection -> (out_features, in_features)."""
    H = cfg.hidden_size
    out: dict[str, tuple[int, int]] = {}
    for i, spec in enumerate(cfg.layers):
        p = f"model.layers.{i}"
        out[f"{p}.self_attn.q_proj"] = (cfg.q_size, H)
        if cfg.owns_kv(i):
            out[f"{p}.self_attn.k_proj"] = (cfg.kv_size, H)
            out[f"{p}.self_attn.v_proj"] = (cfg.kv_size, H)
        out[f"{p}.self_attn.o_proj"] = (H, cfg.q_size)
        mlps = []
        if spec.moe:
            mlps += [(f"{p}.mlp.experts.{e}", spec.expert_size) for e in range(cfg.num_experts)]
            if spec.shared_size:
                mlps.append((f"{p}.mlp.shared_mlp", spec.shared_size))
        else:
            mlps.append((f"{p}.mlp", spec.shared_size))
        for m, inter in mlps:
            out[f"{m}.gate_proj"] = (inter, H)
            out[f"{m}.up_proj"] = (inter, H)
            out[f"{m}.down_proj"] = (H, inter)
    if not cfg.tie_word_embeddings:
        out["lm_head"] = (cfg.vocab_size, H)
    return out


def other_shapes(cfg: HunyuanConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of every tensor that is not a linear projection."""
    H, d = cfg.hidden_size, cfg.head_dim
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg.vocab_size, H), "model.norm.weight": (H,)}
    for i, spec in enumerate(cfg.layers):
        p = f"model.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = (H,)
        out[f"{p}.post_attention_layernorm.weight"] = (H,)
        if cfg.use_qk_norm:
            out[f"{p}.self_attn.query_layernorm.weight"] = (d,)
            out[f"{p}.self_attn.key_layernorm.weight"] = (d,)
        if spec.moe:
            out[f"{p}.mlp.gate.weight"] = (cfg.num_experts, H)
    return out


def quant_spec(cfg: HunyuanConfig) -> QuantSpec | None:
    return QuantSpec.from_hf(cfg.quantization_config)


def expected_tensors(cfg: HunyuanConfig) -> dict[str, tuple[tuple[int, ...], tuple[torch.dtype, ...]]]:
    """Canonical name -> (shape, allowed dtypes) for the whole checkpoint."""
    spec = quant_spec(cfg)
    out = {name: (shape, FLOATS) for name, shape in other_shapes(cfg).items()}
    for prefix, (o, i) in linear_shapes(cfg).items():
        if spec is None or not spec.is_quantized(prefix) or prefix == "lm_head":
            out[f"{prefix}.weight"] = ((o, i), FLOATS)
            continue
        for suffix, shape in spec.shapes(o, i).items():
            out[f"{prefix}.{suffix}"] = (tuple(shape), spec.format.suffixes[suffix])
    return out


# ---- reading a dialect ------------------------------------------------------------------------
@dataclasses.dataclass
class _Entry:
    """One canonical tensor, produced from one stored tensor by `take` (identity, slice, ...)."""

    source: str                                  # stored tensor name
    shape: tuple[int, ...]
    dtype: torch.dtype
    take: Callable[[torch.Tensor], torch.Tensor] = lambda t: t


_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def _map_name(name: str, shape: tuple[int, ...], dtype: torch.dtype, cfg: HunyuanConfig) -> dict[str, _Entry]:
    """Stored name -> the canonical entries it provides (empty dict: tensor to ignore)."""
    if name == "lm_head.weight" and cfg.tie_word_embeddings:
        return {}  # tied head stored anyway: embed_tokens is authoritative
    m = _LAYER.match(name)
    if not m:
        return {name: _Entry(name, shape, dtype)}
    i, rest = int(m.group(1)), m.group(2)
    p = f"model.layers.{i}"
    if rest == "mlp.gate.wg.weight":
        return {f"{p}.mlp.gate.weight": _Entry(name, shape, dtype)}
    if rest in ("mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj.weight") and len(shape) == 3:
        E, two_i, H = shape
        I = two_i // 2
        out = {}
        for e in range(E):
            out[f"{p}.mlp.experts.{e}.gate_proj.weight"] = _Entry(name, (I, H), dtype, lambda t, e=e, I=I: t[e, :I])
            out[f"{p}.mlp.experts.{e}.up_proj.weight"] = _Entry(name, (two_i - I, H), dtype,
                                                                lambda t, e=e, I=I: t[e, I:])
        return out
    if rest in ("mlp.experts.down_proj", "mlp.experts.down_proj.weight") and len(shape) == 3:
        return {f"{p}.mlp.experts.{e}.down_proj.weight": _Entry(name, tuple(shape[1:]), dtype, lambda t, e=e: t[e])
                for e in range(shape[0])}
    if rest == "self_attn.qkv_proj.weight":
        return _split_qkv(name, shape, dtype, cfg, p)
    fused = re.match(r"^(mlp(?:\.shared_mlp)?)\.gate_and_up_proj\.weight$", rest)
    if fused:  # stored [up; gate]
        half, H = shape[0] // 2, shape[1]
        base = f"{p}.{fused.group(1)}"
        return {f"{base}.up_proj.weight": _Entry(name, (half, H), dtype, lambda t, n=half: t[:n]),
                f"{base}.gate_proj.weight": _Entry(name, (shape[0] - half, H), dtype, lambda t, n=half: t[n:])}
    return {name: _Entry(name, shape, dtype)}


def _split_qkv(name, shape, dtype, cfg: HunyuanConfig, p: str) -> dict[str, _Entry]:
    kv, d, H = cfg.num_kv_heads, cfg.head_dim, cfg.hidden_size
    g = cfg.num_heads // kv
    if tuple(shape) != ((g + 2) * kv * d, H):
        # a wrong fused shape cannot be split; report it under its own name
        return {name: _Entry(name, shape, dtype)}

    def part(t: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return t.view(kv, g + 2, d, H)[:, lo:hi].reshape(-1, H)

    return {f"{p}.self_attn.q_proj.weight": _Entry(name, (g * kv * d, H), dtype, lambda t: part(t, 0, g)),
            f"{p}.self_attn.k_proj.weight": _Entry(name, (kv * d, H), dtype, lambda t: part(t, g, g + 1)),
            f"{p}.self_attn.v_proj.weight": _Entry(name, (kv * d, H), dtype, lambda t: part(t, g + 1, g + 2))}


def safetensors_files(path: str) -> dict[str, str]:
    """Stored tensor name -> file, for a single-file or an index-sharded safetensors checkpoint."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(path, ["model.safetensors.index.json has no weight_map"])
        missing = sorted({f for f in weight_map.values() if not os.path.exists(os.path.join(path, f))})
        if missing:
            raise CheckpointError(path, [f"shard listed in the index is missing: {f}" for f in missing])
        return {name: os.path.join(path, f) for name, f in weight_map.items()}
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        with safe_open(single, "pt") as f:
            return {name: single for name in f.keys()}
    others = [f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth"))] if os.path.isdir(path) else []
    hint = f" (found {others[0]}: only safetensors is supported)" if others else ""
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path}{hint}")


class Checkpoint:
    """A validated view of a checkpoint directory in canonical names."""

    def __init__(self, path: str | os.PathLike, cfg: HunyuanConfig | None = None):
        self.path = str(path)
        self.cfg = cfg or HunyuanConfig.from_pretrained(self.path)
        self.quant = quant_spec(self.cfg)
        files = safetensors_files(self.path)
        problems: list[str] = []
        self.entries: dict[str, _Entry] = {}
        self._files: dict[str, str] = files
        for file in sorted(set(files.values())):
            with safe_open(file, "pt") as f:
                stored = set(f.keys())
                for name in [n for n, fl in files.items() if fl == file]:
                    if name not in stored:
                        problems.append(f"tensor '{name}' is listed in the index but not in {os.path.basename(file)}")
                        continue
                    sl = f.get_slice(name)
                    dtype = SAFE_DTYPES.get(sl.get_dtype())
                    for canon, entry in _map_name(name, tuple(sl.get_shape()), dtype, self.cfg).items():
                        if canon in self.entries:
                            problems.append(f"tensor '{canon}' is provided twice "
                                            f"(by '{self.entries[canon].source}' and '{name}')")
                        self.entries[canon] = entry
        problems += self._compare(expected_tensors(self.cfg))
        if self.quant is not None:
            problems += _unmatched_ignores(self.quant, self.cfg)
            if not problems:
                problems += self._check_values()
        if problems:
            raise CheckpointError(self.path, problems)

    def _check_values(self) -> list[str]:
        """The values the format checks (GPTQ ``g_idx`` against ``desc_act``), read tensor by tensor."""
        fmt, problems = self.quant.format, []
        for canon, entry in self.entries.items():
            prefix, suffix = canon.rsplit(".", 1)
            if suffix in fmt.checked_suffixes and fmt.is_quantized_tensor(suffix, entry.dtype):
                with safe_open(self._files[entry.source], "pt") as f:
                    why = fmt.check_values(self.quant, suffix, entry.take(f.get_tensor(entry.source)))
                if why:
                    problems.append(f"tensor '{canon}'{_via(entry, canon)} {why}")
        return problems

    def _compare(self, expected) -> list[str]:
        problems = []
        for canon, (shape, dtypes) in expected.items():
            entry = self.entries.get(canon)
            if entry is None:
                problems.append(f"missing tensor '{canon}' (expected shape {list(shape)})")
                continue
            got = entry.shape
            if got != shape and not (shape == () and got == (1,)):  # per-tensor scales: [] or [1]
                problems.append(f"tensor '{canon}'{_via(entry, canon)} has shape {list(got)}, expected {list(shape)}")
            if entry.dtype not in dtypes:
                problems.append(f"tensor '{canon}'{_via(entry, canon)} has dtype {entry.dtype}, "
                                f"expected {' or '.join(map(str, dtypes))}")
        for canon in sorted(set(self.entries) - set(expected)):
            problems.append(f"unexpected tensor '{self.entries[canon].source}'" + _why_unexpected(canon, self.cfg))
        return problems

    # ---- reading ---------------------------------------------------------------------------
    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(canonical name, stored tensor) for every tensor, quantized ones as stored; file by file."""
        by_file: dict[str, list[str]] = {}
        for canon, entry in self.entries.items():
            by_file.setdefault(self._files[entry.source], []).append(canon)
        for file, names in by_file.items():
            with safe_open(file, "pt") as f:
                cache: dict[str, torch.Tensor] = {}
                for canon in names:
                    entry = self.entries[canon]
                    if entry.source not in cache:
                        cache = {entry.source: f.get_tensor(entry.source)}
                    yield canon, entry.take(cache[entry.source]).contiguous()

    def state_dict(self, dtype: torch.dtype = torch.float32, keep_quantized: bool = False) -> dict[str, torch.Tensor]:
        """Canonical name -> tensor, floats in `dtype` (the router in fp32). Quantized linears are
        dequantized to `dtype` ('<prefix>.weight'), or with ``keep_quantized`` kept as stored
        ('<prefix>.<suffix>' of the format; per-tensor scales as 0-dim fp32)."""
        out: dict[str, torch.Tensor] = {}
        quantized: dict[str, dict[str, torch.Tensor]] = {}
        fmt = None if self.quant is None else self.quant.format
        for canon, t in self.iter_tensors():
            prefix, suffix = canon.rsplit(".", 1)
            if fmt is not None and fmt.is_quantized_tensor(suffix, t.dtype):
                quantized.setdefault(prefix, {})[suffix] = t
            elif canon.endswith("mlp.gate.weight"):
                out[canon] = t.float()  # the router stays fp32
            else:
                out[canon] = t.to(dtype)
        for prefix, tensors in quantized.items():
            if keep_quantized:
                for suffix, t in tensors.items():
                    out[f"{prefix}.{suffix}"] = t.reshape(()) if t.dtype == torch.float32 and t.numel() == 1 else t
            else:
                out[f"{prefix}.weight"] = self.quant.dequantize(tensors, dtype)
        return out


# canonical projection -> (fused parameter, shard id): how vLLM and SGLang pack their linears
# (QKVParallelLinear "q"/"k"/"v", MergedColumnParallelLinear 0/1 = gate/up).
_FUSED = ((".q_proj.", ".qkv_proj.", "q"), (".k_proj.", ".qkv_proj.", "k"), (".v_proj.", ".qkv_proj.", "v"),
          (".gate_proj.", ".gate_up_proj.", 0), (".up_proj.", ".gate_up_proj.", 1))


def fused_target(name: str, cfg: HunyuanConfig) -> tuple[str, str | int] | None:
    """Parameter and shard id of a canonical non-expert tensor in an engine with fused qkv and
    gate/up linears; None when it loads as is (a CLA cross layer's q_proj stands alone)."""
    for part, fused, shard in _FUSED:
        if part in name:
            if part == ".q_proj." and not cfg.owns_kv(int(name.split(".layers.", 1)[1].split(".", 1)[0])):
                return None
            return name.replace(part, fused), shard
    return None


def canonical_weights(weights: Iterable[tuple[str, torch.Tensor]],
                      cfg: HunyuanConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """Stream (stored name, tensor) of any dialect -> (canonical name, tensor), tensors as stored.

    For engine loaders that hand out a checkpoint tensor by tensor (vLLM, SGLang). Validate the
    whole checkpoint first with ``Checkpoint(path)`` when the directory is at hand.
    """
    for name, tensor in weights:
        for canon, entry in _map_name(name, tuple(tensor.shape), tensor.dtype, cfg).items():
            yield canon, entry.take(tensor)


def validated_weights(weights: Iterable[tuple[str, torch.Tensor]], cfg: HunyuanConfig, path: str, *,
                      dequantize_to: torch.dtype | None = None,
                      logger: logging.Logger | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """An engine loader's weight stream, checked and in canonical names: the whole checkpoint at
    `path` is validated against `cfg` from its headers first (raises :class:`CheckpointError`
    naming every bad tensor; a `path` that is no local directory is checked tensor by tensor as
    it loads, with a warning), then (stored name, tensor) -> (canonical name, tensor), quantized
    projections dequantised to `dequantize_to` when given (``quant.plan`` said DEQUANTIZED)."""
    if os.path.isdir(path):
        Checkpoint(path, cfg)
    else:
        (logger or logging.getLogger(__name__)).warning(
            "hunyuan_plugins: %r is not a local directory; tensors are checked as they load", path)
    stream = canonical_weights(weights, cfg)
    if dequantize_to is not None:
        stream = dequantized(stream, quant_spec(cfg), dequantize_to)
    return stream


def _unmatched_ignores(spec: QuantSpec, cfg: HunyuanConfig) -> list[str]:
    """Entries of the config's list of unquantized modules that name no module of this model (a typo
    there would silently quantize, or fail to find, the module meant). ``lm_head`` is always
    accepted (AngelSlim lists it for tied heads too), as is every layer's router ``mlp.gate.wg``."""
    from hunyuan_plugins.quant import _ignore_matches

    modules = set(linear_shapes(cfg)) | {f"model.layers.{i}.mlp.gate.wg" for i in range(cfg.num_layers)}
    field = spec.format.ignore_field
    return [f"quantization_config.{field} entry '{entry}' names no module of this model "
            f"(num_hidden_layers={cfg.num_layers}, num_experts={cfg.num_experts})"
            for entry in spec.ignored
            if entry != "lm_head" and not any(_ignore_matches(entry, m) for m in modules)]


def _via(entry: _Entry, canon: str) -> str:
    return "" if entry.source == canon else f" (from '{entry.source}')"


def _why_unexpected(canon: str, cfg: HunyuanConfig) -> str:
    m = _LAYER.match(canon)
    if m:
        i = int(m.group(1))
        if i >= cfg.num_layers:
            return f": the config has num_hidden_layers={cfg.num_layers}"
        if re.search(r"self_attn\.[kv]_proj\.", canon) and not cfg.owns_kv(i):
            return (f": layer {i} is a CLA cross layer (use_cla, cla_share_factor={cfg.cla_share_factor}) "
                    f"that reuses layer {cfg.layers[i].kv_source}'s K/V and must have no k_proj/v_proj")
        if ".mlp.experts." in canon:
            if cfg.is_moe:
                return f": the config has num_experts={cfg.num_experts}"
            return ": the config describes a dense layer"
    return ""
