"""The commands README.md gives, as the tests that exercise them read them (issue 13: every README
command runs as written in CI, or is labelled as needing real weights / a GPU).

A command is an indented line (four spaces) of a README code block that starts with a program name
in ``PROGRAMS``; a line ending in ``\\`` continues on the next. Comment lines (``#``) and output
excerpts are not commands. A real-weights command sits in a block whose first line is the comment
``REAL_WEIGHTS`` (the engine tests then parse it with the engine's own CLI and build the engine's
configuration on a tiny checkpoint of the same architecture and format).
"""

from __future__ import annotations

import os
import re
import shlex

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PROGRAMS = ("bash", "hunyuan-plugins", "hunyuan-trtllm", "hunyuan-trtllm-build", "vllm", "python", "pip")
REAL_WEIGHTS = "# real weights on GPUs"


def blocks(path: str = README) -> list[list[str]]:
    """The README's indented code blocks, as lists of lines without the indent."""
    out: list[list[str]] = []
    current: list[str] = []
    for line in open(path, encoding="utf-8").read().splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif current and line.strip() == "":
            current.append("")
        else:
            if any(x.strip() for x in current):
                out.append([x for x in current if x.strip()])
            current = []
    if any(x.strip() for x in current):
        out.append([x for x in current if x.strip()])
    return out


def commands(path: str = README) -> list[tuple[str, bool]]:
    """(command, labelled real-weights) for every command of the README, continuations joined."""
    out = []
    for block in blocks(path):
        real = block[0].strip().lower().startswith(REAL_WEIGHTS.lower())
        lines = iter(block)
        for line in lines:
            if not re.match(rf"({'|'.join(map(re.escape, PROGRAMS))})( |$)", line):
                continue
            while line.endswith("\\"):
                line = line[:-1].rstrip() + " " + next(lines).strip()
            out.append((re.sub(r"\s+#.*$", "", line).strip(), real))
    return out


def argv(command: str) -> list[str]:
    return shlex.split(command)
