"""A ladder of merge ratios under overload, through the real HTTP server.

    python -m benchmarks.ladder [--model vit-s|videomae-b] [--workdir DIR] [--seconds 180]
                                [--loads 1.5,3] [--target-x 4] [--reductions 0,0.25,0.38,0.5] [--accuracy]
                                [--backend onnxruntime|openvino]

1. A model whose inference dominates (`--model`: ViT-S at 16 frames x 160, or VideoMAE-B at
   16 x 224; deterministic random weights) exported as a ladder (`sttm export --reduction ...`).
2. The unmerged rung's capacity: clips/s of `sttm serve` with that rung alone, closed loop
   (2 x max_batch requests in flight).
3. For each offered load (x that capacity): open-loop Poisson arrivals for `--seconds`, one
   clip per request, to (a) the fixed unmerged model and (b) the ladder with
   STTM_LATENCY_TARGET_MS = `--target-x` x the unmerged seconds per clip, and (c) the same
   ladder with STTM_LATENCY_DEADLINE (refusing at once what it would answer late), one after
   the other: throughput, p50/p99 of the answered requests, 503s, and the share of clips per
   rung. Throughput counts answers over the run plus the time to drain what was queued.
4. `--accuracy`: the demo exported as the same ladder, each rung's top-1 on 360 generated
   clips of a seed it never saw (`benchmarks.experiments.unseen_data`), and the
   load-weighted top-1 of each ladder run (its shares x those top-1s).
5. `--memory`: instead of the load runs, the memory each rung adds when the ladder is opened
   as `sttm serve` opens it (each rung its own compiled model; no runtime here shares weights
   between graphs), per backend, in a fresh process: its private (anonymous) memory after
   each rung is loaded and warmed up.
Prints JSON lines as it goes and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from benchmarks.serving import served

WORKDIR = Path(os.environ.get("STTM_BENCH_DIR", "/tmp/sttm-bench")) / "ladder"
PORT = 8765
# max_batch 2: on 2 CPU cores a bigger batch of this model buys no throughput, only a longer wait
SERVER = {"STTM_BACKEND": "onnxruntime", "STTM_MAX_BATCH": "2", "STTM_MAX_WAIT_MS": "5", "STTM_MAX_QUEUE": "64"}


def _log(msg: str) -> None:
    print(f"[ladder {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


MODELS = {"vit-s": ("videomae-s", {"image_size": 160, "num_frames": 16}), "videomae-b": ("videomae-b", {})}


REDUCTIONS = "0,0.25,0.38,0.5"


def _suffix(reductions: list[float]) -> str:
    """Work directories of other rungs than the default ones are kept apart."""
    default = [float(r) for r in REDUCTIONS.split(",")]
    return "" if reductions == default else "-" + "-".join(f"{r:g}" for r in reductions)


def model_ladder(workdir: Path, model: str, reductions: list[float]) -> Path:
    """`model` (`MODELS`: a preset, resized) with random weights (seed 0), exported as a ladder."""
    import torch

    from export.run import ExportSpec, run_ladder_export
    from models import build_model, load_model, save_model

    preset, changes = MODELS[model]
    out = workdir / f"{model}-ladder{_suffix(reductions)}"
    if not (out / "ladder.json").is_file():
        torch.manual_seed(0)
        cfg = load_model(preset).config.replace(**changes)
        save_model(build_model(cfg), workdir / model)
        _log(f"exporting {out}")
        run_ladder_export(ExportSpec(str(workdir / model), out, name=model.replace("-", ""), quiet=True), reductions)
    return out


def demo_ladder(workdir: Path, reductions: list[float]) -> dict[float, dict]:
    """The demo at every rung: top-1 on 360 clips of an unseen seed, per rung."""
    from benchmarks.experiments import unseen_data
    from export.run import ExportSpec, run_ladder_export
    from runtime.ladder_file import read_ladder

    out = workdir / f"demo-ladder{_suffix(reductions)}"
    if not (out / "ladder.json").is_file():
        _log(f"exporting {out} and evaluating each rung")
        run_ladder_export(ExportSpec("demo", out, name="demo", quiet=True), reductions,
                          eval_data=unseen_data(12345), eval_split="all")  # fmt: skip
    return {r.reduction: r.measured for r in read_ladder(out)[1]}


def make_clip(workdir: Path) -> Path:
    from models.synth import write_mp4

    path = workdir / "clip.mp4"
    if not path.is_file():
        rng = np.random.default_rng(0)
        write_mp4(path, rng.integers(0, 255, (32, 160, 160, 3), dtype=np.uint8))
    return path


_MEMORY_PROBE = """
import json, sys
from pathlib import Path
from runtime.ladder_file import read_ladder
from runtime.backends import BackendOptions, load_backend
def anon():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("RssAnon:"))
ladder, kind = Path(sys.argv[1]), sys.argv[2]
held, sizes = [], [anon()]
for rung in read_ladder(ladder)[1]:
    backend = load_backend(ladder / rung.file, BackendOptions(kind))
    backend.warm_up((1, 2))
    held.append(backend)
    sizes.append(anon())
