from __future__ import annotations

import pytest

from export.onnx import export_onnx, metadata_for
from models import load_model
from tests.torch_helpers import randomize


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Export each (model, merge) once per session: `exported(name, merge) -> (model, path)`."""
    cache = {}

    def get(name: str, merge: str, reduction: float = 0.38, **overrides):
        key = (name, merge, reduction, tuple(sorted(overrides.items())))
        if key not in cache:
            model = load_model(name, merge=merge, reduction=reduction if merge != "none" else 0.0)
            if overrides:
                from models import MergeConfig, build_model

                model = build_model(model.config.replace(**overrides), MergeConfig(merge, model.merge_config.reduction))
            randomize(model)  # every weight random: stricter parity than the default init
            path = tmp_path_factory.mktemp("onnx") / f"{name}-{merge}.onnx"
            export_onnx(model, path, metadata_for(model, name))
            cache[key] = (model, path)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def data_and_model(tmp_path_factory):
    """A labelled data set of generated clips (3 per class, 64x64) and a random vit-tiny
    checkpoint with its labels: `root/data`, `root/ckpt`."""
    from models import build_model, save_model
    from models.synth import CLASSES, SynthConfig, generate

    root = tmp_path_factory.mktemp("eval")
    generate(root / "data", clips_per_class=3, cfg=SynthConfig(size=64, frames=16, seed=9), workers=1)
    cfg = load_model("vit-tiny").config.replace(num_classes=len(CLASSES), labels=tuple(CLASSES))
    save_model(randomize(build_model(cfg)), root / "ckpt")
    return root
