"""A ladder of merge ratios: the same weights exported at several reductions, one validated
model per rung, listed in `DIR/ladder.json`. Plain Python (no torch, no onnx): the service
reads ladders too.

```json
{"format": "sttm-ladder", "name": "demo", "rungs": [
  {"reduction": 0.0, "name": "demo_r000", "file": "demo_r000.onnx", "gflops": 0.258,
   "precision": "fp32", "measured": {"top1": 0.93, "clips_per_s": 41.0, ...}}, ...]}
```

Rungs are sorted least merged first. A rung's `name` (`{model}_r{percent:03d}`) is also its
Triton model name and its KServe v2 model name (`@` and `.` are not valid in Triton names).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime.metadata import json_error

LADDER_FILE = "ladder.json"
FORMAT = "sttm-ladder"


@dataclass(frozen=True)
class RungEntry:
    reduction: float  # nominal fraction of GFLOPs saved, as asked at export
    name: str  # `{model}_r{percent:03d}`
    file: str  # relative to the ladder directory
    gflops: float  # multiply-adds per clip, G
    precision: str = "fp32"
    measured: dict = field(default_factory=dict)  # at export with --eval-data: top1, clips_per_s, ...


def rung_name(model: str, reduction: float) -> str:
    """`demo`, 0.38 -> `demo_r038`: a valid Triton / KServe model name for the rung."""
    return f"{model}_r{round(reduction * 100):03d}"


def parse_reductions(text: str) -> list[float]:
    """`0,0.25,0.38,0.5` -> sorted distinct values in [0, 1) that name distinct rungs (whole
    percents apart); ValueError in one line otherwise (a value given twice too)."""
    try:
        given = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--reduction takes numbers separated by commas, got {text!r}") from None
    values = sorted(set(given))
    if not values or not all(0 <= v < 1 for v in values):
        raise ValueError(f"--reduction values must be in [0, 1), got {text!r}")
    if len(values) != len(given):
        raise ValueError(f"--reduction names a value twice, got {text!r}")
    names = [rung_name("m", v) for v in values]
    if len(set(names)) != len(names):
        raise ValueError(f"--reduction values must be at least a whole percent apart, got {text!r}")
    return values


def write_ladder(directory: str | Path, model: str, rungs: list[RungEntry]) -> Path:
    path = Path(directory) / LADDER_FILE
    entries = [asdict(r) for r in sorted(rungs, key=lambda r: r.reduction)]
    path.write_text(json.dumps({"format": FORMAT, "name": model, "rungs": entries}, indent=2) + "\n")
    return path


def is_ladder(path: str | Path) -> bool:
    return (Path(path) / LADDER_FILE).is_file()


def read_ladder(directory: str | Path) -> tuple[str, list[RungEntry]]:
    """The model name and its rungs, least merged first; ValueError in one line naming the
    file and what is wrong (a rung's file must exist; its content is checked when opened)."""
    path = Path(directory) / LADDER_FILE
    if not path.is_file():
        raise ValueError(f"{directory}: no {LADDER_FILE} (`sttm export MODEL --reduction 0,0.25,0.5 -o DIR` writes it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {FORMAT!r}")
        rungs = [RungEntry(**r) for r in data["rungs"]]
        name = str(data["name"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a valid ladder ({json_error(err)})") from None
    if not rungs:
        raise ValueError(f"{path}: the ladder has no rungs")
    rungs.sort(key=lambda r: r.reduction)
    if len({r.reduction for r in rungs}) != len(rungs):
        raise ValueError(f"{path}: two rungs have the same reduction")
    for r in rungs:
        if not (Path(directory) / r.file).is_file():
            raise ValueError(f"ladder {directory}: rung {r.reduction:g}: its model file {r.file} is missing")
    return name, rungs
