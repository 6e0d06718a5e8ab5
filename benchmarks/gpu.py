"""The one prepared device script (issue 25): what a GPU machine measures in one call, <= 8 minutes.

    python -m benchmarks.gpu --wheels wheels/ --out "$OUT"     # on the GPU machine
    python -m benchmarks.gpu --dry --out /tmp/gpu-dry          # anywhere: tiny sizes, on the CPU (CI runs it)
    python -m benchmarks.gpu --download-wheels wheels/ --python-version 3.12   # here, before: the wheels

1. **Model only**, VideoMAE-B 16x224 (random weights, 400 classes), none / ToMe 0.38 / STTM 0.38
   (and STTM with the proportional-attention bias folded into q/k: `models.layers.fold_biases`),
   batch 1, 8, 32, fp16 on the GPU: eager, CUDA graphs (`ptruntime.graphs`, as the server runs
   them) and `torch.compile` (last: the most expensive to build; skipped when the time is short).
2. **Where the time goes**: `torch.profiler` over eager fp16 forwards at the largest batch,
   none and STTM 0.38: the top ops by self CUDA time and the merge steps' share
   (`benchmarks.cpu_profile.profile_model`, which made the CPU profile in docs/gpu.md).
3. **Served end to end**: `sttm serve --backend torch` (decoding on the machine's CPU cores) on
   the unmerged and the STTM checkpoint, `sttm bench serve` at concurrency 1 / 16 / 64 with a
   real H.264 clip: clips/s and p50 / p99.
4. **AOTInductor**: `sttm export --format aoti --precision fp16` (the package compiled for this
   GPU, validated, its compile time recorded) of STTM then the unmerged model, model-only rows
   (the package in CUDA graphs, as the server runs it) and the package served end to end.

The machine has torch (CUDA) but not the serving wheels and no network: `--wheels DIR` installs
them from a folder prepared here with `--download-wheels` (the `serve` extra: FastAPI, uvicorn,
pydantic, python-multipart, PyAV, ...: ~40 MB; the run carries at most 64 MiB). Results:
`OUT/gpu.json` and `OUT/gpu.md` (written after every stage, so a timeout keeps what was done),
and the tables on stdout. Stages that would overrun `--budget-s` are reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what `sttm serve` needs beyond torch + numpy: the `serve` extra of pyproject.toml (read from it,
# so the list cannot drift), plus safetensors (checkpoints) and setuptools (the editable install)
EXTRA_WHEELS = ("safetensors", "setuptools")


def serving_wheels(pyproject: Path = ROOT / "pyproject.toml") -> tuple[str, ...]:
    """The distribution names of the `serve` extra, without their version bounds, and `EXTRA_WHEELS`."""
    import re

    import tomllib

    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["serve"]
    return tuple(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0) for requirement in extra) + EXTRA_WHEELS


VARIANTS = ("none", "tome", "sttm", "sttm-fold")  # sttm-fold: the bias as a q/k channel
STAGES = ("model", "profile", "serve", "aoti", "compile")  # in the order they run


@dataclass(frozen=True)
class Plan:
    preset: str
    batches: tuple[int, ...]
    variants: tuple[str, ...]
    modes: tuple[str, ...]  # eager, graphs, compile, aoti
    concurrency: tuple[int, ...]
    timing_s: float  # per model-only row
    serve_model: str  # what the served checkpoints are built from
    served: tuple[str, ...]  # merge methods served end to end
    dry: bool
    aoti: tuple[str, ...] = ()  # merge methods compiled into AOTInductor packages (in this order)
    stages: tuple[str, ...] = STAGES


def make_plan(dry: bool) -> Plan:
    if dry:  # the CPU: tiny sizes, eager and a one-variant AOTInductor package, the demo served
        # (the package: a one-block unmerged model, AOTInductor's code generation being the cost)
        return Plan("vit-tiny", (1, 2), VARIANTS, ("eager",), (1, 2), 0.3, "demo", ("sttm",), True, ("none",))
    modes = ("eager", "graphs", "compile")
    served = ("none", "sttm")  # and the AOTInductor packages: STTM first (the one the issue is about)
    return Plan("videomae-b", (1, 8, 32), VARIANTS, modes, (1, 16, 64), 2.0, "videomae-b", served, False, served[::-1])


def download_wheels(dest: Path, python_version: str) -> None:
    """Here (with network): the serving wheels for the GPU machine's Python, manylinux x86-64."""
    args = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest)]
    args += [
        "--python-version",
        python_version,
        "--platform",
        "manylinux_2_28_x86_64",
        "--platform",
        "manylinux2014_x86_64",
    ]
    subprocess.run(args + list(serving_wheels()), check=True)
    size = sum(p.stat().st_size for p in dest.iterdir()) / 2**20
    print(f"{dest}: {len(list(dest.iterdir()))} wheels, {size:.1f} MiB")


