"""Load-time dequantisation of a canonical weight stream (engine-agnostic, pure torch).

Used by the engine adapters when :func:`hunyuan_plugins.quant.plan` says ``DEQUANTIZED`` (CPU):
the layers are built unquantized and each quantized projection's tensors (by the format's
suffixes) are turned back into one plain ``<prefix>.weight`` as they stream in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from hunyuan_plugins.quant import QuantSpec


def dequantized(stream: Iterable[tuple[str, torch.Tensor]], spec: QuantSpec | None,
                dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Canonical stream with quantized projections replaced by their ``.weight`` dequantised to `dtype`;
    a projection whose tensors are incomplete at the end raises ValueError naming it."""
    if spec is None:
        yield from stream
        return
    fmt = spec.format
    needed = tuple(fmt.suffixes)
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in stream:
        prefix, suffix = name.rsplit(".", 1)
        if not fmt.is_quantized_tensor(suffix, tensor.dtype):
            yield name, tensor
            continue
        parts = pending.setdefault(prefix, {})
        parts[suffix] = tensor
        if all(s in parts for s in needed):
            del pending[prefix]
            yield f"{prefix}.weight", fmt.dequantize(spec, parts, dtype)
    if pending:
        prefix, parts = next(iter(pending.items()))
        missing = [s for s in needed if s not in parts]
        raise ValueError(f"quantized projection '{prefix}' is missing {missing} in the checkpoint")
