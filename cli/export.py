"""The export commands (torch): `sttm export` (ONNX, TensorRT, OpenVINO IR, a Triton repository,
a ladder), `sttm validate` (a runtime x precision held to PyTorch) and `sttm eval`."""

from __future__ import annotations

import argparse
import json

from cli.flags import Flags, at_least, sidecars_of


def _export(args: argparse.Namespace) -> None:
    from export.run import ExportSpec, run_export, run_ladder_export
    from runtime.ladder_file import parse_reductions

    reductions = None if args.reduction is None else parse_reductions(args.reduction)
    ladder = args.reduction is not None and "," in args.reduction  # a ladder: one model per value + ladder.json
    if args.eval_data is not None and not ladder:
        raise ValueError("--eval-data measures the rungs of a ladder: give --reduction a list (e.g. 0,0.25,0.5)")
    single = None if ladder or not reductions else reductions[0]
    spec = ExportSpec(
        model=args.model,
        out=args.output,
        merge=args.merge,
        reduction=single,
        fmt=args.format,
        precision=args.precision,
        max_batch=args.max_batch,
        name=args.name or "",
        quiet=args.quiet,
        triton_runtime=args.triton_runtime,
        instances=args.instances,
        decoders=args.triton_decoders,
        sidecars=sidecars_of(args),
        calib=args.calib,
        calib_clips=args.calib_clips,
    )
    if ladder:
        result = run_ladder_export(spec, reductions, eval_data=args.eval_data, eval_split=args.eval_split)
    else:
        result = run_export(spec)
    for path in result.files:
        print(path)


