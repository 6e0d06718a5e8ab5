"""A real Triton server (the `nvidia-pytriton` wheel, started by `sttm triton` on 127.0.0.1)
serves the repository `sttm export --format triton` writes for the bundled demo model:
clips in, labels out, as `sttm serve` answers them.

`sttm triton` runs from `.venv-triton` (`make install-triton`; Triton's Python-backend stub
needs numpy < 2), or the interpreter named by STTM_TRITON_PYTHON. One server is started for
the module; it loads models explicitly, so the broken-model case does not stop it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from cli.loadtest import bench
from export.triton import write_repository
from media import Limits, VideoError, Views, load_clip
from models.synth import CLASSES, SynthConfig, generate
from runtime.backends import read_metadata
from service.classify import ClassifyOptions
from service.lifecycle import open_classifier
from service.settings import DEMO_ONNX, Settings
from tests.media.clips import numbered_clip

ROOT = Path(__file__).resolve().parents[2]
TRITON_PYTHON = os.environ.get("STTM_TRITON_PYTHON", str(ROOT / ".venv-triton" / "bin" / "python"))
MAX_PIXELS = 160 * 160  # the server's STTM_MAX_PIXELS: the generated clips (128x128) pass, 320x240 does not
SETTINGS = {"STTM_PRECISION": "fp32", "STTM_MAX_PIXELS": str(MAX_PIXELS)}  # the same for Triton and in-process
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    generate(out, clips_per_class=1, cfg=SynthConfig(seed=4242), workers=1)
    return {name: out / "videos" / f"{name}_00000.mp4" for name in CLASSES[:4]}


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    """`sttm triton REPO` on free ports, ready; yields (process, ports, repo)."""
    if not Path(TRITON_PYTHON).is_file():
        pytest.fail(f"{TRITON_PYTHON} missing: `make install-triton` makes it (or set STTM_TRITON_PYTHON)")
    repo = tmp_path_factory.mktemp("repo")
    write_repository(repo, "sttm", read_metadata(DEMO_ONNX), DEMO_ONNX, max_batch=8)  # what `sttm export` writes
    _patient_copy(repo)  # loaded with the others (loading it later and unloading it once hung Triton's unload)
    ports = {"http": _free_port(), "grpc": _free_port(), "metrics": _free_port()}
    log = open(tmp_path_factory.mktemp("log") / "triton.log", "w+")  # noqa: SIM115 - lives as long as the server
    argv = [TRITON_PYTHON, "-m", "cli", "triton", str(repo), *(f"--{k}-port={v}" for k, v in ports.items()),
            "--tritonserver-arg=--model-control-mode=explicit", "--tritonserver-arg=--load-model=*"]  # fmt: skip
    process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **SETTINGS}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while _get(f"http://127.0.0.1:{ports['http']}/v2/health/ready") != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.seek(0)
            pytest.fail(f"Triton did not become ready (exit {process.poll()}):\n{log.read()[-3000:]}")
        time.sleep(0.5)
    yield process, ports, repo
    if process.poll() is None:
        process.kill()
        process.wait(30)
    log.close()


@pytest.fixture
def http(triton):
    """A KServe v2 HTTP client, closed after the test: Triton's shutdown waits for open connections."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{triton[1]['http']}", concurrency=16, network_timeout=120)
    yield client
    client.close()


def _inputs(module, data: bytes, **options):
    video = module.InferInput("video", [1], "BYTES")
    video.set_data_from_numpy(np.array([data], dtype=np.object_))
    extra = []
    for name, value in options.items():
        extra.append(module.InferInput(name, [1], "INT32"))
        extra[-1].set_data_from_numpy(np.array([value], np.int32))
    return [video, *extra]


def _labels_scores(result) -> tuple[list[str], np.ndarray]:
    return [b.decode() for b in result.as_numpy("labels")], result.as_numpy("scores")


def _in_process(paths: list[Path], opts: ClassifyOptions):
    """What `sttm serve` answers: the Classifier use case with the same settings."""

    async def run():
        async with open_classifier(Settings(model=DEMO_ONNX, **{k[5:].lower(): v for k, v in SETTINGS.items()})) as c:
            return [await c.classify(str(p), opts) for p in paths]

    return asyncio.run(run())


