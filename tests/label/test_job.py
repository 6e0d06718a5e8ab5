"""Whole jobs on a local Ray: every input once, bad files as rows, the answers of `sttm
predict`; a driver killed mid-job and resumed ends with every input exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.predict import predict
from label.decode import Windows
from label.engine import Plan
from label.job import Job, run
from label.parts import complete_parts, read_ids
from tests.label.conftest import write_archive, write_bad_files

pq = pytest.importorskip("pyarrow.parquet")
ROOT = Path(__file__).resolve().parents[2]


def test_a_job_labels_every_file_once_as_sttm_predict_does(local_ray, archive, tiny_onnx, tmp_path, capsys):
    from cli.main import main

    bad = write_bad_files(tmp_path / "bad")
    out = tmp_path / "labels.parquet"
    inputs = (str(archive[0].parent), str(tmp_path / "bad" / "*"))
    flags = ["--model", str(tiny_onnx), "--top-k", "3", "--part-rows", "5", "--actors", "1", "--files-per-task", "2"]
    assert main(["label", *inputs, "-o", str(out), *flags]) == 1  # every input has its row, some are errors
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted([str(p) for p in archive] + [str(tmp_path / "bad" / n) for n in bad])
    by_id = {r["id"]: r for r in rows}
    for want in predict(str(tiny_onnx), [str(p) for p in archive[:4]], top_k=3):
        assert by_id[want["path"]]["labels"] == [p["label"] for p in want["predictions"]]
        assert by_id[want["path"]]["scores"] == pytest.approx([p["score"] for p in want["predictions"]], abs=1e-5)
    err = capsys.readouterr().err
    assert "files/s" in err and "ETA" in err
    assert err.strip().splitlines()[-1].startswith(f"labelled {len(rows)} files in ")
    assert err.strip().splitlines()[-1].endswith("errors: not_a_video 2, empty 1")  # the codes the exit status 1 means
    assert run(Job(inputs, out, tiny_onnx, resume=True)).labelled == 0  # all done: nothing again


def test_timeline_rows_in_json_lines(local_ray, archive, tiny_onnx, tmp_path):
    out = tmp_path / "t.jsonl"
    run(Job((str(archive[-1]), str(archive[-2])), out, tiny_onnx, timeline=Windows(1.0, 0.5), top_k=2))
    import json

    rows = [json.loads(line) for p in complete_parts(out) for line in p.read_text().splitlines()]
    assert len(rows) == 2 and all(r["status"] == "ok" and r["windows"] and r["segments"] for r in rows)
    assert all(len(w["labels"]) == 2 for r in rows for w in r["windows"])


def test_a_killed_driver_resumes_to_every_input_exactly_once(local_ray, tiny_onnx, tmp_path):
    videos = write_archive(tmp_path / "videos", 30)
    out = tmp_path / "labels.parquet"
    command = [sys.executable, "-m", "cli", "label", str(tmp_path / "videos"), "-o", str(out), "--model",
               str(tiny_onnx), "--part-rows", "4", "--files-per-task", "1"]  # fmt: skip
    # its own process group: the kill below takes the driver's local Ray with it, as a kill of a shell's job does
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 90
    while not complete_parts(out) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    assert driver.wait(10) == -signal.SIGKILL, driver.stderr.read().decode()[-2000:]
    before = [i for p in complete_parts(out) for i in read_ids(p)]
    assert 0 < len(before) < len(videos)  # killed mid-job, complete parts only
    summary = run(Job((str(tmp_path / "videos"),), out, tiny_onnx, resume=True))
    ids = pq.read_table(out)["id"].to_pylist()
    assert sorted(ids) == sorted(str(v) for v in videos)  # every input exactly once
    assert summary.skipped == len(before) and summary.labelled == len(videos) - len(before)


def test_decoding_runs_in_cpu_tasks_and_inference_in_the_actors(local_ray, archive, tiny_onnx):
    """Two operators: Ray Data must not fuse decoding into the actors (one video at a time there)."""
    from label.decode import DecodeSpec
    from label.engine import dataset
    from label.infer import LabelSpec, ModelPayload
    from label.inputs import expand
    from runtime import BackendOptions, load_backend

    spec = LabelSpec(BackendOptions(), DecodeSpec(load_backend(tiny_onnx).meta.input_spec))
    ds = dataset(expand([str(p) for p in archive[:4]]), ModelPayload.read(tiny_onnx), spec, Plan(actors=1))
    done = ds.materialize()
    assert done.count() == 4
    stats = done.stats()
    assert "MapBatches(decode_batch):" in stats and "MapBatches(decode_batch)->" not in stats, stats
    assert "MapBatches(Labeller):" in stats, stats


def _crashing(decode):
    """`decode`, but the process dies of SIGSEGV on a batch holding a path with "crash" in its
    name, as it would on a bug inside FFmpeg (a nested function: Ray ships it by value)."""

    def crashing_decode(batch, d):
        if any("crash" in Path(p).name for p in batch["path"].to_pylist()):
            os.kill(os.getpid(), signal.SIGSEGV)
        return decode(batch, d)

    return crashing_decode


def test_a_video_that_kills_its_process_is_one_row_and_the_rest_are_labelled(local_ray, tiny_onnx, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    import label.engine

    videos = write_archive(tmp_path / "videos", 7)
    crasher = tmp_path / "videos" / "crash.mp4"
    crasher.write_bytes(videos[0].read_bytes())  # a real video: only its name makes its process die
    monkeypatch.setattr(label.engine, "decode_batch", _crashing(label.engine.decode_batch))
    out = tmp_path / "labels.parquet"
    started = time.monotonic()
    # 2 tries; 4 videos a task: three good videos share the crasher's task and are lost with it, once
    summary = run(Job((str(tmp_path / "videos"),), out, tiny_onnx, plan=Plan(actors=1, files_per_task=4, tries=2)))
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(rows) == sorted(str(p) for p in [*videos, crasher])  # every input exactly once
    assert (
        rows[str(crasher)]["status"] == "decoder_crashed" and "died on each of 2 tries" in rows[str(crasher)]["message"]
    )
    assert all(rows[str(v)]["status"] == "ok" and rows[str(v)]["labels"] for v in videos)
    assert summary.errors == {"decoder_crashed": 1}
    assert time.monotonic() - started < 120  # bounded: Ray Data's default retries it forever


def test_the_exit_status_says_all_ok_or_not_started(local_ray, archive, tiny_onnx, tmp_path, capsys, monkeypatch):
    """0: every row `ok`; 2: refused before the job; 3: Ray failed mid-job, in one line naming
    `--resume` (1, some rows errors: the first test)."""
    from ray.exceptions import RaySystemError

    import label.job
    from cli.main import main

    good = ["label", "--model", str(tiny_onnx), str(archive[0]), str(archive[1]), "-o", str(tmp_path / "a.parquet")]
    assert main(good) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("errors: none")
    assert main(good) == 2  # OUT has parts, no --resume: refused before the job
    assert main(["label", str(tmp_path / "none*.mp4"), "-o", str(tmp_path / "c.parquet")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("sttm label: error: ")

    def lost(job, **_):  # what Ray raises when the cluster under a job goes away
        raise RaySystemError("System error: the GCS at 127.0.0.1:6379 is unreachable\nmore detail")

    monkeypatch.setattr(label.job, "run", lost)
    assert main([*good[:-1], str(tmp_path / "d.parquet")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RaySystemError" in err and err.rstrip().endswith("--resume finishes it")


def test_a_job_that_finds_no_ray_cluster_leaves_no_out_folder(archive, tiny_onnx, tmp_path, monkeypatch):
    """`--address HOST:PORT` with nothing listening: one line, exit 2, and (it did) an empty OUT left behind."""
    import label.job
    from label.engine import check_reachable

    def connect(address, plan):  # as engine.connect does first for an address (a Ray may run here already)
        check_reachable(address)

    monkeypatch.setattr(label.job.engine, "connect", connect)
    out = tmp_path / "labels.parquet"
    with pytest.raises(ConnectionError, match="no Ray cluster answers at 127.0.0.1:1"):
        run(Job((str(archive[0]),), out, tiny_onnx, address="127.0.0.1:1"))
    assert not out.exists()
