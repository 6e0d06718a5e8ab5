"""The Ray Data pipeline: (id, path) rows -> decoding in CPU tasks -> an actor pool of runtime
backends -> labelled rows, streamed back to the driver, which writes the parts.

Ray Data streams: blocks flow stage to stage as they are ready and each stage is held back
when the next one (or the object store) is full, so memory stays bounded whatever the
archive's size. A failed decoding task is retried, an actor that dies (its node with it) is
restarted elsewhere, and the blocks lost with a node are computed again from their lineage.

`connect` starts a local Ray for the job (all of this machine's CPUs, no dashboard, quiet),
or joins a cluster (`--address` / `RAY_ADDRESS`) and ships this package's code to it.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from label.decode import decode_batch
from label.infer import Labeller, LabelSpec, ModelPayload
from label.inputs import Item
from label.rows import error_row, table

CRASHED = "decoder_crashed"  # the status of a video whose process died on every try

LOCAL_OBJECT_STORE = 1 << 30  # bytes: a local job's object store (Ray's default is 30% of memory)


@dataclass(frozen=True)
class Plan:
    """How the work is spread. The two stages ask for different resources, which also keeps Ray
    Data from fusing them into one operator (the actors would then decode too, one video at a
    time, and decoding would leave the CPU tasks)."""

    actors: int | None = None  # inference actors; None: one per node with CPUs
    actor_cpus: float = 0.5  # what an actor reserves: its runtime's threads share the cores with decoding
    actor_gpus: float = 0.0  # 1: an accelerator per actor (TensorRT, ONNX Runtime's CUDA provider)
    decode_cpus: float = 1.0  # per decoding task
    files_per_task: int = 4  # videos per decoding task (and per block)
    tries: int = 3  # per decoding task and per actor batch, before its videos are run again alone


def connect(address: str | None, plan: Plan = Plan()) -> bool:
    """Join Ray: already initialised (a test, a notebook), a cluster at `address`, or a local Ray
    started now. Returns whether this call started it (and the caller should shut it down).
    Ray Data is imported meanwhile: starting Ray is mostly waiting for its processes."""
    import ray

    if ray.is_initialized():
        return False
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # the import (1-2 s) the pipeline needs next, while Ray starts; Ray itself must start on
        # this thread: its processes die with the thread that started them
        imported = pool.submit(importlib.import_module, "ray.data")
        _init(address, plan)
        imported.result()
    return True


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """ConnectionError in one line where nothing listens at a cluster's `HOST:PORT` (or
    `ray://HOST:PORT`): `ray.init` would retry for minutes, logging as it goes. `auto` (the
    cluster this machine is part of) and an address without a port are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"no Ray cluster answers at {address}: {err.strerror or err}") from None


def _init(address: str | None, plan: Plan) -> None:
    import ray

    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:  # a cluster: its nodes need ray, PyAV and a runtime, not this checkout
        import label
        import media
        import runtime

        code = [str(Path(m.__file__).parent) for m in (label, media, runtime)]
        check_reachable(address)
        try:
            ray.init(address=address, runtime_env={"py_modules": code}, **quiet)
        except ConnectionError as err:
            if token_refused(err) and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                raise ConnectionError(f"{err}: {TOKEN_HINT}") from None
            raise
        return
    # every core decodes, and the actor's share on top, as the server's decoding threads and its
    # batcher do: on 2 cores, two decoding tasks and the actor at once
    extra = math.ceil((plan.actors or 1) * plan.actor_cpus)
    # address "local": a new Ray, never one a `ray start` (or a dead cluster's leftover file) names
    cpus = (os.cpu_count() or 1) + extra
    ray.init(address="local", num_cpus=cpus, object_store_memory=LOCAL_OBJECT_STORE, include_dashboard=False, **quiet)


# Ray (>= 2.59) turns token authentication on for a cluster `ray start` makes, but a driver given
# an explicit address never sends a token unless told to (it would hand it to any address named)
TOKEN_HINT = (
    "the cluster wants its authentication token: set RAY_AUTH_MODE=token, with the cluster's token in "
    "~/.ray/auth_token (or RAY_AUTH_TOKEN)"
)


