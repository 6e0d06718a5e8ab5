"""Where an exported file's time goes in ONNX Runtime on the CPU, by ORT's own profiler: the
graph the backend serves (`runtime.backends.ort`: attention fused where its load-time check
passes, the plain graph where it refuses; `--unfused`: always the plain graph), batch 1, one
generated clip, kernel time and multiply-adds per op type and per fused attention
(docs/benchmarks/speed.md).

    python -m benchmarks.ort_profile FILE.onnx [--runs 4] [--threads 2] [--top 12] [--unfused]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

from runtime.agreement import moving_squares
from runtime.backends import ModelLoadError, ort
from runtime.metadata import ModelMetadata

MATMULS = ("DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMul", "FusedMatMul", "Gemm")


def _shapes(args: dict, key: str) -> list[list[int]]:
    return [next(iter(t.values())) for t in args.get(key, [])]


def macs(event: dict) -> int:
    """Multiply-adds of one profiled kernel, from the shapes ORT records: a matmul
    `prod(out) * K`; fused attention `B * Nq * Nk * (C_qk + C_v)` (every head's q.k and p.v);
    0 for anything else."""
    args = event["args"]
    op, inputs, outputs = args["op_name"], _shapes(args, "input_type_shape"), _shapes(args, "output_type_shape")
    if op in MATMULS and inputs and outputs:
        size = 1
        for dim in outputs[0]:
            size *= dim
        return size * inputs[0][-1]
    if op == "MultiHeadAttention" and len(inputs) >= 3:
        (batch, queries, c_qk), (_, keys, _), (*_, c_v) = inputs[:3]
        return batch * queries * keys * (c_qk + c_v)
    return 0


def kernel_times(events: list[dict], runs: int) -> tuple[dict[str, dict], dict[str, float]]:
    """ORT profile events -> ({op type: {"ms", "gmacs"} per run}, {fused attention node: ms per
    run}), each largest first."""
    by_op: collections.Counter = collections.Counter()
    work: collections.Counter = collections.Counter()
    by_attention: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        op = event["args"]["op_name"]
        by_op[op] += event["dur"]
        work[op] += macs(event)
        if op == "MultiHeadAttention":
            by_attention[event["name"].removesuffix("_kernel_time")] += event["dur"]
    ms = lambda us: round(us / runs / 1000, 2)  # noqa: E731 - profile durations are in us
    ops = {k: {"ms": ms(v), "gmacs": round(work[k] / runs / 1e9, 4)} for k, v in by_op.most_common()}
    return ops, {k: ms(v) for k, v in by_attention.most_common()}


def profile_file(path: Path, runs: int, threads: int, fuse: bool = True) -> dict:
    """`runs` profiled calls (after one warm-up) of `path` on one clip, in the session the
    backend serves it with (`runtime.backends.ort.fused_or_plain`: attention fused where its
    load-time check passes) unless `fuse` is off (the plain graph)."""
    measured = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        plain = ort.open_session(path, ["CPUExecutionProvider"], threads, profile=os.path.join(tmp, "plain"))
        meta = ModelMetadata.from_props(plain.get_modelmeta().custom_metadata_map)
        session, served = (plain, "")
        if fuse:
            session, served = ort.fused_or_plain(path, plain, meta, threads, os.path.join(tmp, "fused"))
        feed = {meta.input_name: moving_squares(meta.input_spec, 1)}
        session.run([meta.output_name], feed)  # warm-up
        started = time.perf_counter()
        for _ in range(runs):
            session.run([meta.output_name], feed)
        wall = (time.perf_counter() - started) / runs
        events = json.loads(Path(session.end_profiling()).read_text())
        if session is not plain:
            plain.end_profiling()
    by_op, by_attention = kernel_times(last_runs(events, runs), runs)
    total = sum(row["ms"] for row in by_op.values()) or 1.0
    return {
        "file": path.name,
        "precision": meta.precision,
        "served": served or "attention not fused",
        "threads": threads,
        "measured": measured,
        "ms_per_call": round(wall * 1000, 1),
        "kernel_ms": round(total, 1),
        "by_op": {k: row | {"share": round(row["ms"] / total, 3)} for k, row in by_op.items()},
        "by_attention": by_attention,
    }


def last_runs(events: list[dict], runs: int) -> list[dict]:
    """The events of the last `runs` calls: the load-time check's and the warm-up's dropped."""
    calls = [e for e in events if e.get("name") == "model_run"][-runs:]
    return [e for e in events if any(c["ts"] <= e["ts"] <= c["ts"] + c["dur"] for c in calls)]


def table(result: dict, top: int) -> str:
    lines = [
        f"{result['file']} ({result['precision']}, {result['served']}), "
        f"{result['measured']}, {result['threads']} threads: "
        f"{result['ms_per_call']} ms per call, {result['kernel_ms']} ms in kernels",
        "| op | ms per call | share | G multiply-adds | G multiply-adds/s |",
        "|---|---|---|---|---|",
    ]
    for op, row in list(result["by_op"].items())[:top]:
        rate = f"{row['gmacs'] / row['ms'] * 1000:.0f}" if row["gmacs"] and row["ms"] else "-"
        lines.append(f"| `{op}` | {row['ms']} | {row['share']:.1%} | {row['gmacs'] or '-'} | {rate} |")
    if result["by_attention"]:
        ordered = sorted(result["by_attention"].items(), key=lambda kv: int(kv[0].rsplit("attention", 1)[-1]))
        lines.append("\nfused attention per block, ms: " + ", ".join(f"{ms}" for _, ms in ordered))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--unfused", action="store_true", help="the plain graph, attention not fused")
    parser.add_argument("--json", action="store_true", help="the result as one JSON object")
    args = parser.parse_args(argv)
    if not args.file.is_file() or args.file.suffix != ".onnx":
        parser.error(f"{args.file}: not an .onnx file")
    try:
        result = profile_file(args.file, args.runs, args.threads, fuse=not args.unfused)
    except (ValueError, ModelLoadError) as err:  # not one of our exports (no metadata), or not a model
        parser.error(f"{args.file}: {err}")
    print(json.dumps(result) if args.json else table(result, args.top))


if __name__ == "__main__":
    main()
