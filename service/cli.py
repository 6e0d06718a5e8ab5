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


def _export(args: argparse.Namespace) -> None:
    from export.pipeline import run_export

    result = run_export(
        args.model, args.output, merge=args.merge, reduction=args.reduction, fmt=args.format,
        precision=args.precision, max_batch=args.max_batch, name=args.name, quiet=args.quiet,
    )  # fmt: skip
    for path in result.files:
        print(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sttm", description="Video action recognition with token merging.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a model: architecture, GFLOPs, tokens per layer")
    info.add_argument("model", help="checkpoint path or built-in name (videomae-s/b/l, timesformer-b, vit-tiny, ...)")
    info.add_argument("--merge", choices=["none", "tome", "sttm"], default=None)
    info.add_argument("--reduction", type=float, default=None, help="fraction of GFLOPs to save, e.g. 0.38")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(run=_info)

    exp = sub.add_parser("export", help="export to ONNX (merging inside the graph), TensorRT or a Triton repository")
    exp.add_argument("model", help="checkpoint path or built-in name")
    exp.add_argument("-o", "--output", required=True, help="file (.onnx / .plan) or directory (Triton repository)")
    exp.add_argument("--merge", choices=["none", "tome", "sttm"], default=None)
    exp.add_argument("--reduction", type=float, default=None)
    exp.add_argument("--format", choices=["onnx", "tensorrt", "triton"], default="onnx")
    exp.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    exp.add_argument("--max-batch", type=int, default=8, help="largest batch of the engine / Triton config")
    exp.add_argument("--name", default=None, help="model name (default: from MODEL)")
    exp.add_argument("--quiet", action="store_true", help="no progress on stderr")
    exp.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, RuntimeError) as err:  # CheckpointError / ExportError / ValidationError
        first, *rest = str(err).splitlines() or [type(err).__name__]
        print(f"sttm {args.command}: error: {first}", file=sys.stderr)
        if rest:  # a validation report: the table follows the one-line error
            print("\n".join(rest), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
