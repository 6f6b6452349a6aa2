"""Checkpoint conversion for TensorRT-LLM: plain torch + safetensors, runs on CPU, imports no TRT-LLM.

Two outputs are produced from any Hunyuan checkpoint the core accepts (every dialect, bf16/fp32,
Tencent FP8, GPTQ-Int4), after the whole checkpoint was validated by
:class:`hunyuan_plugins.core.checkpoint.Checkpoint`:

1. **PyTorch-backend directory** (what ``LLM(model=...)`` / ``trtllm-serve`` load with our model
   classes): canonical tensor names (``core/checkpoint.py``), floats cast to the target dtype, the
   router kept fp32, and quantization expressed the way TensorRT-LLM 1.2.x recognises it, i.e. a
   ModelOpt ``hf_quant_config.json`` (TRT-LLM's ``load_hf_quant_config`` does not accept Tencent's
   per-tensor ``quantization_config``; it only maps ``fp8`` with ``weight_block_size``):

   * Tencent FP8 (static per-tensor W8A8) -> ``quant_algo: FP8``. The tensors already have the
     ModelOpt names (``weight`` e4m3, ``weight_scale``, ``input_scale``) and are copied bit-exactly.
   * GPTQ-Int4 (AutoGPTQ v1, symmetric, contiguous groups) -> the ModelOpt ``quant_algo: W4A16_AWQ``
     layout TensorRT-LLM's ``W4A16_AWQ_LinearMethod`` loads: ``weight`` int8 [out/2, in] holding
     signed int4 ``q - 8`` packed along the output (row 2j in the low nibble, 2j+1 in the high),
     ``weight_scale`` [out, in/group] (the GPTQ fp16 scales, transposed, unchanged) and
     ``pre_quant_scale`` = 1 [in] (read unconditionally by its non-fused loader). Dequantisation is
     bit-identical to the GPTQ formula. Act order with ``static_groups: true`` keeps contiguous
     groups and is accepted; plain act order (``desc_act: true``) groups non-contiguous input rows,
     which the W4A16 layout cannot express without permuting activations: refused with an
     explanation (see docs/trtllm.md).

2. **TensorRT-engine-backend checkpoint** (TRT-LLM 1.2.x legacy format): ``config.json`` (the
   ``PretrainedConfig`` fields: architecture, dtype, mapping, quantization, plus a ``hunyuan``
   section with the per-layer layout) and ``rank{N}.safetensors`` per TP rank. TensorRT-LLM has no
   Hunyuan network for this backend, so tensor names are our canonical names, sliced per rank:
   column-parallel (q/k/v, gate/up, lm_head) on the output dim, row-parallel (o, down) on the input
   dim, routed experts split over EP ranks (``moe_ep_rank = tp_rank % ep``) and then over
   ``moe_tp = tp / ep`` on their intermediate dim, everything else (norms, embedding, router,
   per-tensor FP8 scales) replicated. KV heads are replicated when ``tp > num_key_value_heads``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator

import torch

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.checkpoint import Checkpoint
from hunyuan_plugins.quant import QuantSpec, gptq

#: The TensorRT-LLM release this package is written against (source read at the v1.2.1 tag era).
TRTLLM_PINNED_VERSION = "1.2.1"

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
QUANT_CHOICES = ("fp8", "int4")
#: checkpoint quant_method -> the --quant this builder converts it to (TensorRT-LLM FP8 / W4A16)
QUANT_OF_METHOD = {"fp8": "fp8", "gptq": "int4"}


class BuildError(ValueError):
    """A checkpoint or an option the builder cannot turn into a TensorRT-LLM deployment."""


# ---- plan ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    cfg: HunyuanConfig
    dtype: str                 # bfloat16 | float16 | float32: activations and unquantized weights
    quant: str | None          # None | fp8 | int4
    tp: int
    ep: int
    group_size: int | None     # int4 only

    @property
    def moe_tp(self) -> int:
        return self.tp // self.ep

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def make_plan(ckpt: Checkpoint, tp: int = 1, ep: int = 1, dtype: str = "auto", quant: str | None = None) -> Plan:
    """Check that the requested deployment is expressible; raise :class:`BuildError` naming what is not."""
    cfg = ckpt.cfg
    spec = ckpt.quant
    if spec is not None and spec.method not in QUANT_OF_METHOD:
        raise BuildError(f"quantization_config.quant_method={spec.method!r}: the TensorRT-LLM builder converts "
                         f"{', '.join(QUANT_OF_METHOD)} checkpoints only")
    have = None if spec is None else QUANT_OF_METHOD[spec.method]
    if quant is not None and quant not in QUANT_CHOICES:
        raise BuildError(f"--quant {quant!r}: expected one of {QUANT_CHOICES}")
    if quant != have and quant is not None:
        if have is None:
            raise BuildError(
                f"--quant {quant}: the checkpoint is unquantized (config.json has no quantization_config). The builder "
                "converts quantized checkpoints, it does not calibrate: FP8 needs calibrated static input scales and "
                "GPTQ needs calibration data. Quantize with Tencent's AngelSlim first, or drop --quant.")
        raise BuildError(f"--quant {quant}: the checkpoint is quantized as {have} "
                         f"(quantization_config.quant_method={spec.method!r}); pass --quant {have} or omit --quant")
    quant = have
    if spec is not None and spec.method == "gptq" and spec.desc_act and not spec.static_groups:
        raise BuildError(
            "quantization_config.desc_act=true (act-order GPTQ): its groups are non-contiguous sets of input rows, "
            "which TensorRT-LLM's W4A16 layout (contiguous groups along the input, no activation permutation) cannot "
            "represent exactly. Re-export with desc_act=false or static_groups=true, or serve this checkpoint with "
            "vLLM/SGLang.")
    if dtype == "auto":
        dtype = cfg.torch_dtype if cfg.torch_dtype in DTYPES else "bfloat16"
    if dtype not in DTYPES:
        raise BuildError(f"--dtype {dtype!r}: expected auto or one of {sorted(DTYPES)}")
    if quant is not None and dtype == "float32":
        raise BuildError(f"--dtype float32 with --quant {quant}: TensorRT-LLM's FP8 and W4A16 kernels take 16-bit "
                         "activations; use bfloat16 or float16")
    for name, v in (("--tp", tp), ("--ep", ep)):
        if not isinstance(v, int) or v < 1:
            raise BuildError(f"{name} must be a positive integer, got {v!r}")
    if tp % ep:
        raise BuildError(f"--ep {ep} must divide --tp {tp} (TensorRT-LLM: moe_tp_size * moe_ep_size = tp_size)")
    try:
        cfg.heads_per_rank(tp)
    except ValueError as e:
        raise BuildError(f"--tp {tp}: {e}") from None
    if cfg.vocab_size % tp:
        raise BuildError(f"--tp {tp} does not divide vocab_size={cfg.vocab_size}")
    moe_tp = tp // ep
    if ep > 1 and not cfg.is_moe:
        raise BuildError(f"--ep {ep}: {cfg.architecture} is a dense model, it has no experts to distribute")
    if cfg.is_moe and cfg.num_experts % ep:
        raise BuildError(f"--ep {ep} does not divide num_experts={cfg.num_experts}")
    group = None
    if quant == "int4":
        if spec.group_size in (None, -1, 0):
            # hf_quant_config.json would need group_size 0, and W4A16_AWQ_LinearMethod divides by it;
            # per-channel int4 is TensorRT-LLM's WeightOnlyQuantLinearMethod, a layout not written here
            raise BuildError(f"quantization_config.group_size={spec.group_size} (per-channel GPTQ): TensorRT-LLM's "
                             "W4A16_AWQ linear needs a positive group size; per-channel int4 is not supported")
        group = spec.group_size
    for i, layer in enumerate(cfg.layers):
        sizes = [("intermediate size of the dense MLP / shared expert", layer.shared_size, tp)]
        if layer.moe:
            sizes.append(("moe_intermediate_size", layer.expert_size, moe_tp))
        for what, size, parts in sizes:
            if size and size % parts:
                raise BuildError(f"layer {i}: {what}={size} is not divisible by {parts} (tp={tp}, ep={ep})")
            if size and group and (size // parts) % group:
                raise BuildError(f"layer {i}: {what}={size} split {parts} ways is not a multiple of the GPTQ "
                                 f"group_size={group}: row-parallel int4 shards must hold whole groups")
    if group and cfg.q_size // tp % group:
        raise BuildError(f"o_proj input {cfg.q_size} split over tp={tp} is not a multiple of group_size={group}")
    return Plan(cfg, dtype, quant, tp, ep, group)


# ---- quantization formats TensorRT-LLM reads --------------------------------------------------
def exclude_modules(cfg: HunyuanConfig) -> list[str]:
    """Modules TensorRT-LLM must keep unquantized: fnmatch patterns over our model classes' module names.

    Tencent's ``ignored_layers`` / ``modules_to_not_convert`` entries are translated (router
    ``mlp.gate.wg`` -> ``mlp.gate``; entries not rooted at ``model.``/``lm_head`` match as suffixes);
    the fp32 router and the LM head are always excluded.
    """
    spec = QuantSpec.from_hf(cfg.quantization_config)
    out = ["lm_head"]
    for entry in spec.ignored:
        name = re.sub(r"(^|\.)mlp\.gate\.wg$", r"\1mlp.gate", entry)
        if not name.startswith(("model.", "lm_head", "*")):
            name = "*." + name
        if name not in out:
            out.append(name)
    if cfg.is_moe and "model.layers.*.mlp.gate" not in out:
        out.append("model.layers.*.mlp.gate")
    return out


def hf_quant_config(plan: Plan) -> dict | None:
    """The ModelOpt ``hf_quant_config.json`` TensorRT-LLM's PyTorch backend recognises."""
    if plan.quant is None:
        return None
    q: dict = {"quant_algo": "FP8" if plan.quant == "fp8" else "W4A16_AWQ", "kv_cache_quant_algo": None,
               "exclude_modules": exclude_modules(plan.cfg)}
    if plan.quant == "int4":
        # pre_quant_scale: true, as the tensors now carry one (identity) per int4 linear
        q.update(group_size=plan.group_size, has_zero_point=False, pre_quant_scale=True)
    return {"producer": {"name": "hunyuan-plugins", "version": "0.1.0"}, "quantization": q}