def install_wheels(folder: Path) -> str:
    """There (no network): the serving wheels, then this project (editable: its entry points)."""
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(folder)]
    subprocess.run(pip + list(serving_wheels()), check=True, timeout=240)
    subprocess.run(pip + ["--no-deps", "--no-build-isolation", "-e", str(ROOT)], check=True, timeout=120)
    return "installed from " + str(folder)


def _build(preset: str, variant: str, classes: int | None = None):
    from models import PRESETS, MergeConfig, build_model
    from models.layers import fold_biases

    method = variant.split("-")[0]
    cfg = PRESETS[preset] if classes is None else PRESETS[preset].replace(num_classes=classes)
    model = build_model(cfg, MergeConfig(method, 0.38 if method != "none" else 0.0)).eval()
    return fold_biases(model, variant.endswith("fold"))


def _clips_per_s(fn: Callable, batch: int, seconds: float, sync: Callable[[], None]) -> float:
    """Clips per second of `fn()` (one batch), after warm-up, over about `seconds`."""
    for _ in range(3):
        fn()
    sync()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 3:
        fn()
        runs += 1
    sync()
    return batch * runs / (time.perf_counter() - started)


def _runner(model, mode: str, video, batches: tuple[int, ...]):
    """A no-argument callable running `model` on `video` in `mode`."""
    import torch

    if mode == "compile":
        compiled = torch.compile(model)
        return lambda: compiled(video)
    if mode == "graphs":
        from ptruntime.graphs import BatchGraphs

        graphs = BatchGraphs(lambda x: (model(x),), tuple(video.shape[1:]), video.dtype, (video.shape[0],))
        return lambda: graphs(video)
    return lambda: model(video)


def model_only(plan: Plan, deadline: float, rows: list[dict], save: Callable[[], None]) -> None:
    """Rows of clips/s per variant x batch x mode, in mode order (compile last)."""
    import torch

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg_size = None
    for mode in plan.modes:
        for variant in plan.variants:
            model = _build(plan.preset, variant, 400 if not plan.dry else None).to(device, dtype)
            cfg_size = (model.config.num_frames, model.config.image_size)
            for batch in plan.batches:
                row = {"stage": "model", "mode": mode, "variant": variant, "batch": batch, "dtype": str(dtype)}
                left = deadline - time.monotonic()
                if mode == "graphs" and not cuda or left < (90 if mode == "compile" else 15):
                    rows.append({**row, "skipped": "no CUDA" if left >= 15 else "time"})
                    continue
                video = torch.randn(batch, 3, cfg_size[0], cfg_size[1], cfg_size[1], device=device, dtype=dtype)
                try:
                    with torch.inference_mode():
                        fn = _runner(model, mode, video, plan.batches)
                        row["clips_per_s"] = round(_clips_per_s(fn, batch, plan.timing_s, sync), 1)
                except Exception as err:  # noqa: BLE001 - one failing row must not lose the others
                    row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                rows.append(row)
                save()
            del model
            if cuda:
                torch.cuda.empty_cache()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_clip(path: Path, size: int, frames: int) -> Path:
    """A real H.264 clip (the synthetic data set's renderer): a shape moving over a textured background."""
    import numpy as np

    from models.synth import SynthConfig, render_clip, write_mp4

    write_mp4(path, render_clip(0, False, SynthConfig(size=size, frames=frames), np.random.default_rng(0)))
    return path


