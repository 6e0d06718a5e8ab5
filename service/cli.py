"""The `sttm` command. Subcommands import their (possibly torch-heavy) modules lazily,
so serving never pulls in torch."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _sidecars(args: argparse.Namespace):
    """`--labels` / `--config` as the loader takes them."""
    from models.checkpoint import Sidecars

    return Sidecars(labels=args.labels, config=args.config)


def _info(args: argparse.Namespace) -> None:
    from models import load_model
    from models.info import describe, render

    model = load_model(args.model, merge=args.merge, reduction=args.reduction, sidecars=_sidecars(args))
    info = describe(model)
    print(json.dumps(info, indent=2) if args.json else render(info))


def _export(args: argparse.Namespace) -> None:
    from export.pipeline import run_export, run_ladder_export
    from runtime.ladder_file import parse_reductions

    common = dict(merge=args.merge, fmt=args.format, precision=args.precision, max_batch=args.max_batch,
                  name=args.name, quiet=args.quiet, triton_runtime=args.triton_runtime, instances=args.instances,
                  decoders=args.triton_decoders, sidecars=_sidecars(args), calib=args.calib,
                  calib_clips=args.calib_clips)  # fmt: skip
    if args.reduction is not None and "," in args.reduction:  # a ladder: one model per value + ladder.json
        result = run_ladder_export(args.model, args.output, parse_reductions(args.reduction),
                                   eval_data=args.eval_data, eval_split=args.eval_split, **common)  # fmt: skip
    elif args.eval_data is not None:
        raise ValueError("--eval-data measures the rungs of a ladder: give --reduction a list (e.g. 0,0.25,0.5)")
    else:
        reduction = None if args.reduction is None else parse_reductions(args.reduction)[0]
        result = run_export(args.model, args.output, reduction=reduction, **common)
    for path in result.files:
        print(path)


def _validate(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from export.onnx import export_onnx, metadata_for
    from export.pipeline import model_name
    from export.validate import validate
    from models import load_model
    from runtime.backends import BackendOptions, load_backend

    model = load_model(args.model, merge=args.merge, reduction=args.reduction, sidecars=_sidecars(args))
    with tempfile.TemporaryDirectory() as tmp:
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


def _synth(args: argparse.Namespace) -> None:
    from models.synth import SynthConfig, generate

    sizes = generate(args.out, args.clips_per_class, SynthConfig(args.size, args.frames, args.seed), args.workers)
    print(json.dumps({"out": str(args.out), **sizes}))


def _train(args: argparse.Namespace) -> None:
    from models.train import TrainConfig, train

    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, workers=args.workers, seed=args.seed,
        on_error=args.on_error, max_steps=args.max_steps,
        augment=tuple(s.strip() for s in args.augment.split(",")) if args.augment else None,
    )  # fmt: skip
    summary = train(args.data, args.model, args.output, args.merge, args.reduction, cfg, resume=args.resume,
                    sidecars=_sidecars(args))  # fmt: skip
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}))


def _eval(args: argparse.Namespace) -> None:
    from export.evaluate import evaluate
    from runtime.metadata import EXPORTED_SUFFIXES

    exported = None
    if args.model.endswith(EXPORTED_SUFFIXES):  # an exported model: as the server runs it
        from runtime.backends import BackendOptions, load_backend

        exported = load_backend(args.model, BackendOptions(args.backend or "auto", args.precision or "auto"))
    elif args.backend or args.precision:
        raise ValueError("--backend/--precision choose how an exported model runs: export MODEL first")
    if exported is not None and (args.labels or args.config):
        raise ValueError("--labels/--config complete a checkpoint; an exported model carries its own")
    result = evaluate(args.model, args.data, args.split, args.merge, args.reduction, args.batch_size, args.workers,
                      args.on_error, exported, sidecars=None if exported else _sidecars(args))  # fmt: skip
    if exported is not None:
        result = {**result, "backend": exported.provider, "precision": exported.precision}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['model']} on {args.data} [{args.split}], merge {result['merge']} @ {result['reduction']}")
    print(f"top-1 {result['top1']:.2%}  top-5 {result['top5']:.2%}  ({result['clips']} clips)")
    print(f"GFLOPs {result['gflops']:.3f}/clip  {result['clips_per_s']:.1f} clips/s end to end, "
          f"{result['model_clips_per_s']:.1f} clips/s model only")  # fmt: skip
    for name, acc in result["per_class"].items():
        print(f"  {name:<28} {acc:.2%}")


def _timeline(args: argparse.Namespace, runtime: dict) -> int:
    from service.classify import TimelineOptions
    from service.predict import timeline

    if len(args.videos) != 1:
        raise ValueError("--timeline takes one video")
    opts = TimelineOptions(args.top_k, args.window_s, args.stride_s, args.min_score)
    if args.window_s <= 0 or args.stride_s < 0.01:
        raise ValueError("--window-s must be > 0 and --stride-s at least 0.01")
    text = timeline(args.model, args.videos[0], opts, args.format, **runtime)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _explain(args: argparse.Namespace) -> None:
    from models import load_model
    from models.explain import explain

    model = load_model(args.model, merge=args.merge, reduction=args.reduction, sidecars=_sidecars(args))
    print(explain(model, args.video, args.output))


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from service.settings import Settings

    # Flags become STTM_* variables so that every worker process builds the same Settings.
    for name in ("model", "host", "port", "backend", "precision"):
        if getattr(args, name) is not None:
            os.environ[f"STTM_{name.upper()}"] = str(getattr(args, name))
    settings = Settings()
    if not settings.model.exists() and settings.require_model:
        raise OSError(f"model file {settings.model} does not exist")
    if settings.model.is_dir() and settings.require_model:
        from runtime.ladder_file import read_ladder

        read_ladder(settings.model)  # a ladder without ladder.json or with a missing rung: one line, exit 2
    uvicorn.run(
        "service.app:create_app", factory=True, host=settings.host, port=settings.port, workers=args.workers,
        log_level=args.log_level, timeout_graceful_shutdown=30,
    )  # fmt: skip


def _triton(args: argparse.Namespace) -> None:
    from tritonserve.launch import Ports, run

    run(args.repo, Ports(args.http_port, args.grpc_port, args.metrics_port), args.host, args.tritonserver_arg)


def _predict(args: argparse.Namespace) -> int:
    from service.predict import predict

    runtime = {k: v for k, v in (("backend", args.backend), ("precision", args.precision)) if v is not None}
    if args.timeline:
        return _timeline(args, runtime)
    results = predict(args.model, args.videos, args.top_k, **runtime)
    if args.json:
        print(json.dumps(results, indent=2))
    for result in [] if args.json else results:
        print(result["path"])
        if "error" in result:
            print(f"  error: {result['error']['message']}")
            continue
        for p in result["predictions"]:
            print(f"  {p['score']:6.1%}  {p['label']}")
        lat = result["latency_ms"]
        print(f"  decode {lat['decode']:.0f} ms, preprocess {lat['preprocess']:.0f} ms, "
              f"inference {lat['inference']:.0f} ms, total {lat['total']:.0f} ms")  # fmt: skip
    return 2 if any("error" in r for r in results) else 0


def _bench_serve(args: argparse.Namespace) -> int:
    import asyncio

    from service.client.loadtest import bench, parse_levels, render

    report = asyncio.run(bench(
        args.url, args.clip, parse_levels(args.concurrency), args.requests, endpoint=args.endpoint,
        api_key=args.api_key, pid=args.pid, timeout_s=args.timeout, protocol=args.protocol,
    ))  # fmt: skip
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 1 if any(level["errors"] for level in report["levels"]) else 0


def _flags() -> dict[str, argparse.ArgumentParser]:
    """Flags several commands share, defined once (argparse parents)."""
    checkpoint = argparse.ArgumentParser(add_help=False)
    checkpoint.add_argument("model", help="checkpoint path or built-in name (videomae-s/b/l, timesformer-b, "
                                          "vit-tiny, ..., or 'demo')")  # fmt: skip
    sidecars = argparse.ArgumentParser(add_help=False)
    sidecars.add_argument("--labels", default=None, metavar="FILE",
                          help="class names, one a line (for checkpoints that do not carry them)")  # fmt: skip
    sidecars.add_argument("--config", default=None, metavar="FILE",
                          help="the MMAction2 config (.py) of an MMAction2 checkpoint, read as data: clip "
                               "size, sampling, normalisation, heads")  # fmt: skip
    checkpoint = argparse.ArgumentParser(add_help=False, parents=[checkpoint, sidecars])
    merge = argparse.ArgumentParser(add_help=False)
    merge.add_argument("--merge", choices=["none", "tome", "sttm"], default=None, help="token merging (default: "
                                                                                       "the checkpoint's)")  # fmt: skip
    merge.add_argument("--reduction", type=float, default=None, help="fraction of GFLOPs to save, e.g. 0.38")
    exported = argparse.ArgumentParser(add_help=False)
    exported.add_argument("model", help="exported .onnx (or TensorRT .plan), or 'demo'")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    runtime = argparse.ArgumentParser(add_help=False)
    runtime.add_argument("--backend", choices=["auto", "onnxruntime", "openvino", "tensorrt"], default=None,
                         help="runtime of an exported model (STTM_BACKEND; auto: OpenVINO on the CPU when installed, "
                              "else ONNX Runtime; engines: TensorRT)")  # fmt: skip
    runtime.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"], default=None,
                         help="what the runtime computes in (STTM_PRECISION; auto: bf16 on CPUs with bf16 units "
                              "where it passes the check, else fp32)")  # fmt: skip
    calib = argparse.ArgumentParser(add_help=False)
    calib.add_argument("--calib", default=None, metavar="DATA|generated",
                       help="int8 on OpenVINO: calibrate on clips of a data set directory (its train split), "
                            "or on generated clips")  # fmt: skip
    calib.add_argument("--calib-clips", type=int, default=64, help="calibration clips (default 64)")
    return {"checkpoint": checkpoint, "sidecars": sidecars, "merge": merge, "exported": exported, "json": as_json,
            "runtime": runtime, "calib": calib}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    f = _flags()
    parser = argparse.ArgumentParser(prog="sttm", description="Video action recognition with token merging.")
    sub = parser.add_subparsers(dest="command", required=True)

    srv = sub.add_parser("serve", parents=[f["runtime"]],
                         help="serve a model over HTTP (settings also from STTM_* variables)")  # fmt: skip
    srv.add_argument("--model", default=None, help="exported .onnx or a ladder directory (default: the bundled "
                                                   "demo model)")  # fmt: skip
    srv.add_argument("--host", default=None)
    srv.add_argument("--port", type=int, default=None)
    srv.add_argument("--workers", type=int, default=1, help="processes; each holds its own copy of the model")
    srv.add_argument("--log-level", default="info")
    srv.set_defaults(run=_serve)

    tri = sub.add_parser("triton", help="serve a Triton repository (sttm export --format triton) with the Triton "
                                        "server of the nvidia-pytriton package, in the foreground")  # fmt: skip
    tri.add_argument("repo", help="the model repository directory")
    tri.add_argument("--http-port", type=int, default=8100)
    tri.add_argument("--grpc-port", type=int, default=8101)
    tri.add_argument("--metrics-port", type=int, default=8102)
    tri.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    tri.add_argument("--tritonserver-arg", action="append", default=[], metavar="FLAG",
                     help="another tritonserver flag, repeatable, e.g. --tritonserver-arg=--log-verbose=1")  # fmt: skip
    tri.set_defaults(run=_triton)

    pre = sub.add_parser("predict", parents=[f["exported"], f["runtime"], f["json"]],
                         help="classify video files locally, without a server")  # fmt: skip
    pre.add_argument("videos", nargs="+")
    pre.add_argument("--top-k", type=int, default=5)
    pre.add_argument("--timeline", action="store_true",
                     help="one video window by window, with its action segments (as POST /v1/timeline)")  # fmt: skip
    pre.add_argument("--window-s", type=float, default=2.0, help="--timeline: window length (s)")
    pre.add_argument("--stride-s", type=float, default=1.0, help="--timeline: window stride (s)")
    pre.add_argument("--min-score", type=float, default=0.0, help="--timeline: under it a window is 'no action'")
    pre.add_argument("--format", choices=["json", "vtt", "csv"], default="json", help="--timeline: output")
    pre.set_defaults(run=_predict)

    info = sub.add_parser("info", parents=[f["checkpoint"], f["merge"], f["json"]],
                          help="describe a model: architecture, GFLOPs, tokens per layer")  # fmt: skip
    info.set_defaults(run=_info)

    exp = sub.add_parser("export", parents=[f["checkpoint"], f["calib"]],
                         help="export to ONNX (merging inside the graph), TensorRT, OpenVINO IR, a Triton "
                              "repository, or a ladder of merge ratios")  # fmt: skip
    exp.add_argument("--merge", choices=["none", "tome", "sttm"], default=None,
                     help="token merging (default: the checkpoint's; a ladder: sttm)")  # fmt: skip
    exp.add_argument("--reduction", default=None, metavar="R[,R...]",
                     help="fraction of GFLOPs to save, e.g. 0.38; several values (0,0.25,0.38,0.5) export a "
                          "ladder: one model per rung in the directory -o, plus ladder.json")  # fmt: skip
    exp.add_argument("--eval-data", default=None, metavar="DATA",
                     help="a ladder: measure each rung's top-1 and clips/s on this data set "
                          "(sttm eval's DATA)")  # fmt: skip
    exp.add_argument("--eval-split", default="test", help="the split --eval-data measures")
    exp.add_argument("-o", "--output", required=True,
                     help="file (.onnx / .plan / .xml) or directory (Triton repository, ladder)")  # fmt: skip
    exp.add_argument("--format", choices=["onnx", "tensorrt", "triton", "openvino"], default="onnx")
    exp.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                     help="fp16: GPU / TensorRT; int8: dynamic quantisation for ONNX Runtime on CPUs, or with "
                          "--format openvino static quantisation (NNCF, needs --calib)")  # fmt: skip
    exp.add_argument("--max-batch", type=int, default=8, help="largest batch of the engine / Triton config")
    exp.add_argument("--name", default=None, help="model name (default: from MODEL)")
    exp.add_argument("--quiet", action="store_true", help="no progress on stderr")
    exp.add_argument("--triton-runtime", choices=["python", "platform"], default="python",
                     help="Triton repository: who runs the ONNX model; python: our CPU backend in a Python-backend "
                          "model (Triton builds without ONNX Runtime, e.g. `sttm triton`); platform: Triton's "
                          "onnxruntime_onnx (and tensorrt_plan when an engine was built)")  # fmt: skip
    exp.add_argument("--instances", type=int, default=1, help="Triton repository: instances of the model")
    exp.add_argument("--triton-decoders", type=int, default=2,
                     help="Triton repository: instances of the preprocess model (clips decoded at once)")  # fmt: skip
    exp.set_defaults(run=_export)

    what = "hold a runtime x precision to PyTorch: the export's table; exit 2 on a FAIL"
    val = sub.add_parser("validate", parents=[f["checkpoint"], f["merge"], f["runtime"], f["calib"]], help=what)
    val.set_defaults(run=_validate)

    syn = sub.add_parser("synth", help="generate the motion data set (H.264 clips + CSV splits)")
    syn.add_argument("out")
    syn.add_argument("--clips-per-class", type=int, required=True)
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--size", type=int, default=128)
    syn.add_argument("--frames", type=int, default=32)
    syn.add_argument("--workers", type=int, default=2)
    syn.set_defaults(run=_synth)

    tr = sub.add_parser("train", parents=[f["merge"], f["sidecars"]],
                        help="train or fine-tune on a path,label CSV or class-per-folder tree")  # fmt: skip
    tr.add_argument("data", help="directory with train.csv/val.csv (or train/<class>/, val/<class>/)")
    tr.add_argument("--model", required=True, help="built-in config or checkpoint to start from")
    tr.add_argument("-o", "--output", required=True, help="run directory: best/, last/, summary.json")
    tr.add_argument("--epochs", type=int, default=10)
    tr.add_argument("--batch-size", type=int, default=16)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--workers", type=int, default=2)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--resume", action="store_true", help="continue from OUTPUT/last")
    tr.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    tr.add_argument("--augment", default=None, metavar="LIST",
                    help="label-aware symmetries, e.g. hflip,vflip,reverse (default: hflip where the data set "
                         "allows it); each must be declared in the data set's dataset.json")  # fmt: skip
    tr.add_argument("--on-error", choices=["skip", "fail"], default="skip", help="a corrupt video in the list")
    tr.set_defaults(run=_train)

    ev = sub.add_parser("eval", parents=[f["checkpoint"], f["merge"], f["runtime"], f["json"]],
                        help="accuracy, GFLOPs and clips/s of a checkpoint or .onnx on a split")  # fmt: skip
    ev.add_argument("data")
    ev.add_argument("--split", default="test")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--workers", type=int, default=2)
    ev.add_argument("--on-error", choices=["skip", "fail"], default="skip")
    ev.set_defaults(run=_eval)

    ex = sub.add_parser("explain", parents=[f["checkpoint"], f["merge"]],
                        help="draw which patches the merger fused, over the clip's frames")  # fmt: skip
    ex.add_argument("video")
    ex.add_argument("-o", "--output", required=True, help="PNG path")
    ex.set_defaults(run=_explain)

    bn = sub.add_parser("bench", help="benchmark a running server")
    bn_sub = bn.add_subparsers(dest="target", required=True)
    what = "load-test a running server: perf_analyzer-style table per concurrency level"
    bs = bn_sub.add_parser("serve", parents=[f["json"]], help=what)
    bs.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    bs.add_argument("--clip", required=True, help="video file sent with every request")
    bs.add_argument("--concurrency", default="1,4,16", help="requests in flight, one level after another")
    bs.add_argument("--requests", type=int, default=100, help="requests per concurrency level")
    bs.add_argument("--protocol", choices=["rest", "v2"], default="rest",
                    help="rest: multipart upload (sttm serve); v2: KServe v2 infer with the clip as BYTES "
                         "(a Triton ensemble from sttm export --format triton)")  # fmt: skip
    bs.add_argument("--endpoint", default=None,
                    help="default /v1/classify (rest), /v2/models/sttm_video/infer (v2)")  # fmt: skip
    bs.add_argument("--api-key", default=None, help="bearer token (the server's STTM_API_KEY)")
    soak = "soak: the server's process id; report its RSS at request 100 and at the end, and leftover temp files"
    bs.add_argument("--pid", type=int, default=None, help=soak)
    bs.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    bs.set_defaults(run=_bench_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args) or 0
    except ModuleNotFoundError as err:  # a serving-only install (no torch) running a torch command
        print(f"sttm {args.command}: error: needs the '{err.name}' package, which this environment lacks "
              "(pip install torch==2.13.0, then pip install -e '.[export]')", file=sys.stderr)  # fmt: skip
        return 2
    except (ValueError, OSError, RuntimeError) as err:  # CheckpointError / ExportError / ValidationError
        first, *rest = str(err).splitlines() or [type(err).__name__]
        print(f"sttm {args.command}: error: {first}", file=sys.stderr)
        if rest:  # a validation report: the table follows the one-line error
            print("\n".join(rest), file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
