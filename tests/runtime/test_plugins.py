"""Backends found as plugins (torch-free: these run in `.venv-serve` too): which sources go to
the PyTorch plugin, what is said where it cannot load, and when `auto` prefers it."""

from __future__ import annotations

import pytest

from runtime import backends
from runtime.backends import BackendOptions, ModelLoadError, plugins, prefer_torch, resolve_kind, runs_on_torch

INSTALL = "pip install torch==2.13.0"


@pytest.fixture
def torch_plugin(monkeypatch):
    """The torch plugin taken as loadable (nothing is loaded: `resolve_kind` only decides)."""
    monkeypatch.setattr(backends, "missing_reason", lambda name: None)


@pytest.fixture
def no_torch(monkeypatch):
    """torch taken as not installed, as in the serving image."""
    real = plugins.importlib.util.find_spec
    monkeypatch.setattr(plugins.importlib.util, "find_spec", lambda name: None if name == "torch" else real(name))


def test_only_pytorch_runs_programs_checkpoints_and_names(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for source in ("m.pt2", "videomae-b", "demo", "weights.pth", checkpoint):
        assert runs_on_torch(tmp_path / source)
    for source in ("m.onnx", "m.xml", "m.plan", "m.engine"):
        assert not runs_on_torch(tmp_path / source)


def test_auto_sends_them_to_the_plugin(tmp_path, torch_plugin):
    (tmp_path / "m.pt2").write_bytes(b"")
    assert resolve_kind(tmp_path / "m.pt2", BackendOptions()).value == "torch"
    reason = resolve_kind(tmp_path / "videomae-b", BackendOptions()).reason
    assert reason == "a checkpoint or model name: PyTorch runs it"
    with pytest.raises(ModelLoadError, match="cannot run on torch"):
        (tmp_path / "m.onnx").write_bytes(b"")
        resolve_kind(tmp_path / "m.onnx", BackendOptions("torch"))
    with pytest.raises(ModelLoadError, match="--backend torch"):
        resolve_kind(tmp_path / "m.pt2", BackendOptions("onnxruntime"))


def test_without_torch_it_says_what_to_install_in_one_line(tmp_path, no_torch):
    assert INSTALL in plugins.missing_reason("torch")
    with pytest.raises(plugins.PluginMissingError, match=INSTALL):
        plugins.plugin("torch")
    for options in (BackendOptions("torch"), BackendOptions()):
        with pytest.raises(ModelLoadError, match=INSTALL) as err:
            backends.check_request(tmp_path / "videomae-b", options)
        assert "\n" not in str(err.value)


def test_without_torch_a_clip_given_as_the_model_is_not_blamed_on_backend_torch(tmp_path, no_torch):
    """`sttm serve --model clip.mp4` in the serving image said only '--backend torch needs torch', a
    flag the user never gave: it says the file is no exported model first."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(ModelLoadError) as err:
        backends.check_request(clip, BackendOptions())
    assert str(err.value).startswith(f"{clip}: not an exported model (.onnx, .xml, .plan, .engine); a checkpoint")
    assert INSTALL in str(err.value) and "\n" not in str(err.value)
    program = tmp_path / "m.pt2"
    program.write_bytes(b"PK")
    with pytest.raises(ModelLoadError, match=r"m\.pt2: --backend torch needs torch"):  # a program is exported
        backends.check_request(program, BackendOptions())


def test_an_unknown_plugin_is_named():
    assert "no plugin of that name" in plugins.missing_reason("no-such-backend")


def test_a_gpu_is_seen_from_the_driver_files_without_importing_torch(tmp_path):
    assert not plugins.nvidia_gpu_present((tmp_path / "version",))
    (tmp_path / "version").write_text("NVRM version: 580")
    assert plugins.nvidia_gpu_present((tmp_path / "nvidiactl", tmp_path / "version"))


@pytest.mark.parametrize(
    ("gpu", "tensorrt", "torch", "expected"),
    [(True, False, True, True), (True, True, True, False), (False, False, True, False), (True, False, False, False)],
)
def test_auto_prefers_pytorch_with_a_gpu_torch_and_no_tensorrt(monkeypatch, gpu, tensorrt, torch, expected):
    monkeypatch.setattr(backends, "nvidia_gpu_present", lambda: gpu)
    monkeypatch.setattr(backends, "installed", lambda module: tensorrt if module == "tensorrt" else True)
    monkeypatch.setattr(backends, "missing_reason", lambda name: None if torch else "no torch")
    assert prefer_torch() is expected


def test_the_demo_is_served_as_its_checkpoint_on_pytorch(monkeypatch):
    pytest.importorskip("fastapi")
    from service import settings as service_settings
    from service.settings import DEMO_CHECKPOINT, DEMO_ONNX, Settings

    for name in ("STTM_MODEL", "STTM_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    assert Settings(backend="torch").model == DEMO_CHECKPOINT
    assert Settings(model="demo", backend="torch").model == DEMO_CHECKPOINT
    monkeypatch.setattr(service_settings, "prefer_torch", lambda: False)
    assert Settings().model == DEMO_ONNX
    monkeypatch.setattr(service_settings, "prefer_torch", lambda: True)
    assert Settings().model == DEMO_CHECKPOINT  # auto on a GPU machine without TensorRT
    assert Settings(backend="onnxruntime").model == DEMO_ONNX