added = [round((b - a) / 2**20) for a, b in zip(sizes, sizes[1:])]
print(json.dumps({"kind": kind, "precision": held[0].precision, "mb": added, "total_mb": round(sizes[-1] / 2**20)}))
"""


def rung_memory(ladder: Path) -> list[dict]:
    """Per backend: the private memory each rung adds, loaded one after the other."""
    rows = []
    for kind in ("onnxruntime", "openvino"):
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(ladder), kind], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], check=True).stdout  # fmt: skip
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


@contextlib.contextmanager
def server(model: Path, **env: str) -> Iterator[str]:
    """`sttm serve` of `model` with the benchmark's settings and these STTM_*; yields its URL."""
    with served({**SERVER, **env, "STTM_MODEL": str(model)}, PORT) as (url, _):
        yield url


async def _one(client: httpx.AsyncClient, url: str, data: bytes, results: list, sent: float) -> None:
    try:
        r = await client.post(f"{url}/v1/classify", files={"file": ("c.mp4", data, "video/mp4")})
        body = r.json() if r.status_code == 200 else {}
        results.append((r.status_code, time.perf_counter() - sent, body.get("reduction"), time.perf_counter(),
                        body.get("latency_ms")))  # fmt: skip
    except httpx.TransportError as err:
        results.append((type(err).__name__, time.perf_counter() - sent, None, time.perf_counter(), None))


async def closed_loop(url: str, data: bytes, concurrency: int, requests: int) -> float:
    """Answered clips per second with `concurrency` requests always in flight."""
    results: list = []
    queue = iter(range(requests))
    async with httpx.AsyncClient(timeout=300) as client:

        async def worker():
            for _ in queue:
                await _one(client, url, data, results, time.perf_counter())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sum(1 for r in results if r[0] == 200) / (time.perf_counter() - started)


async def open_loop(url: str, data: bytes, rate: float, seconds: float, seed: int = 0) -> dict:
    """Poisson arrivals, `rate x seconds` of them (a Poisson process given its count: uniform
    times, so every run offers exactly that load), not waiting for answers; then waits for
    every answer."""
    rng, results, tasks = random.Random(seed), [], []
    arrivals = sorted(rng.uniform(0, seconds) for _ in range(round(rate * seconds)))
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        started = time.perf_counter()
        for at in arrivals:
            await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
            tasks.append(asyncio.create_task(_one(client, url, data, results, time.perf_counter())))
        await asyncio.gather(*tasks)
    async with httpx.AsyncClient(timeout=30) as client:  # a fresh connection: the server may close idle ones
        metrics = (await client.get(f"{url}/metrics")).text
    ok = [r for r in results if r[0] == 200]
    span = max(r[3] for r in results) - started
    latencies = sorted(r[1] for r in ok)
    shares = Counter(r[2] for r in ok)
    return {
        "offered_per_s": len(results) / seconds,
        "sent": len(results),
        "answered": len(ok),
        "rejected_503": sum(1 for r in results if r[0] == 503),
        "other_errors": sum(1 for r in results if r[0] not in (200, 503)),
        "throughput_per_s": len(ok) / span,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
        "share": {f"{k:g}": v / len(ok) for k, v in sorted(shares.items())},
        "actual_over_predicted": _batch_bias(metrics),
        "mean_batch": _mean(metrics, "sttm_batch_size"),
        "slowest_ms": _slowest(ok),
        "during_slowest": _during_slowest(ok),
    }


