"""The bundled demo's top-1 on clips of seeds it never saw, per runtime x precision:
does a low run-time precision keep the accuracy of fp32? (The issue's bar: within 0.5 points.)

    python -m benchmarks.precision [--model models/demo/demo.onnx] [--seeds 12345 777] [--calib DATA]

Each combination is opened as the server opens it (bf16: the whole model in bf16 when that
passes the load-time check, else with the merge decisions in fp32); one the check refuses is
measured as opened without the check (`check=False`), and the whole model in bf16 is
measured beside what is served. The table says which the check (and `sttm validate`)
accept. int8: the model quantised as `sttm export --format openvino --precision int8`
quantises it (`export.ir.write_ir`), calibrated on `--calib-clips`
clips of the train split of `--calib` (default: a data set of seed 99, generated once, which
neither the demo nor the unseen sets use), written without the export's gate so that a model
the gate refuses is measured too; the last column says whether that gate passes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.experiments import UNSEEN, data, unseen_data
from export.evaluate import evaluate
from export.ir import calibration_clips, write_ir
from runtime.agreement import ValidationError, compare, moving_squares
from runtime.backends import BackendOptions, ModelLoadError, load_backend
from service.settings import DEMO_ONNX

COMBINATIONS = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
CALIBRATION_SEED = 99


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO_ONNX))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(UNSEEN), choices=list(UNSEEN))
    parser.add_argument("--calib", default=None, help="int8 calibration data set (default: generated, seed 99)")
    parser.add_argument("--calib-clips", type=int, default=64)
    args = parser.parse_args(argv)
    print("| runtime | precision | passes the load-time check | " + " | ".join(f"top-1 seed {s}" for s in args.seeds)
          + " | top-1 all |")  # fmt: skip
    print("|---|---|---|" + "---|" * (len(args.seeds) + 1))
    with tempfile.TemporaryDirectory() as scratch:
        for kind, precision in COMBINATIONS:
            path = args.model
            if precision == "int8":
                spec = load_backend(args.model, BackendOptions("onnxruntime")).meta.input_spec
                calib = args.calib or data(f"calib{CALIBRATION_SEED}", 8, CALIBRATION_SEED)
                path = write_ir(
                    args.model, Path(scratch) / "int8.xml", calibration_clips(spec, args.calib_clips, calib)
                )
            try:
                backend = load_backend(path, BackendOptions(kind, precision))
                checked = "yes" if precision != "int8" else _int8_gate(args.model, path)
            except ModelLoadError as err:
                backend, checked = None, f"no ({str(err).split(': ', 1)[-1].split(':')[0]})"
            rows = [(backend or load_backend(path, BackendOptions(kind, precision, check=False)), checked)]
            if precision == "bf16" and backend is not None and backend.provider != "openvino:CPU":
                rows.append((load_backend(path, BackendOptions(kind, precision, check=False)), "no (the whole model)"))
            for backend, checked in rows:
                results = [evaluate(args.model, unseen_data(s), "all", workers=1, exported=backend) for s in args.seeds]
                hits, clips = sum(r["top1"] * r["clips"] for r in results), sum(r["clips"] for r in results)
                cells = " | ".join(f"{r['top1']:.2%} ({r['clips']})" for r in results)
                served = backend.provider.removeprefix("openvino:CPU").strip(" ()") or "whole model"
                label = (
                    f"{backend.precision} ({served})"
                    if kind == "openvino" and precision == "bf16"
                    else backend.precision
                )
                print(f"| {kind} | {label} | {checked} | {cells} | {hits / clips:.2%} ({clips}) |", flush=True)


def _int8_gate(onnx_path: str, ir_path: Path) -> str:
    """The int8 export gate (tolerance 0.1, top-1 rule) of the IR against the fp32 file on ONNX
    Runtime (which the export holds to PyTorch within 1e-3) on the validation clips."""
    reference, ir = load_backend(onnx_path, BackendOptions("onnxruntime")), load_backend(ir_path)
    videos = moving_squares(reference.meta.input_spec, 6)
    try:
        report = compare(ir.run, videos, reference(videos), "openvino", "int8", "onnxruntime-fp32")
    except ValidationError as err:
        return f"no (export gate: max abs diff {err.report.max_abs_diff:.3g} > 0.1)"
    return f"yes (export gate: max abs diff {report.max_abs_diff:.3g})"


if __name__ == "__main__":
    main()