def _checkpoints(plan: Plan, folder: Path) -> dict[str, Path]:
    """The served models, saved as checkpoints (`sttm serve --backend torch` builds them)."""
    from models import load_model, save_model

    out = {}
    for method in plan.served:
        if plan.serve_model == "demo":
            model = load_model("demo", merge=method, reduction=0.38 if method == "sttm" else 0.0)
        else:
            model = _build(plan.serve_model, method, 400)
        out[method] = save_model(model, folder / f"{plan.serve_model}-{method}")
    return out


def _wait_ready(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"not ready after {timeout_s:.0f} s")


def serve_one(plan: Plan, method: str, checkpoint: Path, clip: Path, deadline: float) -> dict:
    """`sttm serve --backend torch` on `checkpoint`, `sttm bench serve` at every concurrency."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "STTM_MAX_BATCH": str(max(plan.batches)), "STTM_MAX_QUEUE": "256",
           "STTM_DECODE_WORKERS": str(max(2, (os.cpu_count() or 4) - 2)), "STTM_MAX_WAIT_MS": "5"}  # fmt: skip
    sttm = [sys.executable, "-m", "cli.main"]
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115 - read after the server ends
    server = subprocess.Popen(sttm + ["serve", "--backend", "torch", "--model", str(checkpoint), "--port", str(port)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_ready(url, server, min(300, max(30, deadline - time.monotonic() - 30)))
        requests = max(4 if plan.dry else 64, 4 * max(plan.concurrency))
        bench = sttm + ["bench", "serve", url, "--clip", str(clip), "--json", "--requests", str(requests)]
        bench += ["--concurrency", ",".join(map(str, plan.concurrency))]
        done = subprocess.run(
            bench, cwd=ROOT, capture_output=True, text=True, timeout=max(30, deadline - time.monotonic())
        )
        report = json.loads(done.stdout)
        with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as r:
            served = json.loads(r.read())[0]
        levels = [{k: lv[k] for k in ("concurrency", "requests", "errors", "throughput_rps", "latency_ms")}
                  for lv in report["levels"]]  # fmt: skip
        return {"stage": "serve", "variant": method, "backend": served["backend"], "precision": served["precision"],
                "reason": served.get("reason", ""), "levels": levels}  # fmt: skip
    except Exception as err:  # noqa: BLE001 - reported, with the server's last lines
        log.seek(0)
        tail = log.read().splitlines()[-5:]
        return {"stage": "serve", "variant": method, "error": f"{type(err).__name__}: {err}", "server_log": tail}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def serve_end_to_end(plan: Plan, deadline: float, rows: list[dict], save: Callable[[], None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clip = _write_clip(Path(tmp) / "clip.mp4", 128 if plan.dry else 320, 32)
        for method, checkpoint in _checkpoints(plan, Path(tmp)).items():
            if deadline - time.monotonic() < 60:
                rows.append({"stage": "serve", "variant": method, "skipped": "time"})
                continue
            rows.append(serve_one(plan, method, checkpoint, clip, deadline))
            save()


def profile_stage(plan: Plan, deadline: float, rows: list[dict], save: Callable[[], None]) -> None:
    """`torch.profiler` over eager forwards (fp16 on a GPU) at the largest batch, none and STTM:
    the top ops by self device time and the merge steps' share."""
    import torch

    from benchmarks.cpu_profile import profile_model

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    batch = max(plan.batches)
    for variant in ("none", "sttm"):
        row = {"stage": "profile", "variant": variant, "batch": batch, "dtype": str(dtype)}
        if deadline - time.monotonic() < 30:
            rows.append({**row, "skipped": "time"})
            continue
        try:
            model = _build(plan.preset, variant, 400 if not plan.dry else None).to(device, dtype)
            cfg = model.config
            video = torch.randn(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size, device=device, dtype=dtype)
            row.update(profile_model(model, video, runs=2 if plan.dry else 5, top=12))
        except Exception as err:  # noqa: BLE001 - reported; the other stages still run
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        rows.append(row)
        save()


