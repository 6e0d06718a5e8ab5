"""Load generator for a running server: `sttm bench serve URL --clip FILE`.

Like Triton's perf_analyzer, for each concurrency level it keeps that many requests in
flight (asyncio + httpx, one connection each) until `requests` have completed, then reports
errors by status, throughput, client-side latency percentiles and the server's own
per-stage means (the `latency_ms` of each answer). Given the server's PID (`--pid`, a soak)
it also reports the server's resident memory at request `rss_mark` and at the end, and the
files and open handles left in the server's temporary directory. It starts nothing itself.

    sttm serve &                                   # TMPDIR=$(mktemp -d) for a clean temp dir
    sttm bench serve http://127.0.0.1:8000 --clip clip.mp4 --concurrency 1,4,16 --requests 200
    sttm bench serve http://127.0.0.1:8000 --clip clip.mp4 --concurrency 8 --requests 1000 --pid $!

`--protocol v2` sends the clip as the `video` BYTES input of a KServe v2 `infer` call (binary
tensor extension) instead of a multipart upload: how a Triton client calls the ensemble of
`sttm export --format triton` (`sttm triton REPO`, endpoint `/v2/models/sttm_video/infer`).
"""

from __future__ import annotations

import asyncio
import json
import math
import mimetypes
import os
import statistics
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import numpy as np

Protocol = Literal["rest", "v2"]
V2_ENDPOINT = "/v2/models/sttm_video/infer"
STAGES = ("decode", "preprocess", "queue", "inference", "total")  # keys of the answer's latency_ms
PERCENTILES = (50, 90, 99)
MB = 1 << 20


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it."""

    outcome: str  # HTTP status ("200", "503") or a transport error's type ("ConnectError", "ReadTimeout")
    seconds: float  # client side: request sent -> whole answer read
    stages_ms: Mapping[str, float]  # the answer's latency_ms (empty unless 2xx)

    @property
    def ok(self) -> bool:
        return self.outcome.startswith("2") and len(self.outcome) == 3


# --- pure helpers -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks; nan if empty."""
    return float(np.percentile(values, q)) if len(values) else math.nan


def parse_levels(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16]; each level >= 1."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--concurrency must be comma-separated integers, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise ValueError(f"--concurrency needs levels >= 1, got {text!r}")
    return levels


def v2_infer_request(data: bytes, outputs: Sequence[str] = ("labels", "scores")) -> tuple[bytes, dict[str, str]]:
    """A KServe v2 `infer` body with `data` as the one element of the BYTES input `video`, in the
    binary tensor extension (a JSON header, then the tensor: 4-byte little-endian length + bytes),
    and its headers; the outputs come back as JSON."""
    tensor = struct.pack("<I", len(data)) + data
    video = {"name": "video", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(tensor)}}
    wanted = [{"name": name, "parameters": {"binary_data": False}} for name in outputs]
    header = json.dumps({"inputs": [video], "outputs": wanted}).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return header + tensor, headers


