"""The `sttm` command: the parser, built from each command group's pieces, and `main`.
Subcommands import their (possibly torch-heavy) modules lazily, so serving never pulls in torch."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from cli import bench, export, label, model, predict, serve
from cli.flags import shared

# Each adds one subcommand (or a group: `bench`), in the order `sttm --help` lists them.
COMMANDS = (
    serve.add_serve,
    serve.add_triton,
    predict.add_predict,
    label.add_label,
    model.add_info,
    export.add_export,
    export.add_validate,
    model.add_synth,
    model.add_train,
    export.add_eval,
    model.add_explain,
    bench.add_bench,
)


def build_parser() -> argparse.ArgumentParser:
    flags = shared()
    parser = argparse.ArgumentParser(prog="sttm", description="Video action recognition with token merging.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub, flags)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # the warnings filters and display as they were, after
        warnings.showwarning = _one_line(args.command)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        code = args.run(args) or 0
    except ModuleNotFoundError as err:  # a serving-only install (no torch) running a torch command
        print(
            f"sttm {args.command}: error: needs the '{err.name}' package, which this environment lacks "
            "(pip install torch==2.13.0, then pip install -e '.[export]')",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:  # the reader went away (`sttm info MODEL | head -3`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
        return 141  # as a process SIGPIPE ends (128 + 13)
    except (ValueError, OSError, RuntimeError) as err:  # CheckpointError / ExportError / ValidationError
        first, *rest = _settings_error(err) or str(err).splitlines() or [type(err).__name__]
        print(f"sttm {args.command}: error: {first}", file=sys.stderr)
        if rest:  # a validation report: the table follows the one-line error
            print("\n".join(rest), file=sys.stderr)
        return 2
    return code


def _one_line(command: str):
    """A warning as one line naming the command (`sttm export: warning: ...`), not Python's two
    lines of file, line number and source."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        print(f"sttm {command}: warning: {text}", file=file or sys.stderr)

    return show


def _settings_error(err: Exception) -> list[str]:
    """A settings model's pydantic ValidationError as one line naming each STTM_* variable
    (`[]` for any other error)."""
    from pydantic import ValidationError

    if not isinstance(err, ValidationError) or not err.title.endswith("Settings"):
        return []
    parts = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"STTM_{'_'.join(map(str, e['loc'])).upper()}: {msg}" if e["loc"] else msg)
    return ["; ".join(parts)]


if __name__ == "__main__":
    sys.exit(main())
