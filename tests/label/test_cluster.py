"""A real multi-node Ray cluster on 127.0.0.1 (a head and two worker nodes, each its own
raylet and object store): a few hundred files labelled through `--address`, a worker node
killed mid-job, every input exactly once with the right labels. And a head started as the
docs say, `ray start --head`, with token authentication on: joined with the token, or refused
in one line saying how."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from label.decode import DecodeSpec, decode_batch
from label.engine import HEAD_LOST_S, TOKEN_HINT, Plan
from label.infer import Labeller, LabelSpec, ModelPayload
from label.job import Job, run
from label.parts import complete_parts
from runtime import BackendOptions, load_backend
from tests.label.conftest import write_archive

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
FILES = 240


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # logical CPUs (the machine has 2 cores): a node holds an actor (0.5) and a decoding task (1)
    small = {"num_cpus": 2, "object_store_memory": 80 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    workers = [cluster.add_node(**small) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def node_processes(node) -> list[psutil.Process]:
    """A node's processes and theirs (its agents outlive a killed raylet for a while)."""
    procs = [psutil.Process(i.process.pid) for infos in node.all_processes.values() for i in infos]
    return procs + [c for p in procs for c in p.children(recursive=True)]


def end(processes: list[psutil.Process]) -> None:
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def expected_labels(paths, model) -> dict[str, list[str]]:
    """Each file's labels, from the actor's code run here without Ray."""
    spec = LabelSpec(BackendOptions(), DecodeSpec(load_backend(model).meta.input_spec), 5, 8)
    actor = Labeller(ModelPayload.read(model), spec)
    rows = actor(decode_batch(pa.table({"id": paths, "path": paths}), spec.decode)).to_pylist()
    return {r["id"]: r["labels"] for r in rows}


def test_a_worker_node_killed_mid_job_loses_nothing(cluster, tiny_onnx, tmp_path, request):
    head, workers = cluster
    paths = [str(p) for p in write_archive(tmp_path / "videos", FILES)]
    out = tmp_path / "labels.parquet"
    killed = threading.Event()
    orphans: list[psutil.Process] = []
    request.addfinalizer(lambda: end(orphans))
    written_before_kill: list[int] = []

    def kill_a_worker_once_rows_arrive():
        deadline = time.monotonic() + 120
        while not complete_parts(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        written_before_kill.append(sum(pq.read_metadata(p).num_rows for p in complete_parts(out)))
        orphans.extend(node_processes(workers[0]))
        head.remove_node(workers[0], allow_graceful=False)  # its raylet, object store and workers: SIGKILL
        killed.set()

    threading.Thread(target=kill_a_worker_once_rows_arrive, daemon=True).start()
    job = Job((str(tmp_path / "videos"),), out, tiny_onnx, rows_per_part=10, address=head.address,
              plan=Plan(actors=2, files_per_task=4))  # fmt: skip
    summary = run(job)
    rows = pq.read_table(out).to_pylist()
    assert killed.is_set() and 0 < written_before_kill[0] < FILES // 2  # killed early in the job
    assert sorted(r["id"] for r in rows) == sorted(paths) and summary.labelled == FILES  # every input once
    assert all(r["status"] == "ok" for r in rows)
    assert {r["id"]: r["labels"] for r in rows} == expected_labels(paths, tiny_onnx)


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """`(address, environment, kill)`: a head from `ray start --head --block` in a HOME of its own
    that holds a token, as any machine has once a local Ray ran there (Ray >= 2.59 writes one),
    so `ray start` turns token authentication on. `kill()` ends its processes (as the module's end does)."""
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(home)}
    ray_cli = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray_cli, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    argv = [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
            f"--object-store-memory={80 * 2**20}", f"--temp-dir={temp}", "--block"]  # fmt: skip
    head = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def kill() -> None:  # the node's processes, and any that left the tree (they name the temp dir)
        with contextlib.suppress(psutil.NoSuchProcess):
            end([psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)])
        head.wait(30)
        end([p for p in psutil.process_iter(["cmdline"]) if temp in " ".join(p.info["cmdline"] or ())])

    try:
        log = []
        for line in head.stdout:  # --block: it prints this once every process of the node is up
            log.append(line)
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail("ray start ended: " + "".join(log[-5:]))
        assert any("Token authentication is enabled" in line for line in log)
        threading.Thread(target=head.stdout.read, daemon=True).start()  # keep its pipe drained
        yield f"127.0.0.1:{port}", env, kill
    finally:
        kill()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_head_with_token_authentication_is_joined_with_its_token(token_head, tmp_path):
    address, env, _ = token_head
    paths = [str(p) for p in write_archive(tmp_path / "videos", 3)]
    sttm = str(Path(sys.executable).parent / "sttm")
    argv = [sttm, "label", *paths, "--address", address]
    # a driver never sends a token to an address it is given unless told to: one line saying how
    refused = subprocess.run([*argv, "-o", str(tmp_path / "a.parquet")], capture_output=True, text=True, timeout=180,
                             env=env | {"RAY_gcs_server_port_wait_time_s": "2"})  # fmt: skip
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 2 and last.startswith("sttm label: error: ") and last.endswith(TOKEN_HINT), last
    joined = subprocess.run([*argv, "-o", str(tmp_path / "b.parquet")], capture_output=True, text=True, timeout=300,
                            env=env | {"RAY_AUTH_MODE": "token"})  # fmt: skip
    assert joined.returncode == 0, joined.stderr[-2000:]
    rows = pq.read_table(tmp_path / "b.parquet").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(paths) and all(r["status"] == "ok" for r in rows)


def test_a_head_lost_mid_job_ends_it_in_one_line_with_status_3(token_head, tmp_path):
    """Ray itself would end the driver 60 s after the head, with exit 1 (the status of a job done
    with error rows) and a C++ log line; the job gives up at HEAD_LOST_S with its own. Runs last:
    it kills the module's head."""
    address, env, kill = token_head
    write_archive(tmp_path / "videos", 200)
    out = tmp_path / "labels.parquet"
    argv = [str(Path(sys.executable).parent / "sttm"), "label", str(tmp_path / "videos"), "-o", str(out),
            "--address", address, "--part-rows", "5"]  # fmt: skip
    job = subprocess.Popen(argv, env=env | {"RAY_AUTH_MODE": "token"}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not complete_parts(out) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.poll() is None and complete_parts(out), "the job ended (or wrote nothing) before the head was killed"
    kill()
    killed = time.monotonic()
    _, err = job.communicate(timeout=90)
    last = err.strip().splitlines()[-1]
    assert job.returncode == 3, err[-2000:]
    assert time.monotonic() - killed < HEAD_LOST_S + 15  # well before Ray's own 60 s
    assert last.startswith("sttm label: error: the job failed (the Ray head at ") and last.endswith(
        "--resume finishes it"
    )
    written = pq.read_table(out).to_pylist()  # every part complete and readable, each row once
    assert 0 < len(written) < 200 and len({r["id"] for r in written}) == len(written)


def test_an_address_where_no_cluster_answers_is_one_line_at_once(tmp_path):
    """`--address 127.0.0.1:1` waited on Ray's retries for minutes, logging as it went."""
    from label.engine import check_reachable

    with socket.socket() as closed:  # a port that was free a moment ago: nothing listens there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConnectionError, match=f"no Ray cluster answers at {address}: Connection refused"):
            check_reachable(address)
    assert time.monotonic() - started < 5
    check_reachable("auto")  # left to Ray: this machine's own cluster
