"""A ladder of merge ratios served as one model, and the load policy that picks a rung per batch.

The policy is a few pure functions (`latest_finish`, `keeps_up`, `choose_rung`, `ewma`,
`rung_cost`, `learn_cost`) and one small stateful object (`LoadPolicy`: each rung's cost per
clip — learned from the batches that rung serves, a machine-wide level carrying a slowdown to
the rungs not in use — the time a request spends outside the model (decoding and
preprocessing, measured online), and the rung in use).

Each rung learns its own cost, because the rungs' ratios are not the same on every CPU nor
the same under load as for one clip timed alone at warm-up (on an AVX2-only EPYC the warm-up
ratios were off by 0.77-1.71x under load). A rung's first `SETTLE_BATCHES` batches are
averaged (the warm-up timing stands in only before its first); after that an EWMA follows
it. Once a rung has settled, how far its batches stray from its own estimate is the
machine's doing (a busier machine), and moves a shared level that every rung's estimate
follows from its last batch on: a rung not used for a while does not look as fast as it was,
and one rung's warm-up error never drags the others.

For each batch of auto requests it picks the least-merged rung on which every request in the
server — queued, in this batch, or still decoding — and one arriving now finishes within the
latency target, counting from when each arrived: a request's finish is the time it has
already spent (at least its decoding) plus the model time of every clip up to and including
its own; the newcomer also waits for one full batch (the one that will be running). Requests
that have waited long push the ladder up before the queue is long. And a rung that cannot
keep up with the clips arriving (recent arrivals x its cost above `MAX_UTILISATION`) is not
a candidate whatever the queue is now: it would let the next Poisson burst build a queue
that no later batch can clear in time. Both keep the tail (p99), not only the mean, inside
the target. The policy climbs at once and comes back
down only when a lower rung predicts well inside the target (hysteresis), so it does not
flap. By default it never refuses work: when no rung meets the target it uses the most merged
one, and the bounded queue stays the only source of 503s.

With a deadline (`STTM_LATENCY_DEADLINE`) the target is a promise: an upload that even the
most merged rung (or the rung it pins) is predicted to answer later than the target — its
decoding, then every clip ahead of it and its own — is refused at once (503, `Retry-After`:
the seconds it is late by), before it is decoded. When the most merged rung is itself near
full (an AVX2-only CPU at 1.5x the unmerged capacity: ~90% busy), Poisson bursts would queue
past any target; refusing the few requests of a burst keeps every answer inside it.

A single model is a ladder of one rung, and without a target every auto batch runs on the
least-merged rung: exactly the server without a ladder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.backends import Backend, BackendOptions, ModelLoadError, check_request, load_backend
from runtime.ladder_file import RungEntry, is_ladder, read_ladder, rung_name
from service.batcher import Demand, QueueFullError, Waiting

# Descend to a less-merged rung only when it predicts at most this fraction of the target:
# a queue that hovers around one rung's limit does not make batches alternate between rungs.
DESCEND_BELOW = 0.8
# A rung is a candidate only while arrivals keep it at most this busy: a queue in front of a
# server busier than ~90% grows long in every burst (Poisson arrivals).
MAX_UTILISATION = 0.9
EWMA_ALPHA = 0.3  # weight of the newest batch in a rung's cost per clip
# A rung's first batches are averaged into its own cost; after this many its surprises move
# the machine-wide level (before, they are mostly the warm-up's error for that rung).
SETTLE_BATCHES = 3


@dataclass(frozen=True)
class Rung:
    reduction: float  # nominal, as in ladder.json
    name: str  # KServe v2 / Triton model name of this rung, e.g. demo_r038
    backend: Backend
    measured: dict = field(default_factory=dict)  # accuracy / speed measured at export

    @property
    def gflops(self) -> float:
        return self.backend.meta.gflops


@dataclass(frozen=True)
class BatchRun:
    """One model call, as the metrics see it."""

    clips: int
    seconds: float
    rung: Rung
    predicted_s: float  # what the policy expected from the cost per clip before this batch


def predicted_seconds(queued_clips: int, cost_per_clip: float) -> float:
    """Time to run every queued clip on a rung that costs `cost_per_clip` seconds per clip."""
    return queued_clips * cost_per_clip


def latest_finish(backlog: Sequence[tuple[float, int]], cost_per_clip: float) -> float:
    """When the last of `backlog` — `(seconds already spent, clips)` per request, in the order
    they run, one at a time — finishes, counted from each one's arrival."""
    done, latest = 0, 0.0
    for spent, clips in backlog:
        done += clips
        latest = max(latest, spent + done * cost_per_clip)
    return latest


