"""`sttm label` against the HTTP server, for the same model and the same clips, in one run; and
the job's memory over a long run.

1. Throughput: `--files` clips through `sttm serve` (a client keeping concurrency = cores
   uploads in flight, each file once) and through `sttm label` (a local Ray started for the
   job); files/s over the whole command, Ray's start-up and the server's warm-up included
   on each side as each pays it (the server is started and ready before its clock starts;
   its rate with its start counted is printed too), and the file count from which the job
   is done first, from its fixed cost and the two rates.
2. Memory: `sttm label` over `--memory-files` clips; the resident memory of the job's whole
   process tree (the driver, Ray's processes, its workers; PSS, so Ray's shared object store
   is not counted once per process) sampled every second.

Clips: `--distinct` generated clips of the demo data set (models.synth), copied to the
counts needed (decoding costs the same; the page cache holds them all on either side).

    python -m benchmarks.label [--files 400] [--memory-files 2000] [--model demo]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from benchmarks.serving import served

ROOT = Path(__file__).resolve().parents[1]


def make_clips(folder: Path, distinct: int, count: int) -> list[Path]:
    """`count` files: `distinct` generated clips (12 classes) copied round-robin."""
    from models.synth import SynthConfig, generate

    source = folder / "distinct"
    generate(source, clips_per_class=max(1, distinct // 12), cfg=SynthConfig(seed=26), workers=2)
    originals = sorted((source / "videos").glob("*.mp4"))
    out = folder / f"clips_{count}"
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{i:05d}_{originals[i % len(originals)].name}" for i in range(count)]
    for i, path in enumerate(paths):
        shutil.copyfile(originals[i % len(originals)], path)
    return paths


def tree_pss_mb(pid: int) -> float:
    """PSS of a process and all its descendants, MiB (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # a worker that just ended
            total += p.memory_full_info().pss
    return total / 2**20


async def _classify_all(url: str, files: list[Path], concurrency: int) -> tuple[int, int]:
    todo = iter(files)
    counts = {"ok": 0, "error": 0}

    async def worker(client: httpx.AsyncClient) -> None:
        for path in todo:
            response = await client.post(url, files={"file": (path.name, path.read_bytes(), "video/mp4")})
            counts["ok" if response.is_success else "error"] += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return counts["ok"], counts["error"]


def bench_server(model: str, files: list[Path], concurrency: int) -> dict:
    """`sttm serve` (started, then ready) and a client uploading every file once."""
    spawned = time.perf_counter()
    with served({"STTM_MODEL": model}, ready_s=120) as (base, _):
        ready_after_s = time.perf_counter() - spawned
        started = time.perf_counter()
        ok, errors = asyncio.run(_classify_all(f"{base}/v1/classify", files, concurrency))
        seconds = time.perf_counter() - started
    return {
        "files": len(files),
        "ok": ok,
        "errors": errors,
        "seconds": seconds,
        "files_per_s": len(files) / seconds,
        "ready_after_s": ready_after_s,
    }


def bench_label(model: str, folder: Path, count: int, sample_s: float | None = None) -> dict:
    """`sttm label FOLDER` as a command (a local Ray started for it), optionally sampling PSS."""
    out = Path(tempfile.mkdtemp(prefix="label-bench-")) / "labels.parquet"
    command = [sys.executable, "-m", "cli", "label", str(folder), "-o", str(out), "--model", model]
    started = time.perf_counter()
    job = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        while job.poll() is None:
            samples.append((time.perf_counter() - started, tree_pss_mb(job.pid)))
            time.sleep(sample_s)

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_s:
        sampler.start()
    _, err = job.communicate()
    seconds = time.perf_counter() - started
    if job.returncode != 0:
        raise RuntimeError(f"sttm label failed ({job.returncode}): {err[-2000:]}")
    import pyarrow.parquet as pq

    rows = pq.read_table(out)
    ok = sum(1 for s in rows["status"].to_pylist() if s == "ok")
    shutil.rmtree(out.parent, ignore_errors=True)
    summary = err.strip().splitlines()[-1]
    steady = re.search(r"([\d.]+) files/s after the first answer at (\w+)", summary)
    report = {"files": count, "rows": rows.num_rows, "ok": ok, "seconds": seconds, "files_per_s": count / seconds,
              "steady_files_per_s": float(steady.group(1)) if steady else None,
              "first_answer_after": steady.group(2) if steady else None, "summary": summary}  # fmt: skip
    if samples:
        report["pss_mb"] = samples
    return report


def break_even(server: dict, label: dict) -> dict:
    """Files from which `sttm label` is done first: its fixed cost (the whole command minus its
    files at the steady rate) against the server's per-file time, with the server's own start
    counted (a user has to start it too) and not counted. None where the job's steady rate is
    not above the server's (it never catches up)."""
    steady, served = label["steady_files_per_s"], server["files_per_s"]
    if not steady or steady <= served:
        return {"fixed_s": None, "files_server_started": None, "files_with_server_start": None}
    fixed = label["seconds"] - label["files"] / steady
    gain = 1 / served - 1 / steady  # seconds per file the job saves, once running
    return {
        "fixed_s": fixed,
        "files_server_started": max(0, round(fixed / gain)),
        "files_with_server_start": max(0, round((fixed - server["ready_after_s"]) / gain)),
    }


def memory_table(samples: list[tuple[float, float]]) -> list[tuple[str, float, float]]:
    """The PSS at 10%, 25%, 50%, 75% and 90% of the run, and its peak."""
    marks = [
        (f"{q}% of the run", *samples[min(len(samples) - 1, len(samples) * q // 100)]) for q in (10, 25, 50, 75, 90)
    ]
    peak = max(samples, key=lambda s: s[1])
    return [*marks, ("peak", *peak)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--files", type=int, default=400, help="clips for the throughput comparison")
    parser.add_argument("--memory-files", type=int, default=2000, help="clips for the memory run (0: skip)")
    parser.add_argument("--distinct", type=int, default=120, help="distinct generated clips")
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args()
    from runtime.settings import DEMO_ONNX

    model = str(DEMO_ONNX if args.model == "demo" else Path(args.model).resolve())
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="label-bench-") as tmp:
        files = make_clips(Path(tmp), args.distinct, args.files)
        server = bench_server(model, files, cores)
        print(f"sttm serve + client (concurrency {cores}): {server['files_per_s']:.2f} files/s "
              f"(ready {server['ready_after_s']:.0f} s after its start)", flush=True)  # fmt: skip
        with_start = len(files) / (server["seconds"] + server["ready_after_s"])
        print(f"  with its start counted: {with_start:.2f} files/s", flush=True)
        label = bench_label(model, files[0].parent, len(files))
        print(f"sttm label: {label['files_per_s']:.2f} files/s ({label['summary']})", flush=True)
        even = break_even(server, label)
        if even["fixed_s"] is not None:
            counted, up = even["files_with_server_start"], even["files_server_started"]
            print(f"  fixed cost {even['fixed_s']:.1f} s; first from {counted} files (the server's start counted), "
                  f"{up} (the server already up)", flush=True)  # fmt: skip
        report = {"cores": cores, "model": model, "server": {**server, "files_per_s_with_start": with_start},
                  "label": label, "break_even": even}  # fmt: skip
        if args.memory_files:
            big = make_clips(Path(tmp), args.distinct, args.memory_files)
            memory = bench_label(model, big[0].parent, len(big), sample_s=1.0)
            report["memory"] = {**memory, "table": memory_table(memory["pss_mb"])}
            for name, t, mb in report["memory"]["table"]:
                print(f"  {name:>16}: {t:6.0f} s  {mb:7.0f} MiB", flush=True)
            print(f"sttm label, {len(big)} files: {memory['files_per_s']:.2f} files/s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
