"""`--backend torch` on the CPU: a checkpoint or a model name served directly, a `.pt2` from
`sttm export --format torch`, both agreeing with the eager model; what it refuses, in one line;
the server naming it. (CUDA graphs and fp16 need a GPU: benchmarks/gpu.py.)"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.run import ExportSpec, run_export  # noqa: E402
from models import MergeConfig, build_model, save_model  # noqa: E402
from models.explain import WithMergeIndex  # noqa: E402
from ptruntime.device import choose, here  # noqa: E402
from runtime import BackendOptions, ModelLoadError, load_backend  # noqa: E402
from runtime.agreement import TOLERANCE, moving_squares  # noqa: E402
from runtime.backends import check_request, resolve_kind  # noqa: E402
from runtime.metadata import TORCH_METADATA  # noqa: E402
from tests.torch_helpers import randomize  # noqa: E402

TORCH = BackendOptions("torch")
TORCH_FP32 = BackendOptions("torch", "fp32")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random vit-tiny merged by STTM, in our checkpoint format: (model, directory)."""
    from models import PRESETS

    model = randomize(build_model(PRESETS["vit-tiny"], MergeConfig("sttm", 0.38))).eval()
    return model, save_model(model, tmp_path_factory.mktemp("ckpt") / "tiny-sttm")


@pytest.fixture(scope="module")
def program(checkpoint, tmp_path_factory):
    """`sttm export CKPT --format torch`: the written `.pt2` (validated by the export)."""
    _, directory = checkpoint
    out = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    result = run_export(ExportSpec(model=str(directory), out=out, fmt="torch", quiet=True))
    assert result.files == [out] and result.reports[0].ok
    return out


def _expected(model, videos):
    with torch.no_grad():
        logits, index = WithMergeIndex(model)(torch.from_numpy(videos))
    return logits.numpy(), index.numpy()


def test_a_checkpoint_is_served_directly_and_equals_the_eager_model(checkpoint):
    model, directory = checkpoint
    assert resolve_kind(directory, BackendOptions()).value == "torch"  # auto: only PyTorch runs a checkpoint
    backend = load_backend(directory, TORCH_FP32)
    assert (backend.provider, backend.precision) == ("torch:cpu", "fp32")
    assert backend.meta.name == "tiny-sttm" and backend.meta.merge == "sttm" and backend.meta.merge_output
    videos = moving_squares(backend.meta.input_spec, 3)
    logits, index = _expected(model, videos)
    np.testing.assert_allclose(backend(videos), logits, atol=1e-5)
    got_logits, got_index = backend.explain(videos)
    assert np.array_equal(got_index, index) and got_index.dtype == np.int32


def test_auto_serves_what_this_cpu_decides_and_holds_it_to_eager(checkpoint):
    """`auto`: bf16 on a CPU with bf16 units (held at load to fp32 by the rule every backend
    is, falling back to fp32 with the reason where it fails), fp32 elsewhere."""
    model, directory = checkpoint
    placement = choose(here(), "auto")
    backend = load_backend(directory, BackendOptions())
    assert backend.provider == "torch:cpu" and "PyTorch runs it" in backend.reason
    fell_back = "auto: fp32, torch bf16 does not match" in backend.reason
    assert backend.precision == ("fp32" if fell_back else placement.precision)
    videos = moving_squares(backend.meta.input_spec, 3, seed=5)
    expected = _expected(model, videos)[0]
    assert np.abs(backend(videos) - expected).max() <= TOLERANCE[backend.precision]


def test_the_exported_program_carries_its_metadata_and_runs_as_the_checkpoint(checkpoint, program):
    model, directory = checkpoint
    with zipfile.ZipFile(program) as archive:
        names = archive.namelist()
    assert any(name.endswith(TORCH_METADATA) for name in names)
    served = load_backend(program, BackendOptions())  # auto: a .pt2 runs on PyTorch, in fp32 on every CPU
    assert served.precision == "fp32"
    direct = load_backend(directory, TORCH_FP32)
    assert served.meta == direct.meta
    videos = moving_squares(served.meta.input_spec, 4, seed=3)
    for batch in (1, 4):
        np.testing.assert_allclose(served(videos[:batch]), direct(videos[:batch]), atol=1e-5)
    assert np.array_equal(served.explain(videos)[1], _expected(model, videos)[1])


def test_an_unmerged_model_has_no_merge_output(tmp_path):
    backend = load_backend("vit-tiny", TORCH)  # a built-in name: random weights, no export step
    assert backend.meta.merge == "none" and backend.explain is None
    assert backend(np.zeros(backend.input_shape(2), np.float32)).shape == (2, backend.meta.labels.__len__())


@pytest.mark.parametrize(
    ("source", "options", "says"),
    [
        ("no-such-model", TORCH, "does not exist and is no built-in model"),
        ("missing.pt2", BackendOptions(), "missing.pt2 does not exist"),
        ("vit-tiny", BackendOptions("torch", "int8"), "int8"),
        ("vit-tiny", BackendOptions("torch", "fp16"), "needs a CUDA GPU"),
        ("vit-tiny", BackendOptions("onnxruntime"), "--backend torch"),
    ],
)
def test_what_it_cannot_serve_is_refused_in_one_line_before_loading(source, options, says):
    if torch.cuda.is_available() and "CUDA" in says:
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match=says) as err:
        check_request(source, options)
    assert "\n" not in str(err.value)


