"""`sttm label`: label a video archive (files, folders, globs, manifests) into Parquet or JSON
Lines parts, on a local Ray or a Ray cluster. Ray and the job are imported inside the
function: building the `sttm` parser imports neither, and an environment without the `label`
extra gets one line saying what to install.

Exit status: 0 every input has a row and every row this run wrote is `ok`; 1 every input has
a row and some this run wrote are errors (the summary's last line counts them by code); 2 the
job did not start (a usage error, no input, a model this machine cannot run, an OUT with
parts and no `--resume`, no Ray); 3 the job started and failed (Ray itself failed: the parts
written so far are complete, `--resume` finishes the job)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from cli.flags import Flags, at_least, timeline_only

INSTALL = "pip install -e '.[label]' (ray[data] and pyarrow)"
EXIT_OK, EXIT_SOME_ERRORS, EXIT_FAILED = 0, 1, 3  # 2: did not start (cli.main, as every command)


def _job(args: argparse.Namespace):
    from label.decode import Windows
    from label.engine import Plan
    from label.job import Job
    from runtime.segments import TimelineLimits, outside
    from runtime.settings import DEMO_ONNX, RuntimeSettings

    overrides = {k: v for k, v in (("backend", args.backend), ("precision", args.precision)) if v is not None}
    s = RuntimeSettings(**overrides)
    given = timeline_only(args, ("window_s", "stride_s", "min_score"))
    windows = Windows(**given) if args.timeline else None  # its defaults for what is not given
    checks = [("top_k", args.top_k, TimelineLimits.TOP_K), ("actor_gpus", args.actor_gpus, {"ge": 0})]
    if windows:  # the routes' limits, as in `sttm predict --timeline`
        limits = {
            "window_s": TimelineLimits.WINDOW_S,
            "stride_s": TimelineLimits.STRIDE_S,
            "min_score": TimelineLimits.MIN_SCORE,
        }
        checks += [(flag, getattr(windows, flag), bounds) for flag, bounds in limits.items()]
    for flag, value, bounds in checks:
        if problem := outside(value, bounds):
            raise ValueError(f"--{flag.replace('_', '-')}: {problem}")
    return Job(
        inputs=tuple(args.inputs),
        out=Path(args.output),
        model=DEMO_ONNX if args.model in (None, "demo") else Path(args.model),
        options=s.backend_options,
        limits=s.limits,
        max_bytes=int(s.max_upload_mb * 2**20),
        top_k=args.top_k,
        timeline=windows,
        resume=args.resume,
        rows_per_part=args.part_rows,
        address=args.address or os.environ.get("RAY_ADDRESS") or None,
        plan=Plan(actors=args.actors, actor_gpus=args.actor_gpus, files_per_task=args.files_per_task),
    )


def _label_command(args: argparse.Namespace) -> int:
    missing = [m for m in ("ray", "pyarrow") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"sttm label: error: needs {' and '.join(missing)}, which this environment lacks: {INSTALL}",
            file=sys.stderr,
        )
        return 2
    from ray.exceptions import RayError

    from label.job import run

    job = _job(args)
    try:
        summary = run(job, head_lost=_head_lost)
    except RayError as err:  # not a video's fault (those are rows): Ray, a node, the model's actors
        first = (str(err).strip().splitlines() or [type(err).__name__])[-1][:300]
        _failed(f"{type(err).__name__}: {first}")
        return EXIT_FAILED
    return EXIT_SOME_ERRORS if summary.errors else EXIT_OK


def _failed(why: str) -> None:
    print(f"sttm label: error: the job failed ({why}); --resume finishes it", file=sys.stderr, flush=True)


def _head_lost(message: str) -> None:
    """The cluster's head is gone: Ray would end this process itself at 60 s with exit 1 and a
    C++ log line; end it now, with the status and the line of a failed job."""
    _failed(message)
    os._exit(EXIT_FAILED)


def add_label(sub, f: Flags) -> None:
    lab = sub.add_parser(
        "label",
        parents=[f.runtime],
        help="label a video archive (files, folders, globs, manifests) with Ray Data, here or on a cluster",
    )
    lab.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files, folders (recursive), globs, or a .csv / .jsonl manifest (path or url, id)",
    )
    lab.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="a folder of parts: Parquet (default), JSON Lines when it ends in .jsonl, .ndjson or .json",
    )
    lab.add_argument("--model", default=None, help="exported model or ladder (default: the bundled demo model)")
    lab.add_argument("--top-k", type=int, default=5)
    lab.add_argument("--timeline", action="store_true", help="each video window by window: windows and segments")
    lab.add_argument("--window-s", type=float, default=None, help="--timeline: window length (s; default 2)")
    lab.add_argument("--stride-s", type=float, default=None, help="--timeline: window stride (s; default 1)")
    lab.add_argument("--min-score", type=float, default=None, help="--timeline: under it a window is 'no action'")
    lab.add_argument("--resume", action="store_true", help="skip the ids OUT already has (after a crash or a kill)")
    lab.add_argument(
        "--address", default=None, help="a Ray cluster (RAY_ADDRESS; default: a local Ray started for the job)"
    )
    lab.add_argument("--actors", type=at_least(1), default=None, help="inference actors (default: one per node)")
    lab.add_argument("--actor-gpus", type=float, default=0.0, help="accelerators per actor (1: TensorRT, CUDA)")
    lab.add_argument("--files-per-task", type=at_least(1), default=4, help="videos per decoding task")
    lab.add_argument("--part-rows", type=at_least(1), default=1000, help="rows per output part")
    lab.set_defaults(run=_label_command)