def _aoti_package(plan: Plan, variant: str, folder: Path) -> Path:
    """`sttm export --format aoti` (fp16 on a GPU) of `variant`, as a user runs it (validated)."""
    import torch

    from export.run import ExportSpec, run_export
    from models import save_model

    model = _build(plan.preset, variant, 400 if not plan.dry else None)
    if plan.dry:  # one block: the fewest kernels for the CPU's C++ compiler
        from models import MergeConfig, build_model

        model = build_model(model.config.replace(depth=1), MergeConfig("none", 0.0)).eval()
    checkpoint = save_model(model, folder / f"{plan.preset}-{variant}")
    precision = "fp16" if torch.cuda.is_available() else "fp32"
    spec = ExportSpec(str(checkpoint), folder / f"{variant}-aoti.pt2", fmt="aoti", precision=precision,
                      max_batch=max(plan.batches), quiet=True)  # fmt: skip
    (package,) = run_export(spec).files
    return package


def _aoti_rows(plan: Plan, variant: str, package: Path, rows: list[dict], save: Callable[[], None]) -> None:
    """Model-only clips/s of the package, at each batch: in CUDA graphs on a GPU, as the server runs it."""
    import torch

    from ptruntime.aoti import DTYPES, load_package
    from ptruntime.graphs import BatchGraphs

    compiled, meta, target = load_package(package, max(plan.batches))
    cuda, dtype = target.device == "cuda", DTYPES[target.precision]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    clip = (3, meta.input_spec.frames, meta.input_spec.size, meta.input_spec.size)

    def forward(video):
        out = compiled(video)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    graphs = BatchGraphs(forward, clip, dtype, plan.batches) if cuda else None
    for batch in plan.batches:
        video = torch.randn(batch, *clip, device=target.device, dtype=dtype)
        run = (lambda v=video: graphs(v)) if cuda else (lambda v=video: forward(v))
        row = {"stage": "model", "mode": "aoti" + (" + graphs" if cuda else ""), "variant": variant, "batch": batch}
        with torch.inference_mode():
            row["clips_per_s"] = round(_clips_per_s(run, batch, plan.timing_s, sync), 1)
        rows.append({**row, "dtype": str(dtype)})
        save()


