"""The label tests' model (the service tests' tiny ONNX, built with onnx.helper) and archives
of tiny generated clips, with a few bad files among them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media.clips import numbered_clip
from tests.service.conftest import tiny_onnx  # noqa: F401 - a fixture, shared


def write_archive(folder: Path, count: int, start: int = 0) -> list[Path]:
    """`count` tiny H.264 clips (48x64) whose lengths and content differ, so their answers do."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        paths.append(numbered_clip(folder / f"clip_{i:04d}.mp4", frames=12 + i % 37, fps=10 + i % 5))
    return paths


def write_bad_files(folder: Path) -> dict[str, str]:
    """Files that are not usable videos -> the status the HTTP API answers each with."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text.mp4").write_text("this is not a video\n")
    (folder / "empty.mp4").write_bytes(b"")
    good = numbered_clip(folder / "_whole.mkv", frames=30)
    (folder / "truncated.mkv").write_bytes(good.read_bytes()[:600])
    good.unlink()
    return {"text.mp4": "not_a_video", "empty.mp4": "not_a_video", "truncated.mkv": "empty"}


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> list[Path]:
    return write_archive(tmp_path_factory.mktemp("archive"), 12)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's jobs (a job joins a running Ray instead of starting its own)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=3, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()
