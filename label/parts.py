"""The output: a folder of parts, each complete or absent.

`OUT` (e.g. `labels.parquet/` or `labels.jsonl/`) holds `part-000000.parquet`,
`part-000001.parquet`, ... (JSON Lines when OUT's name ends in `.jsonl`, `.ndjson` or
`.json`). A part is written under a hidden temporary name, flushed to disk, then renamed
(`os.replace`, atomic on one file system): a kill at any moment leaves complete parts and at
most one hidden temporary, which the next run removes. pandas, polars, DuckDB and Arrow read
the folder (or `OUT/*.parquet`) as one table; they skip hidden files.

`--resume` reads the ids of the complete parts and the job skips them; a row is never written
twice by one run either (`Parts.add` drops an id it has written), so a resumed job ends with
every input exactly once.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_PART = re.compile(r"^part-(\d{6})\.(parquet|jsonl)$")


# names that promise a format these parts are not (a folder named `run.2024` is still Parquet)
NOT_WRITTEN = (".csv", ".tsv", ".txt", ".xlsx", ".xls", ".feather", ".arrow", ".orc", ".avro")


def output_format(out: str | Path) -> str:
    """`jsonl` for a name ending in one of `JSONL_SUFFIXES`, else `parquet`; ValueError for a
    name that promises another format (`labels.csv` held Parquet parts)."""
    suffix = Path(out).suffix.lower()
    if suffix in NOT_WRITTEN:
        raise ValueError(
            f"-o {out}: OUT is a folder of Parquet parts (name it .parquet) or JSON Lines parts "
            f"({', '.join(JSONL_SUFFIXES)}), not {suffix}"
        )
    return "jsonl" if suffix in JSONL_SUFFIXES else "parquet"


def complete_parts(out: Path) -> list[Path]:
    """The complete parts in `out`, in order."""
    return sorted(p for p in out.iterdir() if _PART.match(p.name)) if out.is_dir() else []


def read_columns(part: Path) -> list[str]:
    """A part's column names (a JSON Lines part: its first row's keys)."""
    if part.suffix == ".parquet":
        return pq.read_schema(part).names
    with part.open() as f:
        return list(json.loads(next((line for line in f if line.strip()), "{}")))


def read_ids(part: Path) -> list[str]:
    if part.suffix == ".parquet":
        return pq.read_table(part, columns=["id"])["id"].to_pylist()
    with part.open() as f:
        return [json.loads(line)["id"] for line in f if line.strip()]


class Parts:
    """Rows in, complete parts out: a part every `rows_per_part` rows or `seconds` seconds."""

    def __init__(
        self, out: str | Path, schema: pa.Schema, *, resume: bool, rows_per_part: int = 1000, seconds: float = 30.0
    ) -> None:
        self.out, self.schema, self.format = Path(out), schema, output_format(out)
        self.rows_per_part, self.seconds = rows_per_part, seconds
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"{self.out} is a file: OUT is a folder of parts (e.g. labels.parquet/)")
        parts = complete_parts(self.out)
        if parts and not resume:
            held = f"{len(parts)} part{'' if len(parts) == 1 else 's'}"
            raise ValueError(f"{self.out} already has {held}: --resume to finish that job, or another OUT")
        if parts and set(theirs := read_columns(parts[0])) != set(schema.names):  # one table: one set of columns
            differ = sorted(set(theirs) ^ set(schema.names))
            raise ValueError(
                f"{self.out}: its parts and this run differ in columns ({', '.join(differ)}): --resume finishes a "
                "job with the flags that started it (--timeline or not), or give another OUT"
            )
        self._made = not self.out.exists()  # by this run: `discard` takes it away again
        self.out.mkdir(parents=True, exist_ok=True)  # an OUT that cannot be made fails here, before Ray starts
        for stale in self.out.glob(".part-*.tmp"):  # what a killed run was writing
            stale.unlink()
        self.done: set[str] = {i for p in parts for i in read_ids(p)}
        self._next = max((int(_PART.match(p.name).group(1)) for p in parts), default=-1) + 1
        self._pending: list[pa.Table] = []
        self._rows = 0
        self._since = _now()

    def discard(self) -> None:
        """Remove OUT where this run made it and nothing is in it: a job that did not start
        (no Ray cluster at the address) leaves no empty folder behind."""
        if self._made and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()

    def add(self, batch: pa.Table) -> pa.Table:
        """Keep the rows of ids not yet written; write a part when one is due. Returns the rows kept."""
        ids = batch["id"].to_pylist()
        seen: set[str] = set()
        keep = [i for i, x in enumerate(ids) if not (x in self.done or x in seen or seen.add(x))]
        if len(keep) < len(ids):
            batch = batch.take(keep)
        self.done.update(batch["id"].to_pylist())
        if batch.num_rows:
            self._pending.append(batch.select(self.schema.names).cast(self.schema))
            self._rows += batch.num_rows
        if self._rows >= self.rows_per_part or (self._rows and _now() - self._since >= self.seconds):
            self.flush()
        return batch

    def flush(self) -> Path | None:
        """Write what is pending as one complete part (None when nothing is)."""
        self._since = _now()
        if not self._rows:
            return None
        data = pa.concat_tables(self._pending)
        final = self.out / f"part-{self._next:06d}.{self.format}"
        temp = self.out / f".{final.name}.tmp"
        with temp.open("wb") as f:
            if self.format == "parquet":
                pq.write_table(data, f)
            else:
                f.writelines((json.dumps(row) + "\n").encode() for row in data.to_pylist())
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
        self._next += 1
        self._pending, self._rows = [], 0
        return final


def _now() -> float:
    return time.monotonic()