def aoti_stage(plan: Plan, deadline: float, rows: list[dict], save: Callable[[], None]) -> None:
    """Per variant in `plan.aoti`: the package exported (its time recorded), measured model-only,
    and served end to end (`sttm serve --backend torch --model package.pt2`)."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = _write_clip(Path(tmp) / "clip.mp4", 128 if plan.dry else 320, 32)
        for variant in plan.aoti:
            if deadline - time.monotonic() < (30 if plan.dry else 180):
                rows.append({"stage": "aoti", "variant": variant, "skipped": "time"})
                continue
            started = time.monotonic()
            try:
                package = _aoti_package(plan, variant, Path(tmp))
                rows.append({"stage": "aoti", "variant": variant, "export_s": round(time.monotonic() - started, 1)})
                save()
                _aoti_rows(plan, variant, package, rows, save)
            except Exception as err:  # noqa: BLE001 - reported; the other stages still run
                first = str(err).splitlines()[0][:200] if str(err) else ""
                rows.append({"stage": "aoti", "variant": variant, "error": f"{type(err).__name__}: {first}"})
                continue
            rows.append(serve_one(plan, f"{variant} aoti", package, clip, deadline))
            save()


def render(result: dict) -> str:
    """The tables (markdown) of `result`."""
    head = result["machine"]
    lines = [f"# benchmarks/gpu.py{' --dry' if result['dry'] else ''}: {head['date']}, {head['device']}",
             f"torch {head['torch']}, {head['cpu']}", "",
             "| mode | variant | batch | clips/s |", "|---|---|---|---|"]  # fmt: skip
    for row in (r for r in result["rows"] if r["stage"] == "model"):
        value = row.get("clips_per_s", row.get("skipped", row.get("error")))
        lines.append(f"| {row['mode']} | {row['variant']} | {row['batch']} | {value} |")
    for row in (r for r in result["rows"] if r["stage"] == "aoti"):
        what = f"exported in {row['export_s']} s" if "export_s" in row else row.get("skipped", row.get("error"))
        lines.append(f"| aoti export | {row['variant']} | | {what} |")
    lines += _profile_tables(result["rows"])
    lines += [
        "",
        "| served | backend | concurrency | clips/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in (r for r in result["rows"] if r["stage"] == "serve"):
        if "levels" not in row:
            lines.append(f"| {row['variant']} | {row.get('skipped', row.get('error'))} | | | | | |")
            continue
        for lv in row["levels"]:
            lat = lv["latency_ms"]
            lines.append(f"| {row['variant']} | {row['backend']} {row['precision']} | {lv['concurrency']} | "
                         f"{lv['throughput_rps']} | {lat['p50']} | {lat['p99']} | {lv['errors']} |")  # fmt: skip
    return "\n".join(lines)


def _profile_tables(rows: list[dict]) -> list[str]:
    """The profile rows side by side: share of self device time per op, per variant."""
    profiles = [r for r in rows if r["stage"] == "profile"]
    done = [r for r in profiles if "top" in r]
    lines = ["", *(f"profile {r['variant']}: {r.get('skipped', r.get('error'))}" for r in profiles if "top" not in r)]
    if not done:
        return lines
    head = " | ".join(f"{r['variant']} (batch {r['batch']}, {r['ms_per_forward']} ms)" for r in done)
    lines += [f"| range / op, share of {done[0]['time']} | {head} |", "|---|" + "---|" * len(done)]
    shares = [dict(r["top"]) | {f"{k} (range)": v for k, v in r["ranges"].items()} for r in done]

    def order(key: str) -> tuple:  # ranges first, then by the largest share
        return (" (range)" not in key, -max(s.get(key, 0) for s in shares))

    for key in sorted({k for s in shares for k in s}, key=order):
        cells = " | ".join(f"{s[key]:.1%}" if key in s else "-" for s in shares)
        lines.append(f"| `{key}` | {cells} |")
    return lines


def machine() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "cpu": f"{os.cpu_count()} CPU cores",
    }


def run(plan: Plan, out: Path, budget_s: float) -> dict:
    deadline = time.monotonic() + budget_s
    out.mkdir(parents=True, exist_ok=True)
    result = {"dry": plan.dry, "plan": asdict(plan), "machine": machine(), "rows": []}

    def save() -> None:
        (out / "gpu.json").write_text(json.dumps(result, indent=2))
        (out / "gpu.md").write_text(render(result) + "\n")

    rows = result["rows"]
    if "model" in plan.stages:
        first = tuple(m for m in plan.modes if m != "compile")
        model_only(Plan(**{**asdict(plan), "modes": first}), deadline, rows, save)
    if "profile" in plan.stages:
        profile_stage(plan, deadline, rows, save)
    if "serve" in plan.stages:
        serve_end_to_end(plan, deadline, rows, save)
    if "aoti" in plan.stages and plan.aoti:
        aoti_stage(plan, deadline, rows, save)
    if "compile" in plan.stages and "compile" in plan.modes:
        model_only(Plan(**{**asdict(plan), "modes": ("compile",), "batches": (32, 1)}), deadline, rows, save)
    save()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU (what CI runs)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-results")))
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting stages after this long")
    parser.add_argument("--wheels", type=Path, default=None, help="install the serving wheels from this folder first")
    parser.add_argument("--download-wheels", type=Path, default=None, metavar="DIR", help="only download them, here")
    parser.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"which of {','.join(STAGES)} to run (a rerun)")
    args = parser.parse_args(argv)
    if args.download_wheels is not None:
        download_wheels(args.download_wheels, args.python_version)
        return 0
    if args.wheels is not None:
        print(install_wheels(args.wheels), flush=True)
    stages = tuple(s for s in args.stages.split(",") if s)
    if unknown := set(stages) - set(STAGES):
        parser.error(f"--stages: unknown {', '.join(sorted(unknown))} (of {', '.join(STAGES)})")
    result = run(replace(make_plan(args.dry), stages=stages), args.out, args.budget_s)
    print(render(result))
    failed = [r for r in result["rows"] if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
