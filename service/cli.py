"""The `sttm` command. Subcommands import their (possibly torch-heavy) modules lazily,
so serving never pulls in torch."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args: argparse.Namespace) -> None:
    from models import load_model
    from models.info import describe, render

    model = load_model(args.model, merge=args.merge, reduction=args.reduction)
    info = describe(model)
    print(json.dumps(info, indent=2) if args.json else render(info))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sttm", description="Video action recognition with token merging.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a model: architecture, GFLOPs, tokens per layer")
    info.add_argument("model", help="checkpoint path or built-in name (videomae-s/b/l, timesformer-b, vit-tiny, ...)")
    info.add_argument("--merge", choices=["none", "tome", "sttm"], default=None)
    info.add_argument("--reduction", type=float, default=None, help="fraction of GFLOPs to save, e.g. 0.38")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError
        print(f"sttm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