def _validate(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from export.onnx import export_onnx, metadata_for
    from export.run import model_name
    from export.validate import validate
    from models import load_model
    from runtime import BackendOptions, load_backend

    if args.backend == "tensorrt":  # it was refused as an ONNX file under a temporary path
        raise ValueError(
            "sttm validate holds ONNX Runtime, OpenVINO and PyTorch to the checkpoint; a TensorRT engine is "
            "held to ONNX Runtime as sttm export --format tensorrt builds it"
        )
    model = load_model(args.model, merge=args.merge, reduction=args.reduction, sidecars=sidecars_of(args))
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend == "torch":  # PyTorch runs its own program, not the ONNX file
            from ptruntime.artifact import save_program

            path = save_program(model, Path(tmp) / "model.pt2", metadata_for(model, model_name(args.model)))
        else:
            path = export_onnx(model, Path(tmp) / "model.onnx", metadata_for(model, model_name(args.model)))
        if args.precision == "int8" and args.backend in (None, "auto", "openvino"):  # OpenVINO's int8 is calibrated
            from export.ir import calibration_clips, write_ir

            data = None if args.calib in (None, "generated") else args.calib  # default: generated clips
            path = write_ir(path, Path(tmp) / "model.xml", calibration_clips(model.input_spec, args.calib_clips, data))
        # as the server would open it (bf16: the whole model, or its merge decisions in fp32), then held to PyTorch
        options = BackendOptions(args.backend or "auto", args.precision or "auto")
        backend = load_backend(path, options)
        name = f"{backend.provider} {backend.precision}"
        report = validate(model, backend.run, name, backend.precision)  # raises ValidationError (exit 2) on a FAIL
    print(report.table())
    return 0


def _print_eval(result: dict, data: str) -> None:
    print(f"{result['model']} on {data} [{result['split']}], merge {result['merge']} @ {result['reduction']}")
    skipped = f", {result['skipped']} skipped" if result["skipped"] else ""
    print(f"top-1 {result['top1']:.2%}  top-5 {result['top5']:.2%}  ({result['clips']} clips{skipped})")
    print(
        f"GFLOPs {result['gflops']:.3f}/clip  {result['clips_per_s']:.1f} clips/s end to end, "
        f"{result['model_clips_per_s']:.1f} clips/s model only"
    )
    for name, acc in result["per_class"].items():
        print(f"  {name:<28} {acc:.2%}")


def _eval(args: argparse.Namespace) -> None:
    from export.evaluate import evaluate
    from runtime.metadata import EXPORTED_SUFFIXES

    exported = None
    if args.model.endswith(EXPORTED_SUFFIXES):  # an exported model: as the server runs it
        from runtime import BackendOptions, load_backend

        exported = load_backend(args.model, BackendOptions(args.backend or "auto", args.precision or "auto"))
    elif args.backend or args.precision:
        raise ValueError("--backend/--precision choose how an exported model runs: export MODEL first")
    if exported is not None and (args.labels or args.config):
        raise ValueError("--labels/--config complete a checkpoint; an exported model carries its own")
    result = evaluate(
        args.model,
        args.data,
        args.split,
        args.merge,
        args.reduction,
        args.batch_size,
        args.workers,
        args.on_error,
        exported,
        sidecars=None if exported else sidecars_of(args),
    )
    if exported is not None:
        result = {**result, "backend": exported.provider, "precision": exported.precision, "reason": exported.reason}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_eval(result, args.data)


def _export_flags(exp: argparse.ArgumentParser) -> None:
    """What is exported, and where to."""
    exp.add_argument(
        "--merge",
        choices=["none", "tome", "sttm"],
        default=None,
        help="token merging (default: the checkpoint's; a ladder: sttm)",
    )
    exp.add_argument(
        "--reduction",
        default=None,
        metavar="R[,R...]",
        help="fraction of GFLOPs to save, e.g. 0.38; several values (0,0.25,0.38,0.5) export a "
        "ladder: one model per rung in the directory -o, plus ladder.json",
    )
    exp.add_argument(
        "--eval-data",
        default=None,
        metavar="DATA",
        help="a ladder: measure each rung's top-1 and clips/s on this data set (sttm eval's DATA)",
    )
    exp.add_argument("--eval-split", default="test", help="the split --eval-data measures")
    exp.add_argument(
        "-o",
        "--output",
        required=True,
        help="file (.onnx / .plan / .xml / .pt2) or directory (Triton repository, ladder)",
    )
    exp.add_argument(
        "--format",
        choices=["onnx", "tensorrt", "triton", "openvino", "torch", "aoti"],
        default=None,
        help="default: what -o's suffix names (.xml openvino, .plan/.engine tensorrt, .pt2 torch), else onnx; "
        "torch: a torch.export program (.pt2) for sttm serve --backend torch; aoti: an AOTInductor "
        "package (.pt2) compiled for this machine's CUDA GPU, else its CPU (served on that device kind only)",
    )
    exp.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16", "int8"],
        default="fp32",
        help="fp16: GPU / TensorRT / --format aoti on a GPU; bf16: --format aoti; int8: dynamic quantisation "
        "for ONNX Runtime on CPUs, or with "
        "--format openvino static quantisation (NNCF, needs --calib)",
    )
    exp.add_argument("--max-batch", type=at_least(1), default=8, help="largest batch of the engine / Triton config")
    exp.add_argument("--name", default=None, help="model name: letters, digits, '_' and '-' (default: from MODEL)")
    exp.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _triton_flags(exp: argparse.ArgumentParser) -> None:
    """A Triton repository's options."""
    exp.add_argument(
        "--triton-runtime",
        choices=["python", "platform"],
        default="python",
        help="Triton repository: who runs the ONNX model; python: our CPU backend in a Python-backend "
        "model (Triton builds without ONNX Runtime, e.g. `sttm triton`); platform: Triton's "
        "onnxruntime_onnx (and tensorrt_plan when an engine was built)",
    )
    exp.add_argument("--instances", type=at_least(1), default=1, help="Triton repository: instances of the model")
    exp.add_argument(
        "--triton-decoders",
        type=at_least(1),
        default=2,
        help="Triton repository: instances of the preprocess model (clips decoded at once)",
    )


def add_export(sub, f: Flags) -> None:
    exp = sub.add_parser(
        "export",
        parents=[f.checkpoint, f.calib],
        help="export to ONNX (merging inside the graph), TensorRT, OpenVINO IR, a Triton "
        "repository, or a ladder of merge ratios",
    )
    _export_flags(exp)
    _triton_flags(exp)
    exp.set_defaults(run=_export)


def add_validate(sub, f: Flags) -> None:
    what = "hold a runtime x precision to PyTorch: the export's table; exit 2 on a FAIL"
    val = sub.add_parser("validate", parents=[f.checkpoint, f.merge, f.runtime, f.calib], help=what)
    val.set_defaults(run=_validate)


def add_eval(sub, f: Flags) -> None:
    ev = sub.add_parser(
        "eval",
        parents=[f.checkpoint, f.merge, f.runtime, f.json],
        help="accuracy, GFLOPs and clips/s of a checkpoint or .onnx on a split",
    )
    ev.add_argument("data", help="data set directory with <split>.csv (or <split>/<class>/), or a path,label CSV")
    ev.add_argument("--split", default="test")
    ev.add_argument("--batch-size", type=at_least(1), default=8)
    ev.add_argument("--workers", type=at_least(0), default=2)
    ev.add_argument("--on-error", choices=["skip", "fail"], default="skip")
    ev.set_defaults(run=_eval)