def token_refused(err: BaseException) -> bool:
    """Whether Ray's failure to join a cluster was the cluster refusing a missing or wrong token
    (Ray 2.60 says so only inside the chained error's text)."""
    from ray.exceptions import AuthenticationError

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, AuthenticationError) or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# A cluster whose head dies takes the driver with it: Ray's core worker ends the process (exit 1,
# a C++ log line) once the head's GCS has been unreachable for 60 s. The job watches the head
# itself and gives up sooner, in its own words.
HEAD_CHECK_S = 2.0
HEAD_LOST_S = 20.0


def watch_head(on_lost: Callable[[str], None], every_s: float = HEAD_CHECK_S, lost_after_s: float = HEAD_LOST_S):
    """Check the connected Ray's head (a TCP connection to its GCS port) every `every_s` in a
    daemon thread; when it has not answered for `lost_after_s`, call `on_lost(message)` once
    (from that thread). Returns the `threading.Event` that stops the watch."""
    import ray

    host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
    stop = threading.Event()

    def watch() -> None:
        answered = time.monotonic()
        while not stop.wait(every_s):
            try:
                socket.create_connection((host, int(port)), timeout=every_s).close()
                answered = time.monotonic()
            except OSError:
                if time.monotonic() - answered >= lost_after_s:
                    on_lost(f"the Ray head at {host}:{port} has not answered for {lost_after_s:.0f} s")
                    return

    threading.Thread(target=watch, name="sttm-head-watch", daemon=True).start()
    return stop


def _nodes_with_cpus() -> int:
    import ray

    return max(1, sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0))


def dataset(items: list[Item], model: ModelPayload, spec: LabelSpec, plan: Plan = Plan(), alone: bool = False):
    """The job as a Ray Dataset of output rows (lazy: nothing runs until it is read). `alone`:
    one video per decoding task and per actor batch (the second pass: a crash costs one video)."""
    import ray
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # no INFO lines between ours; lost blocks: see run()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the job draws its own line (label.progress)
    ctx.execution_options.preserve_order = False  # stragglers do not hold the rest back
    ctx.max_errored_blocks = -1  # a block out of tries is dropped, not the job ended: its videos run again
    per_task = 1 if alone else plan.files_per_task
    blocks = max(1, math.ceil(len(items) / per_task))
    ds = ray.data.from_items([{"id": i.id, "path": i.path} for i in items], override_num_blocks=blocks)
    retries = max(0, plan.tries - 1)  # Ray Data's default is forever
    with warnings.catch_warnings():  # ray_remote_args (retries here) are deprecated, for Ray 2.64: pinned below it
        warnings.simplefilter("ignore", DeprecationWarning)
        return _stages(ds, model, spec, plan, per_task, retries, alone)


def _stages(ds, model: ModelPayload, spec: LabelSpec, plan: Plan, per_task: int, retries: int, alone: bool):
    import ray
    import ray.data

    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"d": spec.decode},
        batch_size=per_task,
        batch_format="pyarrow",
        num_cpus=plan.decode_cpus,
        max_retries=retries,
    )
    return ds.map_batches(
        Labeller,
        fn_constructor_args=(ray.put(model), spec),
        batch_size=1 if alone else spec.max_batch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan.actors or _nodes_with_cpus()),
        num_cpus=plan.actor_cpus,
        num_gpus=plan.actor_gpus,
        max_task_retries=retries,  # an actor that dies is restarted (elsewhere if its node is lost)
    )


def _read(ds, seen: set[str]) -> Iterator[pa.Table]:
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        seen.update(batch["id"].to_pylist())
        yield batch


def crashed(items: list[Item], tries: int, timeline: bool) -> pa.Table:
    """The rows of videos that never came back: each killed its process on every try."""
    message = f"the process decoding it died on each of {tries} tries (a crash in the decoder, not an error it reports)"
    return table([error_row(i.id, i.path, CRASHED, message) for i in items], timeline)


def run(items: list[Item], model: ModelPayload, spec: LabelSpec, plan: Plan = Plan()) -> Iterator[pa.Table]:
    """Label `items`; yields batches of output rows (`label.rows`) as they are done, in no set
    order, every item exactly once (a video that crashes its process: a `decoder_crashed` row)."""
    seen: set[str] = set()
    if items:
        yield from _read(dataset(items, model, spec, plan), seen)
    lost = [i for i in items if i.id not in seen]
    if lost:  # blocks out of tries: their videos again, one per task and per batch
        yield from _read(dataset(lost, model, spec, plan, alone=True), seen)
    if crashes := [i for i in lost if i.id not in seen]:
        yield crashed(crashes, plan.tries, spec.decode.timeline is not None)
