"""`sttm triton`'s set-up, on a stand-in for the wheel's layout (the real server runs in
tests/triton): the backend directory gets this Python's stub, the environment the library
path and the project."""

from __future__ import annotations

import os
import sys
import sysconfig

import pytest

from tritonserve.launch import PROJECT_ROOT, Ports, backend_dir, command, environment


def _wheel(root):
    """site-packages/pytriton/tritonserver, as nvidia-pytriton lays it out."""
    wheel = root / "site-packages" / "pytriton" / "tritonserver"
    (wheel / "backends" / "python").mkdir(parents=True)
    (wheel / "backends" / "python" / "libtriton_python.so").write_bytes(b"backend")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    (wheel / "python_backend_stubs" / version).mkdir(parents=True)
    (wheel / "python_backend_stubs" / version / "triton_python_backend_stub").write_bytes(b"stub")
    (root / "site-packages" / "nvidia_pytriton.libs").mkdir()
    return wheel


def test_backend_dir_holds_this_pythons_stub_once(tmp_path):
    wheel = _wheel(tmp_path)
    backends = backend_dir(wheel, tmp_path / "cache", "0.7.0")
    assert (backends / "python" / "triton_python_backend_stub").read_bytes() == b"stub"
    assert (backends / "python" / "libtriton_python.so").read_bytes() == b"backend"
    (wheel / "python_backend_stubs").rename(tmp_path / "gone")  # built once: the copy is reused
    assert backend_dir(wheel, tmp_path / "cache", "0.7.0") == backends
    assert sorted(os.listdir(backends.parent)) == ["backends"]  # no staging copy left


def test_environment_and_command(tmp_path):
    wheel = _wheel(tmp_path)
    env = environment(wheel, {"LD_LIBRARY_PATH": "/x", "PYTHONPATH": "/y", "STTM_MAX_PIXELS": "9"})
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert libs[0] == str(tmp_path / "site-packages" / "nvidia_pytriton.libs") and libs[-1] == "/x"
    assert sysconfig.get_config_var("LIBDIR") in libs  # libpython for the stub
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths[0] == str(PROJECT_ROOT) and sysconfig.get_path("purelib") in paths and paths[-1] == "/y"
    assert env["STTM_MAX_PIXELS"] == "9"  # the preprocess model's limits come through
    argv = command(wheel, tmp_path / "b", tmp_path / "repo", Ports(1, 2, 3), "127.0.0.1", ["--log-verbose=1"])
    assert argv[0] == str(wheel / "bin" / "tritonserver") and argv[-1] == "--log-verbose=1"
    assert {f"--model-repository={tmp_path / 'repo'}", f"--backend-directory={tmp_path / 'b'}", "--http-port=1",
            "--grpc-port=2", "--metrics-port=3", "--http-address=127.0.0.1"} <= set(argv)  # fmt: skip


def test_a_directory_that_is_not_a_repository_is_one_line_before_triton_starts(tmp_path, capsys):
    """Triton started, printed its tables and failed ("failed to load all models", exit 1)."""
    from cli.main import main

    assert main(["triton", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "videos").mkdir()  # a folder of something else
    assert main(["triton", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sttm triton: error: {tmp_path} is not a model repository: no MODEL/config.pbtxt (")
    assert err.count("\n") == 1


def test_a_port_in_use_is_one_line_before_triton_starts(tmp_path, capsys, monkeypatch):
    """Triton found a port in use after loading every model."""
    import socket

    import tritonserve.launch
    from cli.main import main

    monkeypatch.setattr(tritonserve.launch, "prepare", lambda *a, **k: ([], {}))  # the wheel need not be here
    monkeypatch.setattr(tritonserve.launch, "become", lambda *a, **k: pytest.fail("Triton must not start"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = [f"--{kind}-port={port}" for kind in ("http", "grpc", "metrics")]  # whatever else is in use here
        assert main(["triton", str(tmp_path), *ports]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sttm triton: error: cannot listen on 127.0.0.1:{port}: Address already in use")