def newcomer_finish(clips_ahead: int, outside_s: float, clips: int, cost_per_clip: float) -> float:
    """When a request arriving now — `clips` clips, `outside_s` of decoding before they can
    run — finishes, if it runs after `clips_ahead` clips already in the server."""
    return outside_s + (clips_ahead + clips) * cost_per_clip


def keeps_up(clips_per_s: float, cost_per_clip: float, max_utilisation: float = MAX_UTILISATION) -> bool:
    """Whether a rung of this cost serves clips arriving at this rate with room to spare."""
    return clips_per_s * cost_per_clip <= max_utilisation


def ewma(previous: float, sample: float, alpha: float = EWMA_ALPHA) -> float:
    """Exponentially weighted mean: `alpha` of the new sample, the rest of the history."""
    return alpha * sample + (1 - alpha) * previous


@dataclass(frozen=True)
class RungCost:
    """What the policy knows of one rung's cost: seconds per clip, as measured when the
    machine-wide level was `level`, from `batches` of its own batches (0: the warm-up's)."""

    per_clip: float
    level: float = 1.0
    batches: int = 0


def rung_cost(rung: RungCost, level: float) -> float:
    """A rung's seconds per clip now: its own estimate, moved as the machine has moved since."""
    return rung.per_clip * level / rung.level


def learn_cost(
    costs: Sequence[RungCost],
    level: float,
    rung: int,
    per_clip: float,
    alpha: float = EWMA_ALPHA,
    settle: int = SETTLE_BATCHES,
) -> tuple[list[RungCost], float]:
    """`(costs, level)` after a batch of `rung` measured `per_clip` seconds per clip.

    The rung's estimate (where the level has moved it since its last batch) moves to the
    mean of its first `settle` batches, then by EWMA. Only a settled rung's surprise moves
    the level, by the factor its estimate moved: every other rung follows it."""
    own = costs[rung]
    now = rung_cost(own, level)
    weight = 1 / (own.batches + 1) if own.batches < settle else alpha
    learned = ewma(now, per_clip, weight)
    if own.batches >= settle:
        level *= learned / now
    costs = list(costs)
    costs[rung] = RungCost(learned, level, own.batches + 1)
    return costs, level


def choose_rung(finish: Sequence[float], target_s: float, current: int, descend_below: float = DESCEND_BELOW) -> int:
    """The rung (index, least merged first) for a batch, from each rung's predicted `finish`.

    Climb at once to the least-merged rung that meets `target_s` (the most merged one when
    none does); descend from `current` only to a rung predicting at most `descend_below *
    target_s`, else stay (unless `current` itself now misses the target and a lower rung
    meets it). The choice is a fixed point: asked again with the same finishes, it stays."""
    fits = [i for i, f in enumerate(finish) if f <= target_s]
    want = fits[0] if fits else len(finish) - 1
    if want >= current or current not in fits:
        return want
    for i in range(want, current):
        if finish[i] <= descend_below * target_s:
            return i
    return current


class LoadPolicy:
    """The rung for each batch of auto requests: `choose(demand) -> rung index`; `observe`
    feeds it each batch's measured time. Runs on the event loop (no locking)."""

    def __init__(
        self,
        costs: Sequence[float],
        target_s: float | None,
        in_flight: int = 0,
        alpha: float = EWMA_ALPHA,
        deadline: bool = False,
    ) -> None:
        self.learned = [RungCost(c) for c in costs]  # per rung, least merged first; from the warm-up
        self.level = 1.0  # the machine-wide level the rungs' estimates follow
        self.target_s, self.alpha = target_s, alpha
        self.deadline = deadline and target_s is not None  # refuse what cannot be answered in time
        self.in_flight = in_flight  # clips of the batch a new request may find running (max_batch)
        self.outside_s = 0.0  # a request's seconds outside the model (decoding, preprocessing): EWMA
        self.current = 0

    def choose(self, demand: Demand) -> int:
        if self.target_s is None:  # no target: always the least-merged rung
            return 0
        work = self.work(demand.backlog)  # the same for every rung: formed once
        finish = [
            latest_finish(work, cost) if keeps_up(demand.clips_per_s, cost) else float("inf") for cost in self.costs
        ]
        self.current = choose_rung(finish, self.target_s, self.current)
        return self.current

    def work(self, backlog: Sequence[Waiting]) -> list[tuple[float, int]]:
        """`(seconds spent, clips)` of `backlog` and of a request arriving now, in the order they
        run. A request still decoding will have spent at least a typical decoding before its
        clips run; the newcomer also waits for one full batch (`in_flight`)."""
        spent = [(w.age_s if w.decoded else max(w.age_s, self.outside_s), w.clips) for w in backlog]
        return [*spent, (self.outside_s, self.in_flight)]

    def refuse(self, demand: Demand, clips: int, rung: int | None) -> QueueFullError | None:
        """With a deadline: the refusal of a request arriving now (`clips`, on `rung`; None: auto,
        the most merged rung's cost) predicted to finish after the target; None to admit it."""
        if not self.deadline:
            return None
        cost = self.costs[-1 if rung is None else rung]
        finish = newcomer_finish(sum(w.clips for w in demand.backlog), self.outside_s, clips, cost)
        if finish <= self.target_s:
            return None
        late = finish - self.target_s
        return QueueFullError(
            f"cannot answer within the latency target ({1000 * self.target_s:.0f} ms) now: predicted "
            f"{1000 * finish:.0f} ms on the {'most merged' if rung is None else 'pinned'} rung; try again",
            reason="late",
            retry_after_s=max(1, math.ceil(late)),
        )

    def observe_outside(self, seconds: float) -> None:
        """A request's measured seconds outside the model (its decoding and preprocessing)."""
        self.outside_s = ewma(self.outside_s, seconds, self.alpha) if self.outside_s else seconds

    @property
    def costs(self) -> list[float]:
        """Each rung's seconds per clip now, least merged first."""
        return [rung_cost(r, self.level) for r in self.learned]

    def predict(self, clips: int, rung: int) -> float:
        return predicted_seconds(clips, rung_cost(self.learned[rung], self.level))

    def observe(self, rung: int, clips: int, seconds: float) -> None:
        """A batch's measured time teaches its rung its own cost (`learn_cost`)."""
        self.learned, self.level = learn_cost(self.learned, self.level, rung, seconds / clips, self.alpha)