def summarize(samples: Sequence[Sample], concurrency: int, wall_s: float) -> dict:
    """One concurrency level: counts, errors by status, throughput (successful answers/s),
    client latency percentiles (ms, successful answers) and mean server stages (ms)."""
    good = [s for s in samples if s.ok]
    latencies_ms = [s.seconds * 1000 for s in good]
    errors = Counter(s.outcome for s in samples if not s.ok)
    return {
        "concurrency": concurrency,
        "requests": len(samples),
        "errors": sum(errors.values()),
        "errors_by_status": dict(sorted(errors.items())),
        "seconds": round(wall_s, 3),
        "throughput_rps": round(len(good) / wall_s, 2) if wall_s > 0 else math.nan,
        "latency_ms": {f"p{q}": round(percentile(latencies_ms, q), 2) for q in PERCENTILES},
        "server_ms": {k: round(_mean([s.stages_ms[k] for s in good if k in s.stages_ms]), 2) for k in STAGES},
    }


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def render(report: dict) -> str:
    """A perf_analyzer-style table (Markdown) of `bench`'s report, then errors and the soak figures."""
    lines = [
        f"# POST {report['url']}  clip {report['clip']} ({report['clip_bytes'] / 1024:.1f} KB), "
        f"{report['requests']} requests per level, client-side latency; server stages are means of latency_ms",
        "| concurrency | requests | errors | req/s | p50 ms | p90 ms | p99 ms "
        "| decode ms | preprocess ms | queue ms | inference ms | server total ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in report["levels"]:
        lat, srv = lv["latency_ms"], lv["server_ms"]
        cells = [lv["concurrency"], lv["requests"], lv["errors"], f"{lv['throughput_rps']:.1f}"]
        cells += [f"{lat[f'p{q}']:.1f}" for q in PERCENTILES] + [f"{srv[k]:.1f}" for k in STAGES]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    for lv in report["levels"]:
        if lv["errors"]:
            detail = ", ".join(f"{k} x{v}" for k, v in lv["errors_by_status"].items())
            lines.append(f"errors at concurrency {lv['concurrency']}: {detail}")
    server = report.get("server")
    if server:
        lines.append(
            f"server pid {server['pid']}: RSS {server['rss_mb_at_mark']:.1f} MB at request {server['rss_mark']}, "
            f"{server['rss_mb_end']:.1f} MB at the end ({server['rss_growth_mb']:+.1f} MB); "
            f"open fds {server['fds_at_mark']} -> {server['fds_end']}; temp dir {server['tmpdir']}: "
            f"{len(server['temp_files_left'])} files left, {server['temp_handles_open']} open temp files"
        )
    return "\n".join(lines)


def server_tmpdir(environ: Mapping[str, str]) -> str:
    """The directory Python's `tempfile` picks in a process with this environment (TMPDIR,
    TEMP, TMP, then /tmp)."""
    for name in ("TMPDIR", "TEMP", "TMP"):
        if environ.get(name):
            return environ[name]
    return "/tmp"


# --- the server process (soak) ------------------------------------------------------------


class ServerWatch:
    """Resident memory, open files and temp-dir entries of the server process `pid`."""

    def __init__(self, pid: int, tmpdir: str | None = None) -> None:
        import psutil

        try:
            self.process = psutil.Process(pid)
            self.tmpdir = os.path.realpath(tmpdir or server_tmpdir(self.process.environ()))
        except psutil.Error as err:  # gone, or not ours to inspect
            raise ProcessLookupError(f"cannot watch server process {pid}: {err}") from None
        self.before = set(os.listdir(self.tmpdir))
        self.handles_before = self._temp_fds()  # e.g. a log redirected into /tmp: not the run's

    def rss_mb(self) -> float:
        return self.process.memory_info().rss / MB

    def fds(self) -> int:
        return self.process.num_fds()

    def temp_files_left(self) -> list[str]:
        """Entries of the temp dir that were not there when the watch started."""
        return sorted(set(os.listdir(self.tmpdir)) - self.before)

    def temp_handles(self) -> int:
        """Descriptors into the temp dir (unlinked files included, Linux) opened since the watch began."""
        return len(self._temp_fds() - self.handles_before)

    def _temp_fds(self) -> set[tuple[str, str]]:
        """(descriptor, target) of the server's open files in the temp dir."""
        fd_dir = f"/proc/{self.process.pid}/fd"
        open_files = set()
        for fd in os.listdir(fd_dir) if os.path.isdir(fd_dir) else []:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:  # closed meanwhile
                continue
            if target.startswith(self.tmpdir + os.sep):
                open_files.add((fd, target))
        return open_files


# --- the driver ---------------------------------------------------------------------------


async def _one(client: httpx.AsyncClient, url: str, body: Mapping) -> Sample:
    """One POST; `body`: httpx's `files=` (a multipart upload) or `content=` + `headers=`."""
    started = time.perf_counter()
    try:
        response = await client.post(url, **body)
    except httpx.TransportError as err:  # connect/read errors and timeouts
        return Sample(type(err).__name__, time.perf_counter() - started, {})
    seconds = time.perf_counter() - started
    stages: dict[str, float] = {}
    if response.is_success:
        try:
            stages = dict(response.json().get("latency_ms") or {})
        except (ValueError, AttributeError):
            stages = {}
    return Sample(str(response.status_code), seconds, stages)


async def run_level(
    client: httpx.AsyncClient,
    url: str,
    body: Mapping,
    concurrency: int,
    requests: int,
    on_done: Callable[[int], None] = lambda done: None,
) -> tuple[list[Sample], float]:
    """`concurrency` workers share `requests` requests; returns the samples and the wall time (s).
    `on_done(n)` is called after the n-th answer."""
    samples: list[Sample] = []
    todo = iter(range(requests))  # shared: each request is taken by one worker

    async def worker() -> None:
        for _ in todo:
            samples.append(await _one(client, url, body))
            on_done(len(samples))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


async def _check_reachable(client: httpx.AsyncClient, base: str) -> None:
    try:
        response = await client.get(f"{base}/v2/health/ready")
    except httpx.TransportError as err:
        raise ConnectionError(f"cannot reach {base}: {str(err) or type(err).__name__}") from None
    if response.status_code == 503:
        raise RuntimeError(f"{base} is up but not ready (GET /v2/health/ready: 503)")


async def _check_accepted(client: httpx.AsyncClient, url: str, body: Mapping) -> None:
    """The first request, answered with a client error (4xx: the clip, the key, the endpoint),
    stops the run in one line: every request after it would be refused alike."""
    try:
        response = await client.post(url, **body)
    except httpx.TransportError:
        return  # counted in the run as it happens
    if 400 <= response.status_code < 500 and response.status_code != 429:
        try:
            error = response.json()["error"]
            why = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            why = response.text[:200] or response.reason_phrase
        raise ValueError(f"{url} refused the clip ({response.status_code} {why})")


def _request_body(clip: Path, data: bytes, protocol: Protocol) -> dict:
    """httpx keyword arguments of one request: a KServe v2 binary body, or a multipart upload."""
    if protocol == "v2":
        content, v2_headers = v2_infer_request(data)
        return {"content": content, "headers": v2_headers}
    return {"files": {"file": (clip.name, data, mimetypes.guess_type(clip.name)[0] or "video/mp4")}}


def _server_report(watch: ServerWatch, pid: int, rss_mark: int, mark: dict) -> dict:
    """The server's memory and handles at answer `rss_mark` and at the end."""
    end_rss, end_fds = watch.rss_mb(), watch.fds()
    at_mark = mark or {"rss": math.nan, "fds": -1}  # failed requests: fewer answers than rss_mark
    return {
        "pid": pid,
        "rss_mark": rss_mark,
        "rss_mb_at_mark": round(at_mark["rss"], 1),
        "rss_mb_end": round(end_rss, 1),
        "rss_growth_mb": round(end_rss - at_mark["rss"], 1),
        "fds_at_mark": at_mark["fds"],
        "fds_end": end_fds,
        "tmpdir": watch.tmpdir,
        "temp_files_left": watch.temp_files_left(),
        "temp_handles_open": watch.temp_handles(),
    }


async def bench(
    url: str,
    clip: str | Path,
    levels: Sequence[int],
    requests: int,
    endpoint: str | None = None,
    api_key: str | None = None,
    pid: int | None = None,
    rss_mark: int = 100,
    timeout_s: float = 60.0,
    warmup: int = 2,
    protocol: Protocol = "rest",
) -> dict:
    """Drive `URL + endpoint` with the clip at each concurrency level; a report for `render`.

    `warmup` requests are sent (and not counted) before the first level; a client error (4xx)
    to the first is a ValueError in one line. With `pid`, the
    server's RSS is read after answer number `rss_mark` (counted over all levels; the midpoint
    of a shorter run) and at the end; `ConnectionError`/`FileNotFoundError` when the server or the clip is missing."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the server's URL starts with http:// or https://, got {url!r}")
    clip = Path(clip)
    if not clip.is_file():
        raise FileNotFoundError(f"clip {clip} does not exist")
    if requests < 1:
        raise ValueError("--requests must be >= 1")
    data = clip.read_bytes()
    body = _request_body(clip, data, protocol)
    rss_mark = min(rss_mark, max(1, requests * len(levels) // 2))  # a short run: its midpoint
    base = url.rstrip("/")
    endpoint = endpoint or (V2_ENDPOINT if protocol == "v2" else "/v1/classify")
    target = base + "/" + endpoint.lstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
    async with httpx.AsyncClient(headers=headers, timeout=timeout_s, limits=limits) as client:
        await _check_reachable(client, base)
        watch = ServerWatch(pid) if pid is not None else None
        for n in range(warmup):
            await (_check_accepted(client, target, body) if n == 0 else _one(client, target, body))
        done_before, mark = 0, {}

        def on_done(n: int) -> None:
            if watch and done_before + n == rss_mark:
                mark.update(rss=watch.rss_mb(), fds=watch.fds())

        summaries = []
        for level in levels:
            samples, wall = await run_level(client, target, body, level, requests, on_done)
            summaries.append(summarize(samples, level, wall))
            done_before += len(samples)
    report = {"url": target, "clip": str(clip), "clip_bytes": len(data), "requests": requests, "levels": summaries}
    if watch:
        report["server"] = _server_report(watch, pid, rss_mark, mark)
    return report
