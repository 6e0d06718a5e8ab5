"""OpenVINO IR (`.xml` + `.bin`, `sttm export --format openvino`): an exported ONNX file as
OpenVINO's own format, in fp32 or statically quantised to int8 by post-training quantisation
with NNCF (OpenVINO's quantiser). The server's OpenVINO backend loads it.

Activation ranges come from calibration clips — decoded from a data set directory (the
layout `models.data` reads) or generated (`runtime.agreement.moving_squares`, a seed the
validation clips never use). Every node the exporter traced inside a merger
(`export.onnx.merger_nodes`: similarities, density peaks, TopK, the one-hot merge, the
log-size bias) is left out of quantisation, so merge decisions are made in fp32; so are the
matmuls of two activations (NNCF's transformer preset), the patch embedding and the head.
The model's metadata travels in the IR's `rt_info` (`framework` / `sttm.*`, as OpenVINO
reads it from an ONNX file), with `sttm.precision` set to `int8`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import openvino

from export.errors import ExportError
from export.onnx import merger_nodes, module_nodes
from media import InputSpec
from runtime.agreement import moving_squares
from runtime.metadata import PREFIX

CALIBRATION_SEED = 1  # the validation clips are seed 0


def calibration_clips(spec: InputSpec, count: int, data: str | Path | None = None, split: str = "train") -> np.ndarray:
    """`[count, 3, T, S, S]` float32 clips to calibrate with: `count` spread evenly over a data
    set's `split` (so every class is seen), decoded as the server decodes; or, without `data`,
    generated clips."""
    if data is None:
        return moving_squares(spec, count, seed=CALIBRATION_SEED)
    from models.data import VideoDataset, load_split

    dataset = VideoDataset(load_split(data, split), spec, train=False)  # the server's view of each clip
    picked = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int))
    clips = [item[0].numpy() for item in (dataset[int(i)] for i in picked) if item is not None]  # (3, T, S, S) each
    if not clips:
        raise ExportError(f"{data}: no calibration clip of the {split} split could be decoded")
    return np.stack(clips)


def write_ir(onnx_path: str | Path, out: str | Path, calibration: np.ndarray | None = None, quiet: bool = True) -> Path:
    """The exported `onnx_path` as the IR `out` (`.xml`; its weights in the `.bin` beside it):
    fp32, or quantised to int8 with the `calibration` clips (NNCF's progress bars on stderr
    unless `quiet`). Returns `out`."""
    model = openvino.Core().read_model(str(onnx_path))
    # the ONNX file's distance from PyTorch is not the IR's (no rewrite rule reads an IR's)
    model.set_rt_info(json.dumps(None), ["framework", f"{PREFIX}validated_diff"])
    if calibration is not None:
        proto = onnx.load(str(onnx_path), load_external_data=False)
        # fp32: the merge decisions, and the first and last layers (patch embedding, head: cheap,
        # and where int8 costs the most accuracy — 0.22 -> 0.06 max logit diff on vit-tiny + STTM)
        keep = merger_nodes(proto) + module_nodes(proto, "patch_embed", "head")
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull if quiet else sys.stderr):
            model = quantize_int8(model, keep, calibration)  # NNCF draws its progress on stdout
    out = Path(out)
    openvino.save_model(model, str(out), compress_to_fp16=False)  # weights as they are: no silent fp16
    return out


def quantize_int8(model: openvino.Model, keep: list[str], clips: np.ndarray) -> openvino.Model:
    """`model` with int8 weights and activations, calibrated on `clips` `[N, 3, T, S, S]`; the
    nodes named in `keep` (those present) and matmuls of two activations stay fp32."""
    import nncf

    # OpenVINO names a converted node as the ONNX node, or `<name>/<part>` when it splits one (Gemm)
    wanted = set(keep)
    ignored = [op.get_friendly_name() for op in model.get_ops() if op.get_friendly_name().split("/")[0] in wanted]
    nncf.set_log_level(logging.ERROR)  # its per-node INFO lines are not ours to show
    quantised = nncf.quantize(
        model,
        nncf.Dataset(list(clips[:, None])),  # one clip per call: [1, 3, T, S, S]
        model_type=nncf.ModelType.TRANSFORMER,  # activation x activation matmuls stay fp32
        subset_size=len(clips),
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
        # no SmoothQuant: on our ViTs it moved the logits more than it saved (vit-tiny + STTM 0.08 vs 0.22)
        # 7-bit weights everywhere (NNCF's overflow fix): exact on CPUs without VNNI too
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1),
            overflow_fix=nncf.OverflowFix.ENABLE,
        ),
    )
    quantised.set_rt_info(json.dumps("int8"), ["framework", f"{PREFIX}precision"])
    return quantised
