"""The bundled demo's top-1 on clips of seeds it never saw, per runtime x precision:
does a low run-time precision keep the accuracy of fp32? (The issue's bar: within 0.5 points.)

    python -m benchmarks.precision [--model models/demo/demo.onnx] [--seeds 12345 777]

Each combination is opened as the server opens it but without the load-time check
(`check=False`), so a combination the check refuses is measured too; the table says which
the check (and `sttm validate`) accept.
"""

from __future__ import annotations

import argparse

from benchmarks.experiments import UNSEEN, unseen_data
from export.evaluate import evaluate
from service.backends import BackendOptions, ModelLoadError, load_backend
from service.settings import DEMO_ONNX

COMBINATIONS = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO_ONNX))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(UNSEEN), choices=list(UNSEEN))
    args = parser.parse_args(argv)
    print("| runtime | precision | passes the load-time check | " + " | ".join(f"top-1 seed {s}" for s in args.seeds)
          + " | top-1 all |")  # fmt: skip
    print("|---|---|---|" + "---|" * (len(args.seeds) + 1))
    for kind, precision in COMBINATIONS:
        try:
            load_backend(args.model, BackendOptions(kind, precision))
            checked = "yes"
        except ModelLoadError as err:
            checked = f"no ({str(err).split(': ', 1)[-1].split(':')[0]})"
        backend = load_backend(args.model, BackendOptions(kind, precision, check=False))
        results = [evaluate(args.model, unseen_data(seed), "all", workers=1, exported=backend) for seed in args.seeds]
        hits, clips = sum(r["top1"] * r["clips"] for r in results), sum(r["clips"] for r in results)
        cells = " | ".join(f"{r['top1']:.2%} ({r['clips']})" for r in results)
        print(f"| {kind} | {backend.precision} | {checked} | {cells} | {hits / clips:.2%} ({clips}) |", flush=True)


if __name__ == "__main__":
    main()
