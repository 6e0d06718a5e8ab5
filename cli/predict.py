"""`sttm predict`: the classify use case, locally, without a server — the same decoding,
batching and answer as `/v1/classify` (each result is that route's JSON plus the path); with
`--timeline`, `/v1/timeline`'s. The serving stack is imported inside the functions: building
the `sttm` parser imports none of it."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING

from cli.flags import Flags, timeline_only

if TYPE_CHECKING:
    from service.classify import ClassifyOptions, TimelineOptions
    from service.schemas import TimelineResponse
    from service.settings import Settings


async def _predict(settings: Settings, videos: list[str], opts: ClassifyOptions) -> list[dict]:
    from media import VideoError
    from service.lifecycle import open_classifier
    from service.schemas import ClassifyResponse

    results = []
    async with open_classifier(settings) as classifier:
        for video in videos:
            try:
                result = ClassifyResponse.model_validate(await classifier.classify(video, opts))
                answer = result.model_dump(exclude_none=True)  # as the route answers (no `merges: null`)
            except (VideoError, OSError) as err:
                answer = {"error": {"code": getattr(err, "code", "io_error"), "message": str(err)}}
            results.append({"path": video, **answer})
    return results


def predict(model: str, videos: list[str], top_k: int = 5, **settings) -> list[dict]:
    """One result per video: `/v1/classify`'s answer, or `{"error": {"code", "message"}}`.
    `settings`: any other `Settings` field (e.g. `backend`, `precision`); the rest come from
    `STTM_*` variables, as for the server."""
    from service.schemas import ClassifyQuery
    from service.settings import Settings

    opts = ClassifyQuery(top_k=top_k).options()  # POST /v1/classify's limits and defaults
    return asyncio.run(_predict(Settings(model=model, **settings), videos, opts))


async def _timeline(settings: Settings, video: str, opts: TimelineOptions) -> TimelineResponse:
    from service.lifecycle import open_classifier
    from service.schemas import TimelineResponse

    async with open_classifier(settings) as classifier:
        return TimelineResponse.model_validate(await classifier.timeline(video, opts))


def timeline(model: str, video: str, opts: TimelineOptions, fmt: str = "json", **settings) -> str:
    """`/v1/timeline`'s answer for one video, as JSON, WebVTT or CSV text. Raises VideoError."""
    from service import timeline_formats
    from service.settings import Settings

    answer = asyncio.run(_timeline(Settings(model=model, **settings), video, opts))
    return answer.model_dump_json(indent=2) if fmt == "json" else timeline_formats.render(fmt, answer.segments)


def _query(model, **flags):
    """A route's query model from the flags, so the command keeps the route's limits; a value
    out of them is one line naming the flag."""
    from pydantic import ValidationError

    try:
        return model(**flags)
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"--{first['loc'][0].replace('_', '-')}: {first['msg'].lower()}") from None


def _timeline_command(args: argparse.Namespace, given: dict, runtime: dict) -> int:
    from service.schemas import TimelineQuery

    if len(args.videos) != 1:
        raise ValueError("--timeline takes one video")
    if args.json and given.get("format", "json") != "json":  # --json was ignored: the VTT or CSV came out
        raise ValueError(f"--json and --format {given['format']}: one output format, give one of them")
    query = _query(TimelineQuery, top_k=args.top_k, **given)  # the route's defaults for what is not given
    text = timeline(args.model, args.videos[0], query.options(), query.format or "json", **runtime)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _print(results: list[dict]) -> None:
    for result in results:
        print(result["path"])
        if "error" in result:
            print(f"  error: {result['error']['message']}")
            continue
        for p in result["predictions"]:
            print(f"  {p['score']:6.1%}  {p['label']}")
        lat = result["latency_ms"]
        print(
            f"  decode {lat['decode']:.0f} ms, preprocess {lat['preprocess']:.0f} ms, "
            f"inference {lat['inference']:.0f} ms, total {lat['total']:.0f} ms"
        )


def _predict_command(args: argparse.Namespace) -> int:
    runtime = {k: v for k, v in (("backend", args.backend), ("precision", args.precision)) if v is not None}
    given = timeline_only(args, ("window_s", "stride_s", "min_score", "format"))
    if args.timeline:
        return _timeline_command(args, given, runtime)
    from service.schemas import ClassifyQuery

    _query(ClassifyQuery, top_k=args.top_k)  # before the model loads
    results = predict(args.model, args.videos, args.top_k, **runtime)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)
    return 2 if any("error" in r for r in results) else 0


def add_predict(sub, f: Flags) -> None:
    pre = sub.add_parser(
        "predict", parents=[f.exported, f.runtime, f.json], help="classify video files locally, without a server"
    )
    pre.add_argument("videos", nargs="+")
    pre.add_argument("--top-k", type=int, default=5)
    pre.add_argument(
        "--timeline",
        action="store_true",
        help="one video window by window, with its action segments (as POST /v1/timeline)",
    )
    pre.add_argument("--window-s", type=float, default=None, help="--timeline: window length (s; default 2)")
    pre.add_argument("--stride-s", type=float, default=None, help="--timeline: window stride (s; default 1)")
    pre.add_argument("--min-score", type=float, default=None, help="--timeline: under it a window is 'no action'")
    pre.add_argument("--format", choices=["json", "vtt", "csv"], default=None, help="--timeline: output (default json)")
    pre.set_defaults(run=_predict_command)