def _mean(metrics: str, histogram: str) -> float | None:
    """A histogram's mean, summed over its labels, from the /metrics text."""
    total = {"sum": 0.0, "count": 0.0}
    for line in metrics.splitlines():
        for part in total:
            if line.startswith(f"{histogram}_{part}"):
                total[part] += float(line.split()[-1])
    return round(total["sum"] / total["count"], 3) if total["count"] else None


def _slowest(ok: list, share: float = 0.02) -> dict[str, float]:
    """Where the slowest `share` of answered requests (those at and above ~p98) spent their
    time, mean ms: decoding + preprocessing, queued for the model, in the model, and outside
    the server's own timing (the upload, HTTP, the client's event loop on the same cores)."""
    tail = sorted(ok, key=lambda r: r[1])[-max(1, round(share * len(ok))) :]
    if not tail or any(r[4] is None for r in tail):
        return {}
    stages = {
        "client": [1000 * r[1] for r in tail],
        "decode": [r[4]["decode"] + r[4]["preprocess"] for r in tail],
        "queue": [r[4]["queue"] for r in tail],
        "model": [r[4]["inference"] for r in tail],
        "outside_server": [1000 * r[1] - r[4]["total"] for r in tail],
    }
    return {k: round(statistics.mean(v)) for k, v in stages.items()}


def _during_slowest(ok: list) -> dict[str, float]:
    """The rungs of the answers sent back while the slowest request waited (share of them):
    all on the most merged rung means the ladder was at its top, and its wait was more work
    than any rung clears in time, not a policy that chose too little merging."""
    if not ok:
        return {}
    slowest = max(ok, key=lambda r: r[1])
    during = Counter(r[2] for r in ok if slowest[3] - slowest[1] <= r[3] <= slowest[3])
    return {f"{k:g}": round(v / sum(during.values()), 2) for k, v in sorted(during.items())}