def test_a_program_in_a_low_precision_is_refused_in_one_line_before_loading(program):
    """A program computes in fp32 (its graph asserts the dtypes it was traced in): bf16 is refused
    whether or not this CPU has bf16 units."""
    with pytest.raises(ModelLoadError, match="computes in fp32|no bf16 units") as err:
        check_request(program, BackendOptions("torch", "bf16"))
    assert "\n" not in str(err.value)


def test_an_onnx_file_or_a_damaged_program_is_refused(tmp_path, program):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="cannot run on torch"):
        load_backend(onnx_file, TORCH)
    damaged = tmp_path / "damaged.pt2"
    damaged.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="not a torch.export archive"):
        load_backend(damaged, TORCH)
    foreign = tmp_path / "foreign.pt2"  # a torch.export archive without our metadata
    with zipfile.ZipFile(program) as src, zipfile.ZipFile(foreign, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith(TORCH_METADATA):
                dst.writestr(item, src.read(item))
    with pytest.raises(ModelLoadError, match="sttm export --format torch"):
        load_backend(foreign, TORCH)


def test_the_server_names_it_and_answers_on_it(checkpoint):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import DEMO_CHECKPOINT, Settings

    assert Settings(backend="torch").model == DEMO_CHECKPOINT  # the demo, as a checkpoint: no export step
    _, directory = checkpoint
    with TestClient(create_app(Settings(model=directory, backend="torch", max_batch=2))) as client:
        info = client.get("/v1/models").json()[0]
        served = load_backend(directory, BackendOptions("torch"))
        assert (info["backend"], info["precision"], info["reason"]) == ("torch:cpu", served.precision, served.reason)
        assert json.dumps(info).count("tiny") >= 1


def test_the_program_is_moved_whole_to_another_device(program):
    """The program records its export device in its nodes; loaded for another device (meta here,
    standing in for CUDA), a node left on the CPU would mix devices and fail."""
    from ptruntime.artifact import load_program

    module, meta = load_program(program, "meta")
    spec = meta.input_spec
    video = torch.empty(2, 3, spec.frames, spec.size, spec.size, device="meta")
    with torch.no_grad():
        logits, index = module(video)
    assert logits.device.type == index.device.type == "meta" and logits.shape == (2, len(meta.labels))


def test_a_low_precision_is_held_to_fp32_at_load(checkpoint):
    """The load-time check (`runtime.agreement`'s rule, as OpenVINO's bf16): a low precision that
    agrees is kept; one that does not falls back to fp32 under auto and is refused when asked for."""
    from ptruntime.artifact import metadata_for, served_module
    from ptruntime.backend import _checked, _runner
    from ptruntime.device import Placement

    model, _ = checkpoint
    meta = metadata_for(model, "tiny")
    fp32 = _runner(served_module(model, meta), torch.device("cpu"), torch.float32)

    def off(video):  # a low precision gone wrong: logits shifted by far more than 5e-2
        logits, *rest = fp32(video)
        return (logits + np.linspace(0, 1, logits.shape[-1], dtype=np.float32), *rest)

    placement = Placement("cuda", "fp16", "auto: fp16 on a GPU")
    assert _checked(fp32, fp32, meta, placement, BackendOptions("torch", "auto"))[1] == "fp16"
    run, precision, reason = _checked(off, fp32, meta, placement, BackendOptions("torch", "auto"))
    assert run is fp32 and precision == "fp32" and reason.startswith("auto: fp32, torch fp16 does not match")
    with pytest.raises(ModelLoadError, match="serve it with --precision fp32"):
        _checked(off, fp32, meta, placement, BackendOptions("torch", "fp16"))
    assert _checked(off, fp32, meta, placement, BackendOptions("torch", "fp16", check=False))[1] == "fp16"


def test_a_model_is_compiled_at_load_where_asked_and_held_to_eager(tmp_path, monkeypatch):
    """`STTM_TORCH_COMPILE`: the model built from a checkpoint runs under torch.compile (Inductor's
    C++ kernels here), checked at load against the eager model; a compiled model that disagrees is
    refused in one line naming the setting to turn off. (A one-block model: compiling is the cost.)"""
    from models import PRESETS
    from runtime.settings import RuntimeSettings

    monkeypatch.setenv("STTM_TORCH_COMPILE", "default")
    options = RuntimeSettings(backend="torch", precision="fp32", max_batch=2).backend_options
    assert options.compile == "default"
    model = randomize(build_model(PRESETS["vit-tiny"].replace(depth=1), MergeConfig("none", 0.0))).eval()
    directory = save_model(model, tmp_path / "one-block")
    backend = load_backend(directory, options)
    assert backend.provider == "torch:cpu (torch.compile default)" and backend.precision == "fp32"
    assert backend.reason.endswith("torch.compile (checked against eager)")
    videos = moving_squares(backend.meta.input_spec, 3, seed=5)
    with torch.no_grad():
        expected = model(torch.from_numpy(videos)).numpy()
    for batch in (1, 2, 3):
        np.testing.assert_allclose(backend(videos[:batch]), expected[:batch], atol=1e-4)

    import ptruntime.backend as torch_backend

    def wrong(module, mode):  # a compiler gone wrong: every logit shifted
        return lambda video: module(video) + 1.0

    monkeypatch.setattr(torch_backend, "_compiled", wrong)
    with pytest.raises(ModelLoadError, match="torch.compile does not match its eager fp32.*STTM_TORCH_COMPILE=off"):
        load_backend(directory, options)
    with pytest.raises(ModelLoadError, match="STTM_TORCH_COMPILE=fast: one of off, default"):
        check_request(directory, BackendOptions("torch", compile="fast"))
