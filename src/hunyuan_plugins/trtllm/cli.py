"""``hunyuan-trtllm``: run TensorRT-LLM tools with the Hunyuan model classes registered.

    hunyuan-trtllm serve MODEL [trtllm-serve options...]   # = trtllm-serve MODEL ... --custom_module_dirs <ours>
    hunyuan-trtllm build ...                                # = hunyuan-trtllm-build ...

``serve`` first imports :mod:`hunyuan_plugins.trtllm` (so a broken install fails here, with our
message), then execs ``trtllm-serve`` with the same arguments plus ``--custom_module_dirs`` pointing
at our plugin package, so TensorRT-LLM's own mechanism re-registers the classes in the server
process it starts (an exec'd process does not inherit our import).
"""

from __future__ import annotations

import os
import shutil
import sys

from hunyuan_plugins.trtllm import plugin_module_dir


def serve_argv(args: list[str]) -> list[str]:
    """The trtllm-serve command line for `args` (adds --custom_module_dirs unless given)."""
    argv = ["trtllm-serve", *args]
    if not any(a == "--custom_module_dirs" or a.startswith("--custom_module_dirs=") for a in args):
        argv += ["--custom_module_dirs", plugin_module_dir()]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    cmd, rest = args[0], args[1:]
    if cmd == "build":
        from hunyuan_plugins.trtllm.build import main as build_main
        return build_main(rest)
    if cmd != "serve":
        print(f"hunyuan-trtllm: unknown command {cmd!r} (expected serve or build)", file=sys.stderr)
        return 2
    from hunyuan_plugins.trtllm import register
    try:
        register()
    except ImportError as e:
        print(f"hunyuan-trtllm serve: {e}", file=sys.stderr)
        return 2
    exe = shutil.which("trtllm-serve")
    if exe is None:
        print("hunyuan-trtllm serve: `trtllm-serve` is not on PATH although tensorrt_llm imports; "
              "reinstall tensorrt_llm", file=sys.stderr)
        return 2
    argv_ = serve_argv(rest)
    os.execv(exe, argv_)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