def _batch_bias(metrics: str) -> dict[str, float]:
    """Per rung: the summed actual model time of its batches over what the policy predicted
    for them (`sttm_batch_seconds`): > 1 means the policy's costs ran low."""
    sums: dict[tuple[str, str], float] = {}
    for line in metrics.splitlines():
        if line.startswith("sttm_batch_seconds_sum{"):
            labels = dict(part.split("=") for part in line[line.index("{") + 1 : line.index("}")].split(","))
            sums[(labels["reduction"].strip('"'), labels["kind"].strip('"'))] = float(line.split()[-1])
    return {
        r: round(a / sums[(r, "predicted")], 3)
        for (r, k), a in sums.items()
        if k == "actual" and sums.get((r, "predicted"))
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit-s", choices=sorted(MODELS))
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--seconds", type=float, default=180.0, help="open-loop run per (load, server)")
    parser.add_argument("--loads", default="1.5,3", help="offered loads, x the unmerged rung's capacity")
    parser.add_argument("--target-x", type=float, default=4.0,
                        help="STTM_LATENCY_TARGET_MS of the ladder, x the unmerged seconds per clip")  # fmt: skip
    parser.add_argument("--reductions", default=REDUCTIONS)
    parser.add_argument("--accuracy", action="store_true", help="also the demo ladder's top-1 per rung")
    parser.add_argument("--memory", action="store_true", help="only the memory each rung adds, per backend")
    parser.add_argument(
        "--servers",
        default="fixed,ladder,deadline",
        help="servers to run at each load (deadline: the ladder refusing what it would answer late)",
    )
    parser.add_argument("--capacity", type=float, help="unmerged clips/s of an earlier run (not re-probed)")
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "openvino"],
                        help="the servers' STTM_BACKEND (openvino: bf16 where the CPU has it)")  # fmt: skip
    args = parser.parse_args(argv)
    # a SIGTERM to this script unwinds it, so a running `Server` stops its child (it outlived us)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from runtime.ladder_file import parse_reductions, read_ladder

    args.workdir.mkdir(parents=True, exist_ok=True)
    reductions = parse_reductions(args.reductions)
    ladder = model_ladder(args.workdir, args.model, reductions)
    if args.memory:
        print(f"\n{args.model} ladder: private memory each rung adds (MB), loaded in order, warmed up\n")
        print("| backend | precision | " + " | ".join(f"rung {r:g}" for r in reductions) + " | process total |")
        print("|---|---|" + "---|" * (len(reductions) + 1))
        for row in rung_memory(ladder):
            print(
                f"| {row['kind']} | {row['precision']} | " + " | ".join(map(str, row["mb"])) + f" | {row['total_mb']} |"
            )
        return
    fixed = ladder / read_ladder(ladder)[1][0].file
    data = make_clip(args.workdir).read_bytes()
    capacity = args.capacity
    if capacity is None:
        with server(fixed, STTM_BACKEND=args.backend) as url:
            capacity = asyncio.run(closed_loop(url, data, concurrency=4, requests=30))
    target_ms = 1000 * args.target_x / capacity
    _log(f"unmerged capacity {capacity:.2f} clips/s, target {target_ms:.0f} ms")
    rows = []
    target = {"STTM_LATENCY_TARGET_MS": f"{target_ms:.0f}"}
    deadline = {**target, "STTM_LATENCY_DEADLINE": "true"}
    servers = (("fixed", fixed, {}), ("ladder", ladder, target), ("deadline", ladder, deadline))
    for load in (float(x) for x in args.loads.split(",")):
        for kind, model, env in (s for s in servers if s[0] in args.servers.split(",")):
            with server(model, **env, STTM_BACKEND=args.backend) as url:
                row = {"load": load, "server": kind, **asyncio.run(open_loop(url, data, load * capacity, args.seconds))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    accuracy = demo_ladder(args.workdir, reductions) if args.accuracy else {}
    print(f"\n{args.model} on {args.backend}, unmerged capacity {capacity:.2f} clips/s, target {target_ms:.0f} ms, "
          f"{args.seconds:.0f} s per run\n")  # fmt: skip
    print("| load | server | offered/s | answered/s | p50 ms | p99 ms | 503s | clips per rung | load-weighted top-1 |"
          " actual / predicted per rung |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = ", ".join(f"{k}: {v:.0%}" for k, v in r["share"].items())
        weighted = sum(v * accuracy[float(k)]["top1"] for k, v in r["share"].items()) if accuracy else None
        bias = ", ".join(f"{k}: {v:.2f}" for k, v in r["actual_over_predicted"].items())
        print(f"| {r['load']:g}x | {r['server']} | {r['offered_per_s']:.2f} | {r['throughput_per_s']:.2f} | "
              f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['rejected_503']} of {r['sent']} | {share} | "
              f"{'' if weighted is None else f'{weighted:.1%}'} | {bias} |")  # fmt: skip
    if accuracy:
        print("\n| demo rung | top-1 (360 unseen clips) | model clips/s |\n|---|---|---|")
        for reduction, m in accuracy.items():
            print(f"| {reduction:g} | {m['top1']:.1%} | {m['model_clips_per_s']:.1f} |")


if __name__ == "__main__":
    main()
