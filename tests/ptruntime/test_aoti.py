"""`sttm export --format aoti` and `--backend torch` on the package, on the CPU: AOTInductor
compiles a tiny model into C++ kernels for this CPU's vector ISA; the package says what it was
compiled for, is refused in one line on a machine that cannot run it (before anything compiled is
loaded), is held at load to the fp32 logits it carries, and serves what the eager model computes.
One compile for the module (a one-block model: AOTInductor's code generation is the cost).
(A CUDA package needs a GPU: benchmarks/gpu.py builds and serves one.)"""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.errors import ExportError  # noqa: E402
from export.run import ExportSpec, run_export  # noqa: E402
from models import PRESETS, MergeConfig, build_model, save_model  # noqa: E402
from ptruntime import aoti  # noqa: E402
from runtime import BackendOptions, ModelLoadError, load_backend  # noqa: E402
from runtime.backends import check_request  # noqa: E402
from tests.torch_helpers import randomize  # noqa: E402

TARGET = aoti.Target("cpu", "avx2", "AMD EPYC", "fp32", 64, "2.13.0")
HERE = aoti.Here(cpu_isas=("avx2",), torch="2.13.0")


@pytest.fixture(scope="module")
def model():
    cfg = PRESETS["vit-tiny"].replace(depth=1)  # one block: the fewest kernels to generate and compile
    return randomize(build_model(cfg, MergeConfig("none", 0.0))).eval()


@pytest.fixture(scope="module")
def package(model, tmp_path_factory):
    """`sttm export CKPT --format aoti`: the written package (validated by the export)."""
    directory = save_model(model, tmp_path_factory.mktemp("ckpt") / "one-block")
    out = tmp_path_factory.mktemp("aoti") / "one-block.pt2"
    result = run_export(ExportSpec(model=str(directory), out=out, fmt="aoti", max_batch=4, quiet=True))
    assert result.files == [out] and result.reports[0].ok
    return out


def _rewritten(package, dest, target=None, drop_extras=False):
    """A copy of `package` with its target replaced (or sttm's extra files left out)."""
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(dest, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(aoti.AOTI_TARGET) or item.filename.endswith("sttm_metadata.json"):
                if drop_extras:
                    continue
                if item.filename.endswith(aoti.AOTI_TARGET) and target is not None:
                    data = json.dumps(target(json.loads(data))).encode()
            dst.writestr(item, data)
    return dest


def test_the_package_says_what_it_was_compiled_for(model, package):
    assert aoti.is_package(package)
    meta, target = aoti.read_package(package)
    assert (target.device, target.precision, target.torch) == ("cpu", "fp32", torch.__version__)
    assert set(target.arch.split()) <= set(aoti.here().cpu_isas) and target.max_batch == 64
    assert np.asarray(target.check_logits).shape == (aoti.CHECK_CLIPS, model.config.num_classes)
    assert meta.name == "one-block" and meta.merge == "none" and meta.precision == "fp32"


def test_it_serves_what_the_eager_model_computes(model, package):
    backend = load_backend(package, BackendOptions(max_batch=4))  # auto: a .pt2 runs on PyTorch
    assert backend.provider == "torch:cpu (AOTInductor)" and backend.precision == "fp32"
    assert backend.reason.endswith(f"an AOTInductor package for {aoti.read_package(package)[1].describe()}")
    videos = np.random.default_rng(1).standard_normal(backend.input_shape(3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(videos)).numpy()
    for batch in (1, 3):
        np.testing.assert_allclose(backend(videos[:batch]), expected[:batch], atol=1e-4)


@pytest.mark.parametrize(
    ("target", "machine", "max_batch", "says"),
    [
        (replace(TARGET, device="cuda", arch="9.0", name="NVIDIA H200"), HERE, 8, "this machine has no CUDA GPU"),
        (
            replace(TARGET, device="cuda", arch="9.0", name="NVIDIA H200"),
            replace(HERE, cuda_arch="8.0", gpu_name="NVIDIA A100"),
            8,
            "compiled for CUDA 9.0 (NVIDIA H200); this GPU is 8.0 (NVIDIA A100)",
        ),
        (
            replace(TARGET, arch="avx512 avx512_vnni"),
            HERE,
            8,
            "compiled for avx512 avx512_vnni CPUs; this CPU has avx2",
        ),
        (TARGET, replace(HERE, torch="2.14.0"), 8, "compiled by torch 2.13.0; this is torch 2.14.0"),
        (TARGET, HERE, 128, "batches 1..64; the server sends up to 128"),
    ],
)
def test_a_machine_that_cannot_run_it_is_told_why_in_one_line(target, machine, max_batch, says):
    why = aoti.refusal(target, machine, max_batch)
    assert says in why and "\n" not in why and ("sttm export --format aoti" in why or "--max-batch" in why)


def test_a_package_for_another_machine_is_refused_before_loading(package, tmp_path):
    cuda = _rewritten(package, tmp_path / "cuda.pt2", lambda t: {**t, "device": "cuda", "arch": "9.0"})
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="compiled for CUDA 9.0.*no CUDA GPU") as err:
            check_request(cuda, BackendOptions())
        assert "\n" not in str(err.value)
    for options, says in [
        (BackendOptions("torch", "bf16"), r"computes in what it was compiled for \(fp32\)"),
        (BackendOptions(max_batch=65), "batches 1..64"),
    ]:
        with pytest.raises(ModelLoadError, match=says):
            load_backend(package, options)


def test_it_is_held_at_load_to_the_logits_it_carries(package, tmp_path):
    def shifted(target):  # every logit it must reproduce off by 1
        return {**target, "check_logits": [[v + 1.0 for v in row] for row in target["check_logits"]]}

    off = _rewritten(package, tmp_path / "off.pt2", shifted)
    with pytest.raises(ModelLoadError, match="does not reproduce the model it was compiled from"):
        load_backend(off, BackendOptions())
    assert load_backend(off, BackendOptions(check=False)).provider == "torch:cpu (AOTInductor)"


def test_a_package_without_our_metadata_is_refused(package, tmp_path):
    foreign = _rewritten(package, tmp_path / "foreign.pt2", drop_extras=True)
    assert aoti.is_package(foreign)
    with pytest.raises(ModelLoadError, match="without sttm's metadata"):
        check_request(foreign, BackendOptions())


def test_what_the_format_cannot_compile_is_refused_before_any_work(tmp_path):
    with pytest.raises(ExportError, match="not int8"):
        ExportSpec(model="vit-tiny", out=tmp_path / "m.pt2", fmt="aoti", precision="int8")
    with pytest.raises(ExportError, match="bf16 is for --format aoti"):
        ExportSpec(model="vit-tiny", out=tmp_path / "m.onnx", precision="bf16")
    if not torch.cuda.is_available():
        with pytest.raises(ExportError, match="--format aoti: --precision fp16 needs a CUDA GPU"):
            run_export(ExportSpec(model="vit-tiny", out=tmp_path / "m.pt2", fmt="aoti", precision="fp16", quiet=True))
    from export.run import run_ladder_export

    with pytest.raises(ExportError, match="leave out --format aoti"):
        run_ladder_export(ExportSpec(model="vit-tiny", out=tmp_path / "ladder", fmt="aoti"), [0.2])