def gptq_to_w4a16(prefix: str, t: dict[str, torch.Tensor], act_dtype: torch.dtype = torch.float16
                  ) -> dict[str, torch.Tensor]:
    """GPTQ v1 sym (contiguous groups) -> the ModelOpt W4A16 layout TensorRT-LLM's
    ``W4A16_AWQ_LinearMethod`` loads (docs/trtllm.md, "W4A16 layout"):

    * ``weight`` int8 [out/2, in]: signed int4 (-8..7, two's complement), two output rows per byte,
      row 2j in the low nibble and row 2j+1 in the high one (ModelOpt's ``pack_int4_in_uint8``);
      the loader takes ``weight.T`` and preprocesses that for its mixed GEMM;
    * ``weight_scale`` [out, in/G] fp16 (GPTQ's own scales; the loader transposes them);
    * ``pre_quant_scale`` [in] = 1 in the activation dtype: the loader of a non-fused linear
      reads it unconditionally (AWQ's input smoothing; GPTQ has none, so it is the identity).
    """
    for key in ("qweight", "qzeros", "scales", "g_idx"):
        if key not in t:
            raise BuildError(f"tensor '{prefix}.{key}' is missing (GPTQ needs qweight, qzeros, scales, g_idx)")
    q = gptq.unpack_int4_rows(t["qweight"])                    # [in, out] in 0..15
    zeros = gptq.unpack_int4_cols(t["qzeros"]) + 1             # [groups, out]; v1 stores zero - 1
    in_f, out_f = q.shape
    groups = t["scales"].shape[0]
    if not bool((zeros == gptq.SYM_ZERO).all()):
        raise BuildError(f"tensor '{prefix}.qzeros': zero points other than {gptq.SYM_ZERO} (asymmetric GPTQ) "
                         "cannot be expressed in TensorRT-LLM's symmetric W4A16 layout")
    if out_f % 2:
        raise BuildError(f"tensor '{prefix}.qweight': {out_f} output features; W4A16 packs two rows per byte")
    expect = torch.arange(in_f, dtype=torch.int64) // (in_f // groups)
    if tuple(t["g_idx"].shape) != (in_f,) or not torch.equal(t["g_idx"].to(torch.int64), expect):
        raise BuildError(f"tensor '{prefix}.g_idx' is not the contiguous grouping i // {in_f // groups} "
                         "(act-order GPTQ); TensorRT-LLM's W4A16 layout cannot express it")
    s = (q - gptq.SYM_ZERO).t().contiguous()              # [out, in] signed, -8..7
    lo, hi = s[0::2] & 0xF, s[1::2] & 0xF                 # output rows 2j, 2j+1
    packed = (lo | (hi << 4)).to(torch.uint8).view(torch.int8)
    return {f"{prefix}.weight": packed.contiguous(),
            f"{prefix}.weight_scale": t["scales"].to(torch.float16).t().contiguous(),
            f"{prefix}.pre_quant_scale": torch.ones(in_f, dtype=act_dtype)}