def find_rung(rungs: Sequence[Rung], reduction: float) -> int:
    """The index of the rung whose nominal reduction is `reduction`; ValueError listing them."""
    for i, rung in enumerate(rungs):
        if abs(rung.reduction - reduction) < 1e-6:
            return i
    values = ", ".join(f"{r.reduction:g}" for r in rungs)
    raise ValueError(f"reduction must be 'auto' or one of this model's rungs: {values}")


def _entries(path: Path) -> tuple[str, list[RungEntry]] | None:
    """A ladder directory's name and entries; ModelLoadError (one line) for a directory that
    is neither a ladder nor a checkpoint, or a ladder.json that does not hold up. None for one
    model (a file, or for PyTorch a checkpoint directory or a model name)."""
    if not is_ladder(path):
        if path.is_dir() and not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory without ladder.json: serve a model file or a ladder")
        return None
    try:
        return read_ladder(path)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None


def check_served(path: str | Path, options: BackendOptions) -> None:
    """ModelLoadError (one line) where `load_rungs` would refuse `path` before opening a model —
    the directory and ladder.json rules, and what this machine cannot run (`check_request`) —
    without opening one: `sttm serve` says it and exits before the server starts."""
    path = Path(path)
    found = _entries(path)
    for file in [path] if found is None else [path / entry.file for entry in found[1]]:
        check_request(file, options)


def load_rungs(path: str | Path, options: BackendOptions) -> tuple[str, list[Rung]]:
    """Open a ladder directory (every rung, least merged first) or a single model file (a
    ladder of one rung). ModelLoadError in one line: a missing or corrupt rung, no
    ladder.json, or a rung whose labels or input spec differ from the first rung's."""
    path = Path(path)
    if (found := _entries(path)) is None:  # one model
        backend = load_backend(path, options)
        meta = backend.meta
        return meta.name, [Rung(meta.reduction, rung_name(meta.name, meta.reduction), backend)]
    name, entries = found
    rungs: list[Rung] = []
    for entry in entries:
        try:
            backend = load_backend(path / entry.file, options)
        except ModelLoadError as err:
            raise ModelLoadError(f"ladder {path}: rung {entry.reduction:g}: {err}") from None
        if rungs and (why := _mismatch(rungs[0].backend, backend)):
            raise ModelLoadError(f"ladder {path}: rung {entry.reduction:g} ({entry.file}) is refused: {why}")
        rungs.append(Rung(entry.reduction, entry.name, backend, entry.measured))
    return name, rungs


def _mismatch(first: Backend, other: Backend) -> str | None:
    """Why two rungs cannot answer for one model (None when they can)."""
    a, b = first.meta, other.meta
    if a.labels != b.labels:
        return f"its labels differ from the first rung's ({len(b.labels)} vs {len(a.labels)}: {b.labels[:3]}...)"
    if a.input_spec != b.input_spec or (a.input_name, a.output_name) != (b.input_name, b.output_name):
        return f"its input spec differs ({b.input_spec} vs {a.input_spec})"
    return None
