"""Continuous video under load: concurrent live RTSP streams against a real `sttm serve`, and
one long file through `sttm predict --timeline`.

    python -m benchmarks.streams live [--streams 4 16] [--seconds 20] [--workdir DIR]
    python -m benchmarks.streams live --streams 4 --seconds 600      # a 10-minute soak (RSS once a minute)
    python -m benchmarks.streams long [--minutes 30] [--workdir DIR]

`live`: a 640x360 25 fps H.264 clip served at real time by GStreamer's RTSP server (Debian's
python3, `tests/service/rtsp_server.py`); for each level, that many streams of it
(`POST /v1/streams`), each followed over SSE; while they run, `/v1/classify` uploads are sent
one after another. Reports windows, dropped windows, the server's event lag (a window's last
frame -> its event) p50/p99, the server's RSS before/after, and the uploads' latency.
`long`: a generated 1280x720 25 fps clip of `--minutes` (whole minutes), `sttm predict demo --timeline` in a
subprocess: seconds and peak RSS (the child's `ru_maxrss`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import httpx
import psutil

from benchmarks.decode import make_clip
from benchmarks.serving import free_port, served

REPO = Path(__file__).resolve().parents[1]
RTSP_SERVER = REPO / "tests" / "service" / "rtsp_server.py"
WORKDIR = Path(tempfile.gettempdir()) / "sttm-bench"


def _follow(url: str, sid: str, lags: list[float], stop: threading.Event) -> None:
    with httpx.stream("GET", f"{url}/v1/streams/{sid}/events", timeout=None) as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "window":
                lags.append(json.loads(line[6:])["lag_s"])
            if event == "end" or stop.is_set():
                return


def _percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def live(levels: list[int], seconds: float, workdir: Path) -> list[dict]:
    minute = make_clip(workdir / "minute_640x360.mp4", 60, fps=25, size=(640, 360))
    clip = looped_clip(workdir / f"live_{seconds:g}s_640x360.mp4", minute, int(seconds // 60) + 1)
    upload = make_clip(workdir / "upload_10s.mp4", 4, fps=25, size=(640, 360)).read_bytes()
    rows = []
    for n in levels:
        rtsp_port = free_port()
        rtsp = subprocess.Popen(["/usr/bin/python3", str(RTSP_SERVER), str(clip), str(rtsp_port)],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert rtsp.stdout.readline().strip() == "ready"
        env = {"STTM_STREAM_ALLOW": "127.0.0.1", "STTM_MAX_STREAMS": str(n)}
        try:
            with served(env) as (url, server):
                proc = psutil.Process(server.pid)
                rss_before = proc.memory_info().rss / 2**20
                lags: list[float] = []
                stop = threading.Event()
                sids = []
                for _ in range(n):
                    r = httpx.post(f"{url}/v1/streams", json={"url": f"rtsp://127.0.0.1:{rtsp_port}/clip"}, timeout=30)
                    r.raise_for_status()
                    sids.append(r.json()["id"])
                followers = [threading.Thread(target=_follow, args=(url, sid, lags, stop), daemon=True) for sid in sids]
                for f in followers:
                    f.start()
                uploads, failed, rss = [], 0, []
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    if len(rss) <= (time.monotonic() - end + seconds) // 60:  # once a minute
                        rss.append(round(proc.memory_info().rss / 2**20, 1))
                    t0 = time.perf_counter()
                    r = httpx.post(f"{url}/v1/classify", files={"file": ("c.mp4", upload, "video/mp4")}, timeout=60)
                    uploads.append(time.perf_counter() - t0)
                    failed += r.status_code != 200
                    time.sleep(0.2)
                stats = [httpx.get(f"{url}/v1/streams/{sid}").json()["stats"] for sid in sids]
                rss_after = proc.memory_info().rss / 2**20
                stop.set()
                rows.append(
                    {
                        "streams": n,
                        "seconds": seconds,
                        "windows": sum(s["windows"] for s in stats),
                        "dropped": sum(s["dropped"] for s in stats),
                        "fps_in": round(statistics.mean(s["fps_in"] for s in stats), 1),
                        "lag_p50_s": round(_percentile(lags, 0.5), 3),
                        "lag_p99_s": round(_percentile(lags, 0.99), 3),
                        "rss_before_mb": round(rss_before, 1),
                        "rss_after_mb": round(rss_after, 1),
                        "rss_per_minute_mb": rss,
                        "uploads": len(uploads),
                        "upload_failed": failed,
                        "upload_p50_ms": round(_percentile(uploads, 0.5) * 1000),
                    }
                )
                print(rows[-1], flush=True)
        finally:
            rtsp.kill()
            rtsp.wait()
    return rows


def looped_clip(path: Path, source: Path, loops: int) -> Path:
    """`source`'s packets written `loops` times with shifted timestamps: a long H.264 file in
    seconds (encoding 30 minutes of 720p here would take longer than the benchmark)."""
    if path.is_file():
        return path
    with av.open(str(source)) as src:
        packets = [p for p in src.demux(src.streams.video[0]) if p.dts is not None]
        template = src.streams.video[0]
        step = packets[-1].pts + (packets[1].pts - packets[0].pts) if len(packets) > 1 else 1
        with av.open(str(path), "w") as out:
            stream = out.add_stream_from_template(template)
            for loop in range(max(1, loops)):
                for p in packets:
                    q = av.Packet(bytes(p))
                    q.pts, q.dts, q.time_base, q.stream = p.pts + loop * step, p.dts + loop * step, p.time_base, stream
                    q.is_keyframe = p.is_keyframe
                    out.mux(q)
    return path


def long_file(minutes: float, workdir: Path) -> dict:
    t0 = time.perf_counter()
    minute = make_clip(workdir / "minute_1280x720.mp4", 60, fps=25, size=(1280, 720))
    clip = looped_clip(workdir / f"long_{minutes:g}min_1280x720.mp4", minute, round(minutes))
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cli", "predict", "demo", str(clip), "--timeline",
                          "--stride-s", "1", "--format", "csv"], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(out.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"minutes": minutes, "size": "1280x720", "fps": 25, "seconds": round(seconds, 1),
            "realtime_x": round(minutes * 60 / seconds, 1), "peak_rss_mb": round(peak, 1),
            "segments": len(out.stdout.splitlines()) - 1, "generate_s": round(made, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["live", "long"])
    parser.add_argument("--streams", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    args = parser.parse_args()
    if args.what == "live":
        rows = live(args.streams, args.seconds, args.workdir)
    else:
        rows = [long_file(args.minutes, args.workdir)]
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
