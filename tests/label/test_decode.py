"""The decoding stage: a video -> its model input, or a row with the code the HTTP API (and
`sttm predict`) answers the same file with; never an exception."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cli.predict import predict
from label.decode import DecodeSpec, decode_batch, decode_one, pixels_of
from label.inputs import expand
from media import Limits, Views, load_clip
from runtime import load_backend
from tests.label.conftest import write_bad_files

pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def spec(tiny_onnx):
    return load_backend(tiny_onnx).meta.input_spec


def test_a_video_leaves_as_the_pixels_load_clip_gives(archive, spec):
    row = decode_one("a", str(archive[0]), DecodeSpec(spec))
    assert row["status"] == "ok" and row["decode_ms"] > 0 and row["duration_s"] > 0
    np.testing.assert_array_equal(pixels_of(row["pixels"], spec), load_clip(archive[0], spec, Views()).pixels)


def test_bad_files_are_rows_with_the_codes_sttm_predict_gives(tmp_path, tiny_onnx, spec):
    expected = write_bad_files(tmp_path)
    paths = [str(tmp_path / name) for name in expected] + [str(tmp_path / "missing.mp4")]
    batch = pa.table({"id": paths, "path": paths})
    staged = decode_batch(batch, DecodeSpec(spec)).to_pylist()
    predicted = predict(str(tiny_onnx), paths)
    assert [r["status"] for r in staged] == [p["error"]["code"] for p in predicted]
    assert [r["status"] for r in staged] == [*expected.values(), "not_found"]
    assert all(r["message"] and r["pixels"] == b"" for r in staged)


def test_the_servers_limits_apply(archive, spec):
    assert decode_one("a", str(archive[0]), DecodeSpec(spec, max_bytes=100))["status"] == "too_large"
    assert decode_one("a", str(archive[0]), DecodeSpec(spec, Limits(max_pixels=100)))["status"] == "too_large"
    assert decode_one("a", str(archive[0]), DecodeSpec(spec, Limits(max_duration_s=0.5)))["status"] == "too_long"


def test_a_url_is_fetched_under_the_size_limit(archive, spec, tmp_path):
    import http.server
    import threading
    from functools import partial

    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(archive[0].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{archive[0].name}"
        (item,) = expand([url])
        assert decode_one(item.id, item.path, DecodeSpec(spec, fetch_timeout_s=10))["status"] == "ok"
        assert decode_one(item.id, item.path, DecodeSpec(spec, max_bytes=100))["status"] == "too_large"
        assert decode_one("x", url + ".nope", DecodeSpec(spec, fetch_timeout_s=10))["status"] == "io_error"
    finally:
        server.shutdown()


def test_a_url_that_drips_is_cut_at_its_deadline(spec):
    """A byte every read (each within the read timeout) held a decoding task for good."""
    import socket
    import threading

    stop = threading.Event()

    def drip(listener):
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while not stop.wait(0.05):
            conn.sendall(b"x")
        conn.close()

    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=drip, args=(listener,), daemon=True).start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v.mp4"
        started = time.monotonic()
        row = decode_one("x", url, DecodeSpec(spec, fetch_timeout_s=1, fetch_deadline_s=0.5))
        stop.set()
    assert row["status"] == "timeout" and row["message"] == "the body did not arrive within 0.5 s"
    assert time.monotonic() - started < 2
