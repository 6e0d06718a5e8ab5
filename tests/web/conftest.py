"""A real `sttm serve` with the bundled demo model, and Debian's chromium driven headless by
Selenium (chromium-driver): the page is tested as a user meets it. The browser's fake camera
plays a generated `.y4m` of a known class. Screenshots go to `$STTM_TEST_ARTIFACTS`
(default `tests/artifacts/`, git-ignored)."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from models.synth import PAIRS, SynthConfig, render_clip, write_mp4
from tests.service.conftest import faststart
from tests.service.test_load import _start

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo" / "demo.onnx"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
UPLOAD_MB = 1.0  # the test server's upload limit, so that an "oversized" file is small
API_KEY = "page-test-key"


def motion(label: str) -> tuple[int, bool]:
    """`render_clip`'s (pair, reverse) arguments for a class name."""
    pair = next(i for i, p in enumerate(PAIRS) if label in p)
    return pair, PAIRS[pair][1] == label


def render(label: str, seed: int, frames: int = 32, size: int = 128) -> np.ndarray:
    return render_clip(*motion(label), SynthConfig(size=size, frames=frames, seed=seed), np.random.default_rng(seed))


def write_y4m(path: Path, frames: np.ndarray, fps: int = 15) -> Path:
    """YUV4MPEG2, 4:2:0 (what chromium's fake camera reads): BT.601 from RGB, chroma 2x2-averaged."""
    rgb = frames.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    T, H, W = y.shape
    half = lambda c: c.reshape(T, H // 2, 2, W // 2, 2).mean((2, 4))  # noqa: E731 - (T, H/2, W/2)
    planes = [p.round().clip(0, 255).astype(np.uint8) for p in (y, half(u), half(v))]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{W} H{H} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for t in range(T):
            out.write(b"FRAME\n" + b"".join(p[t].tobytes() for p in planes))
    return path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def media_url(media):
    """The media directory over plain HTTP on 127.0.0.1 (a URL stream's source)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(media["long"].parent))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """A clip of a known class, a long clip (moving right, then moving left), the camera's
    y4m, a text file and a file over the upload limit."""
    out = tmp_path_factory.mktemp("media")
    files = {"right": out / "moving_right.mp4", "long": out / "right_then_left.mp4", "text": out / "notes.txt",
             "large": out / "large.mp4", "camera": out / "camera.y4m"}  # fmt: skip
    write_mp4(files["right"], render("moving_right", 11))
    long = np.concatenate(
        [render("moving_right", 21 + i) for i in range(3)] + [render("moving_left", 31 + i) for i in range(3)]
    )
    write_mp4(out / "long.mp4", long)  # 6 x 32 frames at 15 fps: ~6.4 s right, ~6.4 s left
    faststart(out / "long.mp4", files["long"])
    write_y4m(files["camera"], np.concatenate([render("moving_down", 41 + i) for i in range(4)]))
    files["text"].write_text("this is not a video\n" * 50)
    files["large"].write_bytes(files["right"].read_bytes() + os.urandom(int(UPLOAD_MB * (1 << 20)) + 1))
    return files


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`sttm serve` on the demo model with an API key and a 1 MB upload limit; URL streams
    may read from 127.0.0.1."""
    env = {"STTM_MAX_UPLOAD_MB": str(UPLOAD_MB), "STTM_API_KEY": API_KEY, "STTM_BACKEND": "onnxruntime",
           "STTM_STREAM_ALLOW": "127.0.0.1"}  # fmt: skip
    srv = _start(tmp_path_factory.mktemp("web-server"), DEMO, env=env)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("STTM_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser(media):
    """Headless chromium with the fake camera; its console log is kept (`get_log("browser")`)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromium-driver are needed (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1400",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={media['camera']}"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()
