from __future__ import annotations

import pytest

from models import load_model
from tests.torch_helpers import randomize


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