def test_ensemble_labels_clips_as_sttm_serve_does(triton, http, clips):
    paths = list(clips.values())
    expected = _in_process(paths, ClassifyOptions(top_k=5))
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{triton[1]['grpc']}")
    for path, want in zip(paths, expected):
        for client, module in ((http, httpclient), (grpc, grpcclient)):
            labels, scores = _labels_scores(client.infer("sttm_video", _inputs(module, path.read_bytes())))
            assert labels == [p.label for p in want.predictions]  # same top-5, best first
            np.testing.assert_allclose(scores, [p.score for p in want.predictions], atol=1e-4)
    grpc.close()
    assert sum(e.predictions[0].label == name for name, e in zip(clips, expected)) >= 3  # the demo knows them
    # options: 2 clips x ThreeCrop, top 2
    (want,) = _in_process(paths[:1], ClassifyOptions(top_k=2, views=Views(num_clips=2, crops=3)))
    labels, scores = _labels_scores(http.infer("sttm_video", _inputs(httpclient, paths[0].read_bytes(), num_clips=2,
                                                                     crops=3, top_k=2)))  # fmt: skip
    assert labels == [p.label for p in want.predictions]
    np.testing.assert_allclose(scores, [p.score for p in want.predictions], atol=1e-4)


def _counts(ports, model: str) -> tuple[float, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # counters: the parser names the samples <family>_total
            if family.name in ("nv_inference_count", "nv_inference_exec_count") and sample.labels["model"] == model:
                found[family.name] = sample.value
    return found["nv_inference_count"], found["nv_inference_exec_count"]


def _copy_model(repo: Path, name: str) -> Path:
    """A copy of the exported `sttm` model under another name, not loaded; its folder."""
    shutil.copytree(repo / "sttm", repo / name)
    config = repo / name / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "sttm"', f'name: "{name}"'))
    return repo / name


def _patient_copy(repo: Path) -> None:
    """`sttm_patient`: the exported model with a 1 s queue delay instead of the exported 5 ms, for
    `test_concurrent_requests_are_batched`. It is in the repository from the start: loading it
    during the run and unloading it after once left its Python stub unloading for good (CI,
    2026-12-03: no unload in 60 s, the server not ready after, and Triton's 30 s exit timeout)."""
    config = _copy_model(repo, "sttm_patient") / "config.pbtxt"
    text, delays = re.subn(r"max_queue_delay_microseconds: \d+", "max_queue_delay_microseconds: 1000000",
                           config.read_text())  # fmt: skip
    assert delays == 1
    config.write_text(text)


def test_concurrent_requests_are_batched(triton, http, clips):
    """16 clip tensors sent at once to the model run in fewer executions, each answer the
    model's own. The model is served once more with a 1 s queue delay instead of the
    exported 5 ms (`_patient_copy`): how many arrive within 5 ms of each other is up to the client's and the
    machine's speed (on a busy 2-core CI machine, none did), while whether the model takes
    batches and answers each request of one alike is what is tested. Through the ensemble
    the decoders hand the model one clip at a time as each finishes decoding, so it is
    checked for consistent answers."""
    ports, client = triton[1], http
    meta = read_metadata(DEMO_ONNX)
    data = next(iter(clips.values())).read_bytes()
    clip = load_clip(data, meta.input_spec, Views(), Limits(max_pixels=MAX_PIXELS)).tensor  # (1, 3, T, S, S)
    tensor = httpclient.InferInput(meta.input_name, list(clip.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(clip, dtype=np.float32), binary_data=True)
    count0, exec0 = _counts(ports, "sttm_patient")  # its warm-up request counts too
    pending = [client.async_infer("sttm_patient", [tensor]) for _ in range(16)]
    logits = [p.get_result(timeout=120).as_numpy(meta.output_name) for p in pending]
    # Triton may answer a request before its statistics count it (seen: 12 of 16 under load)
    deadline = time.monotonic() + 10
    while (counted := _counts(ports, "sttm_patient"))[0] - count0 < 16 and time.monotonic() < deadline:
        time.sleep(0.2)
    count1, exec1 = counted
    assert count1 - count0 == 16 and exec1 - exec0 < 16  # some of them ran together
    for answer in logits:  # batched or alone, the same logits
        np.testing.assert_allclose(answer, logits[0], atol=1e-4)
    pending = [client.async_infer("sttm_video", _inputs(httpclient, data)) for _ in range(8)]
    answers = [_labels_scores(p.get_result(timeout=120)) for p in pending]
    assert all(labels == answers[0][0] for labels, _ in answers)


def _refusal(data: bytes) -> VideoError:
    with pytest.raises(VideoError) as caught:
        load_clip(data, read_metadata(DEMO_ONNX).input_spec, Views(), Limits(max_pixels=MAX_PIXELS))
    return caught.value


def test_bad_clips_are_per_request_errors_and_the_server_stays_ready(http, clips, tmp_path):
    client = http
    good = next(iter(clips.values())).read_bytes()
    large = numbered_clip(tmp_path / "large.mp4", frames=4, size=(240, 320)).read_bytes()
    for data, code in ((b"just some text\n" * 50, "not_a_video"), (good[: len(good) // 2], None), (large, "too_large")):
        expected = _refusal(data)  # what `sttm serve` says of it
        assert code is None or expected.code == code
        with pytest.raises(InferenceServerException) as caught:
            client.infer("sttm_video", _inputs(httpclient, data))
        assert f"{expected.code}: {expected}" in caught.value.message()
        assert caught.value.status() == "400"
        assert client.is_server_ready()
    with pytest.raises(InferenceServerException, match="bad_option: crops must be 1 or 3"):
        client.infer("sttm_video", _inputs(httpclient, good, crops=2))
    with pytest.raises(InferenceServerException, match="bad_option: num_clips x crops is over 8 views"):
        client.infer("sttm_video", _inputs(httpclient, good, num_clips=3, crops=3))  # the model's max batch
    with pytest.raises(InferenceServerException, match="bad_option: top_k must be at least 1, not 0"):
        client.infer("sttm_video", _inputs(httpclient, good, top_k=0))
    labels, _ = _labels_scores(client.infer("sttm_video", _inputs(httpclient, good)))  # no instance was lost
    assert len(labels) == 5


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_broken_model_file_is_not_ready_with_a_reason(triton, http, damage):
    repo, client = triton[2], http
    name = f"broken_{damage}"
    model_file = _copy_model(repo, name) / "1" / "model.onnx"
    if damage == "missing":
        model_file.unlink()
    else:
        model_file.write_bytes(model_file.read_bytes()[:1000])
    with pytest.raises(InferenceServerException) as caught:
        client.load_model(name)
    reason = {"missing": "does not exist", "corrupt": "cannot load"}[damage]
    assert reason in caught.value.message() and str(model_file) in caught.value.message()
    assert not client.is_model_ready(name)
    (entry,) = [m for m in client.get_model_repository_index() if m["name"] == name]
    assert entry["state"] == "UNAVAILABLE" and reason in entry["reason"]
    assert client.is_model_ready("sttm_video")


def test_bench_serve_speaks_v2_to_the_ensemble(triton, clips):
    clip = next(iter(clips.values()))
    report = asyncio.run(bench(f"http://127.0.0.1:{triton[1]['http']}", clip, [1, 4], 4, protocol="v2", warmup=1))
    assert report["url"].endswith("/v2/models/sttm_video/infer")
    assert [(lv["requests"], lv["errors"]) for lv in report["levels"]] == [(4, 0), (4, 0)]
    assert all(lv["throughput_rps"] > 0 and lv["latency_ms"]["p50"] > 0 for lv in report["levels"])


def test_sigterm_stops_triton_cleanly(triton):
    process, ports, _ = triton
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    assert _get(f"http://127.0.0.1:{ports['http']}/v2/health/live") == 0  # the port is closed