def unpack_w4a16(weight: torch.Tensor) -> torch.Tensor:
    """Inverse of the packing in :func:`gptq_to_w4a16`: int8 [out/2, in] -> int64 [out, in] in -8..7."""
    b = weight.view(torch.uint8).to(torch.int64)
    lo, hi = b & 0xF, (b >> 4) & 0xF
    s = torch.stack([lo, hi], dim=1).reshape(2 * weight.shape[0], weight.shape[1])
    return torch.where(s >= 8, s - 16, s)


def dequantize_w4a16(weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    s = unpack_w4a16(weight).float()
    group = s.shape[1] // weight_scale.shape[1]
    return s * weight_scale.float().repeat_interleave(group, dim=1)


# ---- streaming conversion --------------------------------------------------------------------
def converted_tensors(ckpt: Checkpoint, plan: Plan, on_read=None) -> Iterator[tuple[str, torch.Tensor]]:
    """(canonical name, tensor in the PyTorch-backend format), streamed file by file.

    ``on_read()`` is called once per source tensor read (progress reporting)."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in ckpt.iter_tensors():
        if on_read is not None:
            on_read()
        prefix, suffix = name.rsplit(".", 1)
        if name.endswith("mlp.gate.weight"):
            yield name, t.float()                       # fp32 router, never quantized
        elif plan.quant == "int4" and suffix in ("qweight", "qzeros", "scales", "g_idx"):
            group = pending.setdefault(prefix, {})
            group[suffix] = t
            if len(group) == 4:
                yield from gptq_to_w4a16(prefix, pending.pop(prefix), plan.torch_dtype).items()
        elif t.dtype == torch.float8_e4m3fn or suffix in ("weight_scale", "input_scale"):
            yield name, t.float().reshape(()) if suffix != "weight" else t   # bit-exact; scalars as 0-dim fp32
        elif t.dtype.is_floating_point:
            yield name, t.to(plan.torch_dtype)
        else:
            raise BuildError(f"tensor '{name}' has dtype {t.dtype}, which no supported format stores")
    if pending:
        raise BuildError(f"incomplete GPTQ tensors for {sorted(pending)[:5]}")


# ---- TP / EP sharding --------------------------------------------------------------------------
_EXPERT = re.compile(r"^model\.layers\.\d+\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.(\w+)$")
_COL = re.compile(r"\.(self_attn\.q_proj|mlp(\.shared_mlp)?\.(gate|up)_proj)\.(weight|weight_scale)$|^lm_head\.weight$")
_KV = re.compile(r"\.self_attn\.[kv]_proj\.(weight|weight_scale)$")
_ROW = re.compile(r"\.(self_attn\.o_proj|mlp(\.shared_mlp)?\.down_proj)\.(weight|weight_scale)$")


def shard_rule(name: str, plan: Plan) -> tuple[str, int | None, int, int]:
    """How `name` is laid out over TP ranks: (kind, dim, parts, experts_owner_ep_rank_or_-1).

    kind: 'replicate' | 'col' | 'row' | 'kv'; for experts, parts = moe_tp and the last field is the
    EP rank that owns the expert.
    """
    if name.endswith(".pre_quant_scale"):  # [in]: split with the input, i.e. only in row-parallel layers
        kind, _, parts, owner = shard_rule(name[:-len("pre_quant_scale")] + "weight", plan)
        return ("row", 0, parts, owner) if kind == "row" else ("replicate", None, 1, owner)
    is_scalar_scale = name.endswith(("input_scale",)) or (name.endswith("weight_scale") and plan.quant == "fp8")
    m = _EXPERT.match(name)
    if m:
        e, proj = int(m.group(1)), m.group(2)
        owner = e // (plan.cfg.num_experts // plan.ep)
        if is_scalar_scale:
            return "replicate", None, 1, owner
        return ("row", 1, plan.moe_tp, owner) if proj == "down" else ("col", 0, plan.moe_tp, owner)
    if is_scalar_scale:
        return "replicate", None, 1, -1
    if _KV.search(name):
        return "kv", 0, plan.tp, -1
    if _COL.search(name):
        return "col", 0, plan.tp, -1
    if _ROW.search(name):
        return "row", 1, plan.tp, -1
    return "replicate", None, 1, -1


def tp_slice(name: str, t: torch.Tensor, plan: Plan, rank: int) -> torch.Tensor | None:
    """The part of tensor `name` rank `rank` holds (None: an expert of another EP rank)."""
    kind, dim, parts, owner = shard_rule(name, plan)
    if owner >= 0:
        ep_rank, moe_tp_rank = rank % plan.ep, rank // plan.ep
        if owner != ep_rank:
            return None
        rank = moe_tp_rank
    if kind == "replicate":
        return t
    if kind == "kv":
        kv_heads = plan.cfg.num_kv_heads
        if plan.tp > kv_heads:     # replicate: ranks r*kv//tp share one head
            head = rank * kv_heads // plan.tp
            rows = t.shape[0] // kv_heads
            return t[head * rows:(head + 1) * rows].contiguous()
    if t.shape[dim] % parts:
        raise BuildError(f"tensor '{name}' dim {dim} of size {t.shape[dim]} cannot be split into {parts} shards")
    return t.chunk(parts, dim=dim)[rank].contiguous()


# ---- safetensors writer that streams (constant memory) ---------------------------------------
_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float8_e4m3fn: "F8_E4M3",
              torch.int8: "I8", torch.uint8: "U8", torch.int32: "I32", torch.int64: "I64"}


class SafetensorsWriter:
    """Append tensors one at a time to a temporary data file; `close()` writes header + data."""

    def __init__(self, path: str, metadata: dict[str, str] | None = None):
        self.path = path
        self.header: dict = {"__metadata__": metadata or {"format": "pt"}}
        self.offset = 0
        self._tmp = tempfile.NamedTemporaryFile(dir=os.path.dirname(path) or ".", delete=False, suffix=".part")

    def add(self, name: str, t: torch.Tensor) -> None:
        if name in self.header:
            raise BuildError(f"tensor '{name}' written twice to {self.path}")
        data = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
        self.header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                             "data_offsets": [self.offset, self.offset + len(data)]}
        self._tmp.write(data)
        self.offset += len(data)

    @property
    def nbytes(self) -> int:
        return self.offset

    def close(self) -> None:
        self._tmp.close()
        head = json.dumps(self.header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        with open(self.path, "wb") as out, open(self._tmp.name, "rb") as data:
            out.write(struct.pack("<Q", len(head)))
            out.write(head)
            shutil.copyfileobj(data, out, 16 << 20)
        os.unlink(self._tmp.name)


# ---- the TRT-LLM engine-backend checkpoint config ----------------------------------------------
def engine_config(plan: Plan) -> dict:
    cfg = plan.cfg
    first_moe = next((layer for layer in cfg.layers if layer.moe), None)
    quant: dict = {"quant_algo": None, "kv_cache_quant_algo": None}
    if plan.quant == "fp8":
        quant.update(quant_algo="FP8", exclude_modules=exclude_modules(cfg))
    elif plan.quant == "int4":
        quant.update(quant_algo="W4A16_GPTQ", group_size=plan.group_size, has_zero_point=False,
                     exclude_modules=exclude_modules(cfg))
    out = {
        "architecture": cfg.architecture,
        "dtype": plan.dtype,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_size": cfg.head_dim,
        "hidden_act": cfg.hidden_act,
        "intermediate_size": cfg.layers[0].shared_size,
        "norm_epsilon": cfg.rms_norm_eps,
        "position_embedding_type": "rope_gpt_neox",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rotary_base": cfg.rope_base,          # theta * alpha ** (d / (d - 2)): static alpha-NTK base
        "rotary_scaling": None,
        "qk_layernorm": cfg.use_qk_norm,
        "share_embedding_table": cfg.tie_word_embeddings,
        "mapping": {"world_size": plan.tp, "tp_size": plan.tp, "pp_size": 1, "cp_size": 1,
                    "moe_tp_size": plan.moe_tp, "moe_ep_size": plan.ep},
        "quantization": quant,
        "moe": None if first_moe is None else {
            "num_experts": cfg.num_experts, "top_k": first_moe.top_k, "shared_expert_intermediate_size":
            first_moe.shared_size, "normalization_mode": 1 if first_moe.renormalize else 0},
        "hunyuan": {
            "tensor_names": "canonical Hunyuan names (hunyuan_plugins.core.checkpoint), sliced per rank",
            "use_cla": cfg.use_cla, "cla_share_factor": cfg.cla_share_factor,
            "rope_theta": cfg.rope_theta, "rope_alpha": cfg.rope_alpha,
            "layers": [dataclasses.asdict(layer) for layer in cfg.layers],
        },
    }
    return out
