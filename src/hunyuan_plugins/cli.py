"""``hunyuan-plugins`` command line.

    hunyuan-plugins make-tiny --model a13b --dialect tencent --format bf16 --out DIR
    hunyuan-plugins make-tiny --all DIR          # every model x dialect x format fixture
    hunyuan-plugins make-tiny --trained --out DIR  # the toy trained to Hunyuan's reply format (~2 min)
    hunyuan-plugins make-tiny --eagle3 TARGET_DIR --out DIR  # a tiny EAGLE-3 draft (AngelSlim's format)
    hunyuan-plugins chat [--model DIR] "Hello"   # reference core answers a chat request
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys


def default_tiny() -> str:
    """Where the main job's default checkpoint lives (named by the trained toy's fingerprint)."""
    from hunyuan_plugins.core.trained import fingerprint

    cache = os.path.expanduser(os.environ.get("HUNYUAN_PLUGINS_CACHE", "~/.cache/hunyuan-plugins"))
    return os.path.join(cache, "tiny", f"a13b-trained-fp32-{fingerprint()}")


def tiny_suite() -> list[tuple[str, str, str]]:
    """Every (model, dialect, format) combination make-tiny can write."""
    from hunyuan_plugins.core.tiny import DIALECTS, FORMATS, MODELS, PLAIN_FORMATS

    combos = []
    for model, dialect, fmt in itertools.product(MODELS, DIALECTS, FORMATS):
        if (dialect == "native" and model == "large") or (dialect != "tencent" and fmt not in PLAIN_FORMATS):
            continue  # not expressible: see tiny_config
        combos.append((model, dialect, fmt))
    return combos


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hunyuan_plugins.core.tiny import make_tiny

    if args.all:
        combos = tiny_suite()
        for model, dialect, fmt in tqdm(combos, desc="tiny checkpoints", unit="ckpt"):
            make_tiny(os.path.join(args.all, f"{model}-{dialect}-{fmt}"), model, dialect, fmt, args.size, args.seed)
        print(f"wrote {len(combos)} checkpoints under {args.all}")
        return 0
    if not args.out:
        raise SystemExit("make-tiny: give --out DIR (one checkpoint) or --all DIR (the whole suite)")
    if args.eagle3:
        from hunyuan_plugins.core.eagle3 import make_eagle3_draft

        stats = make_eagle3_draft(args.eagle3, args.out, seed=args.seed)
        print(f"wrote an EAGLE-3 draft for {args.eagle3} to {args.out} (aux layers {stats['aux_layers']}, "
              f"first-token acceptance {stats['acceptance']} with them, {stats['acceptance_wrong_layers']} "
              "with any other layers)")
        return 0
    if args.trained:
        from hunyuan_plugins.core.trained import make_trained

        if (args.model, args.dialect, args.size, args.shards) != ("a13b", "tencent", "tiny", 1):
            raise SystemExit("make-tiny --trained: the trained toy is the tiny Tencent-dialect A13B "
                             "(drop --model/--dialect/--size/--shards)")
        if args.seed == 0:  # the main job's weights: trained once, cached, written in the format asked
            from hunyuan_plugins.core.trained import write_trained

            write_trained(args.out, args.format, ensure_default_tiny())
        else:
            make_trained(args.out, args.format, args.seed)
        print(f"wrote the trained toy a13b/tencent/{args.format} to {args.out}")
        return 0
    make_tiny(args.out, args.model, args.dialect, args.format, args.size, args.seed, args.shards,
              static_groups=args.static_groups)
    print(f"wrote {args.model}/{args.dialect}/{args.format} ({args.size}) to {args.out}")
    return 0


def ensure_default_tiny() -> str:
    """The main job's built-in default checkpoint: the trained toy (``make-tiny --trained``),
    trained once (about 2 minutes on 2 cores) and reused; written to a temporary directory first,
    so an interrupted run never leaves a half-written default behind."""
    import shutil
    import tempfile

    from hunyuan_plugins.core.trained import make_trained

    path = default_tiny()
    if not os.path.exists(os.path.join(path, "config.json")):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".training-", dir=os.path.dirname(path))
        make_trained(tmp, "fp32", log=lambda m: print(m, file=sys.stderr))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    return path


def cmd_chat(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer

    from hunyuan_plugins.core.model import generate, load_model

    path = args.model or ensure_default_tiny()
    tokenizer = AutoTokenizer.from_pretrained(path)
    messages = [{"role": "user", "content": args.prompt}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, enable_thinking=not args.no_think)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    model = load_model(path, dtype=getattr(torch, args.dtype))
    stop = tuple(model.cfg.eos_token_ids)
    out = generate(model, ids, args.max_tokens, stop)
    answer = {"model": path, "engine": "hunyuan_plugins reference core (plain torch, CPU)",
              "prompt": prompt, "completion_ids": out, "completion": tokenizer.decode(out)}
    print(json.dumps(answer, ensure_ascii=False, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    from hunyuan_plugins.core.tiny import DIALECTS, FORMATS, MODELS, SIZES

    parser = argparse.ArgumentParser(prog="hunyuan-plugins", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-tiny", help="write tiny generated Hunyuan checkpoints (test fixtures)")
    p.add_argument("--model", choices=MODELS, default="a13b")
    p.add_argument("--dialect", choices=DIALECTS, default="tencent")
    p.add_argument("--format", choices=FORMATS, default="bf16")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=int, default=1, help="write an index-sharded checkpoint")
    p.add_argument("--static-groups", action="store_true",
                   help="gptq-int4 only: act order with static_groups: true (contiguous g_idx)")
    p.add_argument("--trained", action="store_true",
                   help="the tiny A13B trained on CPU to Hunyuan's reply format (thinking, answer, a tool call): "
                        "a toy, not a capable model; ~2 min on 2 cores")
    p.add_argument("--eagle3", metavar="TARGET_DIR",
                   help="a tiny EAGLE-3 draft in AngelSlim's format (Eagle3LlamaForCausalLM, 1 layer) for the tiny "
                        "dense or A13B checkpoint in TARGET_DIR, trained on its greedy output (~15 s)")
    p.add_argument("--out", help="output directory of one checkpoint")
    p.add_argument("--all", metavar="DIR", help="write every model x dialect x format under DIR")
    p.set_defaults(func=cmd_make_tiny)
    c = sub.add_parser("chat", help="answer one chat request with the reference core")
    c.add_argument("prompt", nargs="?", default="Hello! Who are you?")
    c.add_argument("--model", help="checkpoint directory (default: the trained toy A13B, made once under "
                                    "~/.cache/hunyuan-plugins/tiny or $HUNYUAN_PLUGINS_CACHE/tiny)")
    c.add_argument("--no-think", action="store_true", help="enable_thinking=False in the chat template")
    c.add_argument("--max-tokens", type=int, default=32)
    c.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    c.set_defaults(func=cmd_chat)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
