"""The `sttm` command line: output, and one-line errors with a non-zero exit."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from cli.main import main
from runtime.settings import DEMO_ONNX


def test_info_json(capsys):
    pytest.importorskip("torch")  # `sttm info` / `sttm export` build the model in torch
    assert main(["info", "videomae-b", "--merge", "sttm", "--reduction", "0.38", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "vit" and info["frames"] == 16 and info["num_labels"] == 400
    assert info["gflops_unmerged"] > 179 and info["gflops_saved"] >= 0.37
    assert info["tokens_per_layer"][0] == 1568 and info["tokens_per_layer"][-1] < 1568
    spec = info["input_spec"]  # as GET /v1/models spells it
    assert (spec["frames"], spec["size"]) == (16, info["input_size"])


def test_info_text(capsys):
    pytest.importorskip("torch")  # `sttm info` / `sttm export` build the model in torch
    assert main(["info", "timesformer-tiny", "--merge", "tome", "--reduction", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "architecture     timesformer" in out and "tokens per layer" in out and "tome" in out


def test_a_warning_is_one_line_naming_the_command(capsys):
    """The demo was trained with STTM: under ToMe its motion weights are dropped, and said so in
    one line, not as Python's file, line number and source line."""
    pytest.importorskip("torch")
    assert main(["info", "demo", "--merge", "tome", "--reduction", "0.3"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("sttm info: warning: demo: 6 merge weights this merge schedule does not use") and (
        err.count("\n") == 1
    ), err


def test_info_of_an_exported_file_says_what_it_carries_and_how_it_is_served_here(capsys, tmp_path):
    """Torch-free (the serving environment runs it too): the file's metadata, and the runtime,
    precision and reason `sttm serve --model` would have here."""
    from dataclasses import replace

    from runtime import BackendOptions, load_backend
    from tests.service.conftest import TINY_META, write_tiny_onnx

    path = write_tiny_onnx(tmp_path / "m.onnx", replace(TINY_META, validated_diff=2.5e-7))
    served = load_backend(path, BackendOptions())
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["served_here"] == {"backend": served.provider, "precision": served.precision, "reason": served.reason}
    assert info["num_labels"] == len(TINY_META.labels) and info["input_spec"]["frames"] == 8
    assert info["validated_diff"] == 2.5e-7 and info["merge"] == "none"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"exported         {path}: tiny, fp32, 2.5e-07 from PyTorch" in out
    assert f"served here      {served.provider} {served.precision}: {served.reason}" in out
    assert main(["info", str(path), "--reduction", "0.5"]) == 2  # the merge is in the graph
    assert capsys.readouterr().err.count("\n") == 1


def test_info_of_a_ladder_describes_every_rung_as_it_is_served(capsys, tmp_path):
    from runtime import BackendOptions, load_backend
    from tests.service.test_ladder_policy import write_ladder_dir

    ladder = write_ladder_dir(tmp_path / "tiny")
    assert main(["info", str(ladder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ladder"] == "tiny" and [r["reduction"] for r in info["rungs"]] == [0.0, 0.5]
    assert [r["measured"] for r in info["rungs"]] == [{"top1": 1.0}, {"top1": 0.5}]  # from ladder.json
    served = [load_backend(ladder / f"tiny_r{r:03d}.onnx", BackendOptions()) for r in (0, 50)]  # as `sttm serve` would
    assert [(r["served_here"]["backend"], r["served_here"]["precision"]) for r in info["rungs"]] == [
        (s.provider, s.precision) for s in served
    ]
    assert main(["info", str(ladder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ladder           {ladder}: tiny, 2 rungs") and out.count("served here") == 2
    (ladder / "tiny_r050.onnx").unlink()
    assert main(["info", str(ladder)]) == 2  # a rung missing: one line
    assert capsys.readouterr().err.count("\n") == 1


def test_bad_model_is_one_line_error(capsys, tmp_path):
    pytest.importorskip("torch")  # `sttm info` / `sttm export` build the model in torch
    assert main(["info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm info: error:") and err.count("\n") == 1


def test_unreachable_reduction_is_one_line_error(capsys):
    pytest.importorskip("torch")  # `sttm info` / `sttm export` build the model in torch
    assert main(["info", "vit-tiny", "--merge", "sttm", "--reduction", "0.97"]) == 2
    assert "cannot save" in capsys.readouterr().err


def test_export_onnx_then_triton(capsys, tmp_path):
    pytest.importorskip("torch")  # `sttm info` / `sttm export` build the model in torch
    assert main(["export", "vit-tiny", "-o", str(tmp_path / "m.onnx"), "--merge", "sttm", "--reduction", "0.3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "m.onnx")
    assert "result: PASS" in captured.err and "| batch | clips |" in captured.err  # the validation table
    assert main(["export", "vit-tiny", "-o", str(tmp_path / "repo"), "--format", "triton", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and (tmp_path / "repo" / "vit-tiny" / "config.pbtxt").is_file()


def test_export_errors_are_one_line(capsys, tmp_path):
    pytest.importorskip("torch")  # `sttm info` / `sttm export` build the model in torch
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv in (
        ["export", str(tmp_path / "missing"), "-o", str(tmp_path / "m.onnx")],
        ["export", "vit-tiny", "-o", str(blocker / "m.onnx")],  # parent is a file: unwritable
        ["export", "vit-tiny", "-o", str(tmp_path / "m.plan"), "--format", "tensorrt"],  # no TensorRT here
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines = err.splitlines()  # progress lines may come first; the error is one line, last
        assert lines[-1].startswith("sttm export: error:") and "Traceback" not in err, err


def test_serve_refuses_a_missing_model_in_one_line(capsys, tmp_path, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server must not start"))
    assert main(["serve", "--model", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm serve: error: model file") and err.count("\n") == 1
    (tmp_path / "empty").mkdir()  # neither a ladder nor a checkpoint: was uvicorn's "startup failed", exit 3
    assert main(["serve", "--model", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sttm serve: error: {tmp_path / 'empty'} is a directory without ladder.json")
    assert err.count("\n") == 1


def test_serve_refuses_an_address_it_cannot_listen_on_before_the_model_loads(capsys, monkeypatch):
    """A port in use was found by uvicorn after the model had loaded (minutes for a big model), exit 3."""
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server must not start"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    assert capsys.readouterr().err.startswith(
        f"sttm serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_serve_refuses_a_file_that_is_not_a_model_in_one_line(capsys, tmp_path, monkeypatch):
    """A clip passed as --model was taken for a checkpoint and failed inside uvicorn's startup
    ("cannot read weights (it pickles Python objects ...)", exit 3)."""
    pytest.importorskip("torch")  # under auto a checkpoint runs on the torch plugin, which says it
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server must not start"))
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(64))
    assert main(["serve", "--model", str(clip)]) == 2
    assert capsys.readouterr().err == f"sttm serve: error: {clip}: not a checkpoint: this is an MP4 / MOV video\n"


def test_serve_refuses_what_this_cpu_cannot_run_in_one_line_before_starting(capsys, tiny_onnx, monkeypatch):
    """An explicit precision the CPU lacks units for: one line and exit 2 (never uvicorn's
    "Application startup failed"); the CPU is taken for an AVX2-only one so this holds anywhere."""
    import uvicorn

    from runtime.backends import cpu, ov

    monkeypatch.setattr(ov, "this_cpu", lambda: cpu.CpuFeatures(frozenset({"avx2", "fma"})))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server must not start"))
    for name in ("STTM_MODEL", "STTM_BACKEND", "STTM_PRECISION"):
        monkeypatch.delenv(name, raising=False)  # _serve sets them for its workers
    argv = ["serve", "--model", str(tiny_onnx), "--backend", "openvino", "--precision", "bf16"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm serve: error: --precision bf16: this CPU has neither bf16 nor fp16 units")
    assert err.count("\n") == 1


def test_bad_settings_are_one_line_naming_the_variable(capsys, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server must not start"))
    monkeypatch.setenv("STTM_MAX_QUEUE", "many")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm serve: error: STTM_MAX_QUEUE: Input should be a valid integer") and err.count("\n") == 1
    monkeypatch.delenv("STTM_MAX_QUEUE")
    # out of range: these started a server that answered 500 to every clip (a batch of 0), failed its
    # startup with a traceback (0 decoders), or refused every upload as over -1 MB
    for variable, value, words in [("STTM_MAX_BATCH", "0", "greater than or equal to 1"),
                                   ("STTM_DECODE_WORKERS", "0", "greater than or equal to 1"),
                                   ("STTM_MAX_UPLOAD_MB", "-1", "greater than 0")]:  # fmt: skip
        monkeypatch.setenv(variable, value)
        assert main(["serve"]) == 2
        assert capsys.readouterr().err == f"sttm serve: error: {variable}: Input should be {words}\n"
        monkeypatch.delenv(variable)
    monkeypatch.setenv("STTM_LATENCY_DEADLINE", "true")  # a deadline without a target
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == "sttm serve: error: latency_deadline needs a latency target (STTM_LATENCY_TARGET_MS)\n"


def test_predict_json_and_bad_file(capsys, tmp_path):
    import numpy as np

    from models.synth import write_mp4

    write_mp4(tmp_path / "c.mp4", np.zeros((8, 96, 96, 3), np.uint8))
    (tmp_path / "bad.mp4").write_text("nope")
    assert main(["predict", "demo", str(tmp_path / "c.mp4"), str(tmp_path / "bad.mp4"), "--json", "--top-k", "2"]) == 2
    results = json.loads(capsys.readouterr().out)
    assert len(results[0]["predictions"]) == 2 and results[1]["error"]["code"] == "not_a_video"
    route_keys = {"model", "predictions", "frames", "views", "video", "latency_ms", "reduction", "gflops"}
    assert set(results[0]) == {"path", *route_keys}  # /v1/classify's answer: no `merges: null` without explain


@pytest.mark.parametrize("top_k", ["0", "-3", "1001"])
def test_predict_holds_top_k_to_the_routes_limits_in_one_line(capsys, tmp_path, top_k):
    """As POST /v1/classify and /v1/timeline: 1-1000 (a slice would answer nothing for 0 and all
    but the last three of the labels for -3)."""
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"unused: refused before the model loads")
    for timeline in ([], ["--timeline"]):
        assert main(["predict", "demo", str(clip), "--top-k", top_k, *timeline]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sttm predict: error: --top-k: input should be") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("flags", "message"),
    [  # each was ignored: the clip's labels came out as text; `--timeline --format csv --json` printed CSV
        (
            ["--format", "vtt", "--window-s", "1"],
            "--window-s, --format: for --timeline only (without it a video is one clip)",
        ),
        (["--timeline", "--format", "csv", "--json"], "--json and --format csv: one output format, give one of them"),
    ],
)
def test_predict_refuses_flags_it_would_ignore(capsys, tmp_path, flags, message):
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"unused: refused before the model loads")
    assert main(["predict", "demo", str(clip), *flags]) == 2
    assert capsys.readouterr().err == f"sttm predict: error: {message}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "demo", "-o", "m.onnx", "--max-batch", "0"], "argument --max-batch: must be at least 1, not 0"),
        (["serve", "--workers", "0"], "argument --workers: must be at least 1, not 0"),
        (["serve", "--port", "70000"], "argument --port: must be 1-65535, not 70000"),
        (["serve", "--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),  # was uvicorn's KeyError
        (["synth", "out", "--clips-per-class", "-1"], "argument --clips-per-class: must be at least 1, not -1"),
        (["synth", "out", "--clips-per-class", "1", "--seed", "-1"], "argument --seed: must be at least 0, not -1"),
        (["label", "in", "-o", "o.parquet", "--part-rows", "0"], "argument --part-rows: must be at least 1, not 0"),
        (["bench", "serve", "http://x", "--clip", "c", "--requests", "abc"], "argument --requests: invalid int value"),
        (
            ["bench", "serve", "http://x", "--clip", "c", "--timeout", "0"],
            "argument --timeout: must be a number over 0, not 0",
        ),
        (["train", "d", "--model", "m", "-o", "r", "--lr", "nan"], "argument --lr: must be a number over 0, not nan"),
    ],
)
def test_a_count_out_of_range_is_refused_by_the_parser_naming_the_flag(capsys, argv, message):
    """Before anything runs: 0 workers, -1 clips or a 1-frame clip used to run as nothing (or crash)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_synth_refuses_clips_it_cannot_make_in_one_line(capsys, tmp_path):
    """An odd size failed inside libx264 and one frame divided by zero, each with a traceback."""
    pytest.importorskip("torch")  # `sttm synth` lives with the models
    for flags, message in [(["--size", "17"], "--size must be even and at least 16, not 17"),
                           (["--size", "8"], "--size must be even and at least 16, not 8"),
                           (["--frames", "1"], "--frames must be at least 2, not 1")]:  # fmt: skip
        assert main(["synth", str(tmp_path / "out"), "--clips-per-class", "1", *flags]) == 2
        assert capsys.readouterr().err == f"sttm synth: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_a_torch_command_without_torch_is_one_line(capsys):
    """In the serving environment (no torch), `sttm info` says what is missing in one line."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here: this is the serving environment's check")
    assert main(["info", "vit-tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm info: error: needs the 'torch' package") and err.count("\n") == 1


def test_validate_holds_a_runtime_to_pytorch(capsys, monkeypatch):
    pytest.importorskip("torch")
    from runtime import agreement

    argv = ["validate", "vit-tiny", "--merge", "sttm", "--reduction", "0.3", "--backend", "onnxruntime"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "onnxruntime:CPUExecutionProvider (fused attention x4) fp32 vs pytorch (tolerance 0.001)" in out  # as served
    assert "result: PASS" in out
    monkeypatch.setitem(agreement.TOLERANCE, "fp32", -1.0)  # nothing passes
    assert main([*argv[:2], "--backend", "onnxruntime"]) == 2  # unmerged: half the export time
    err = capsys.readouterr().err
    assert err.startswith("sttm validate: error:") and "result: FAIL" in err and "Traceback" not in err


def test_runtime_flags_refuse_what_cannot_run_in_one_line(capsys, tmp_path):
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"unused")
    predict = ["predict", "demo", str(clip), "--backend", "onnxruntime", "--precision", "bf16"]
    cases = [(predict, "needs --backend openvino")]
    if importlib.util.find_spec("torch"):  # `sttm eval` reads data sets with torch
        cases.append((["eval", "vit-tiny", str(tmp_path), "--backend", "openvino"], "export MODEL first"))
        # was refused as '/tmp/tmpXXXX/model.onnx: an ONNX file cannot run on tensorrt'
        cases.append((["validate", "demo", "--backend", "tensorrt"], "as sttm export --format tensorrt builds it"))
    for argv, needle in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err


def test_triton_without_its_wheel_or_repository_is_one_line(capsys, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text('backend: "python"\n')  # a repository: the wheel is what is missing
    assert main(["triton", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "sttm triton: error: the 'nvidia-pytriton' package is not installed (pip install nvidia-pytriton; "
        "Linux x86_64/arm64 only)\n"
    )
    assert main(["triton", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_label_without_ray_says_what_to_install_in_one_line(capsys, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["label", str(tmp_path), "-o", str(tmp_path / "out.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm label: error: needs ray") and "pip install -e '.[label]'" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "0"], "--top-k: input should be greater than or equal to 1"),
        (["--model", "/nonexistent.onnx"], "model file /nonexistent.onnx does not exist"),
        (["--timeline", "--stride-s", "0"], "--stride-s: input should be greater than or equal to 0.01"),
        # the routes' limits (sttm predict had them): these ran, or failed inside Ray after it started
        (["--timeline", "--window-s", "601"], "--window-s: input should be less than or equal to 600"),
        (["--timeline", "--min-score", "nan"], "--min-score: input should be a finite number"),
        (["--timeline", "--min-score", "1.5"], "--min-score: input should be less than or equal to 1"),
        (["--top-k", "5000"], "--top-k: input should be less than or equal to 1000"),
        (["--actor-gpus", "-1"], "--actor-gpus: input should be greater than or equal to 0"),
        (["--window-s", "3", "--min-score", "0.5"], "--window-s, --min-score: for --timeline only"),  # were ignored
    ],
)
def test_label_refuses_bad_arguments_in_one_line_before_ray_starts(capsys, tmp_path, args, message):
    pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    (tmp_path / "v.mp4").write_bytes(b"x")
    assert main(["label", str(tmp_path), "-o", str(tmp_path / "out.parquet"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm label: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out.parquet").exists()  # nothing started, nothing written


def test_serve_refuses_a_misspelt_setting_and_passes_other_sttm_variables(capsys, monkeypatch):
    """STTM_MAX_BATCHES=4 was ignored by pydantic-settings: the server ran at max_batch 8 without a word."""
    import uvicorn

    from service.settings import misspelt

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server must not start"))
    monkeypatch.setenv("STTM_MAX_BATCHES", "4")
    assert main(["serve"]) == 2
    assert (
        capsys.readouterr().err
        == "sttm serve: error: STTM_MAX_BATCHES is not a setting (did you mean STTM_MAX_BATCH?)\n"
    )
    assert misspelt({"STTM_APIKEY": "k"}) == "STTM_APIKEY is not a setting (did you mean STTM_API_KEY?)"
    others = ("STTM_HOST_PORT", "STTM_GPU_HOST_PORT", "STTM_CPUS", "STTM_MERGE", "STTM_REDUCTION", "STTM_TRITON_PYTHON")
    assert (
        misspelt({name: "1" for name in (*others, "STTM_MAX_BATCH", "PATH")}) is None
    )  # compose's, the tests', settings


def test_serve_on_torch_without_torch_is_one_line(capsys, monkeypatch):
    """The serving image has no torch: `--backend torch` says what to install and exits 2."""
    import uvicorn

    from runtime.backends import plugins

    real = plugins.importlib.util.find_spec
    monkeypatch.setattr(plugins.importlib.util, "find_spec", lambda name: None if name == "torch" else real(name))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server must not start"))
    for name in ("STTM_MODEL", "STTM_BACKEND", "STTM_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    assert main(["serve", "--backend", "torch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm serve: error: --backend torch needs torch") and "pip install torch==2.13.0" in err
    assert err.count("\n") == 1


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`sttm info MODEL | head -3` printed 'sttm info: error: [Errno 32] Broken pipe'. (The exported
    demo, which `sttm info` reads without torch: this runs in the serving environment too.)"""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "info", str(DEMO_ONNX)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before the first line
    assert proc.wait(timeout=120) == 141 and proc.stderr.read() == b""
