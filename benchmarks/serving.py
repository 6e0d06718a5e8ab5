"""`sttm serve` in a subprocess for a benchmark: started on a port, ready, stopped.

with served({"STTM_MODEL": "demo.onnx"}) as (url, proc):
    httpx.post(f"{url}/v1/classify", ...)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(
    env: Mapping[str, str], port: int | None = None, ready_s: float = 300
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`sttm serve` with `env` over this environment on `port` (a free one by default); yields its
    URL once `/v2/health/ready` answers, and the process. A taken port is refused first: a server
    left from an earlier run would answer the health check for this one."""
    port = port or free_port()
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"port {port} is taken (a server left from an earlier run?): stop it first")
    cmd = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, ready_s)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen, ready_s: float) -> None:
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode})")
        time.sleep(0.2)
    raise SystemExit(f"the server did not become ready in {ready_s:.0f} s")
