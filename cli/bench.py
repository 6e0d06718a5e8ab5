"""`sttm bench serve URL`: load-test a running server (the client: `cli.loadtest`)."""

from __future__ import annotations

import argparse
import json

from cli.flags import Flags, at_least, over


def _bench_serve(args: argparse.Namespace) -> int:
    import asyncio

    from cli.loadtest import bench, parse_levels, render

    report = asyncio.run(
        bench(
            args.url,
            args.clip,
            parse_levels(args.concurrency),
            args.requests,
            endpoint=args.endpoint,
            api_key=args.api_key,
            pid=args.pid,
            timeout_s=args.timeout,
            protocol=args.protocol,
        )
    )
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 1 if any(level["errors"] for level in report["levels"]) else 0


def add_bench(sub, f: Flags) -> None:
    bn = sub.add_parser("bench", help="benchmark a running server")
    bn_sub = bn.add_subparsers(dest="target", required=True)
    what = "load-test a running server: perf_analyzer-style table per concurrency level"
    bs = bn_sub.add_parser("serve", parents=[f.json], help=what)
    bs.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    bs.add_argument("--clip", required=True, help="video file sent with every request")
    bs.add_argument("--concurrency", default="1,4,16", help="requests in flight, one level after another")
    bs.add_argument("--requests", type=at_least(1), default=100, help="requests per concurrency level")
    bs.add_argument(
        "--protocol",
        choices=["rest", "v2"],
        default="rest",
        help="rest: multipart upload (sttm serve); v2: KServe v2 infer with the clip as BYTES "
        "(a Triton ensemble from sttm export --format triton)",
    )
    bs.add_argument("--endpoint", default=None, help="default /v1/classify (rest), /v2/models/sttm_video/infer (v2)")
    bs.add_argument("--api-key", default=None, help="bearer token (the server's STTM_API_KEY)")
    soak = "soak: the server's process id; report its RSS at request 100 and at the end, and leftover temp files"
    bs.add_argument("--pid", type=int, default=None, help=soak)
    bs.add_argument("--timeout", type=over(0), default=60.0, help="seconds per request")
    bs.set_defaults(run=_bench_serve)
