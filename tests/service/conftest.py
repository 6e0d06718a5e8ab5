from __future__ import annotations

import pytest

from models.synth import CLASSES, SynthConfig, generate


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """A small exported model with the motion labels (random weights: fast, not accurate)."""
    from export.onnx import export_onnx, metadata_for
    from models import build_model, load_model
    from tests.conftest import randomize

    cfg = load_model("vit-tiny").config.replace(num_classes=len(CLASSES), labels=tuple(CLASSES))
    model = randomize(build_model(cfg))
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_onnx(model, path, metadata_for(model, "tiny"))
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Generated clips of known class (the demo model's input size)."""
    out = tmp_path_factory.mktemp("clips")
    generate(out, clips_per_class=1, cfg=SynthConfig(seed=4242), workers=1)
    return out
