"""Every kernel launch of the library goes through :func:`launch`, so it can also be *recorded*
instead of run: under :func:`recording` the launchers (fed meta tensors) return their outputs'
shapes and leave behind the exact (kernel, grid, arguments, constexprs, options) they would have
launched. ``compile_report`` compiles those ahead of time for a GPU target that is not present,
so what it reports is what the launchers really launch, not a copy of their arguments."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class Launch:
    kernel: Any   # the @triton.jit function
    grid: tuple
    args: tuple   # positional runtime arguments
    meta: dict    # constexprs and launch options (num_warps, num_stages)

    @property
    def name(self) -> str:
        return self.kernel.__name__ if hasattr(self.kernel, "__name__") else self.kernel.fn.__name__


_recorder: list[Launch] | None = None


def launch(kernel, grid: tuple, *args, **meta) -> None:
    if _recorder is not None:
        _recorder.append(Launch(kernel, tuple(grid), args, meta))
    else:
        kernel[grid](*args, **meta)


@contextlib.contextmanager
def recording() -> Iterator[list[Launch]]:
    """Record launches instead of running them (not thread-safe; for tooling only)."""
    global _recorder
    previous, _recorder = _recorder, []
    try:
        yield _recorder
    finally:
        _recorder = previous
