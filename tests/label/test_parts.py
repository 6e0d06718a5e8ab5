"""Output parts: complete or absent, readable as one table, resumable, each id once."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from label.parts import Parts, complete_parts
from label.rows import error_row, schema, table


def rows(ids, status="ok"):
    return table([error_row(str(i), f"/v/{i}.mp4", status, "") for i in ids], timeline=False)


def test_parts_appear_complete_and_read_as_one_table(tmp_path):
    out = tmp_path / "labels.parquet"
    parts = Parts(out, schema(False), resume=False, rows_per_part=3)
    parts.add(rows([1, 2]))
    assert complete_parts(out) == []  # under the part size: nothing yet, nothing half-written
    parts.add(rows([3, 4]))
    assert [p.name for p in complete_parts(out)] == ["part-000000.parquet"]
    parts.add(rows([5]))
    parts.flush()
    assert [p.name for p in complete_parts(out)] == ["part-000000.parquet", "part-000001.parquet"]
    assert not list(out.glob(".*"))  # no temporary left
    data = pq.read_table(out)  # the folder, as pandas / polars / DuckDB read it
    assert sorted(data["id"].to_pylist()) == ["1", "2", "3", "4", "5"] and data.schema.equals(schema(False))


def test_an_id_is_written_once_and_resume_skips_what_out_has(tmp_path):
    out = tmp_path / "labels.jsonl"
    parts = Parts(out, schema(False), resume=False, rows_per_part=100)
    kept = parts.add(rows([1, 2, 2, 1, 3]))
    assert kept["id"].to_pylist() == ["1", "2", "3"]
    assert parts.add(rows([3, 4]))["id"].to_pylist() == ["4"]
    parts.flush()
    (out / ".part-000001.jsonl.tmp").write_text('{"id": "half')  # what a killed run left
    with pytest.raises(ValueError, match="already has 1 part: --resume"):
        Parts(out, schema(False), resume=False)
    again = Parts(out, schema(False), resume=True)
    assert again.done == {"1", "2", "3", "4"} and not list(out.glob(".*.tmp"))
    again.add(rows([4, 5]))
    again.flush()
    lines = [json.loads(line) for p in complete_parts(out) for line in p.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == ["1", "2", "3", "4", "5"]
    assert [p.name for p in complete_parts(out)] == ["part-000000.jsonl", "part-000001.jsonl"]


@pytest.mark.parametrize("name", ["labels.parquet", "labels.jsonl"])
def test_resume_with_other_columns_is_refused(tmp_path, name):
    """Resumed with --timeline, a job without it wrote parts the folder could not be read as one table with."""
    out = tmp_path / name
    parts = Parts(out, schema(False), resume=False)
    parts.add(rows([1]))
    parts.flush()
    with pytest.raises(
        ValueError, match=r"differ in columns \(segments, windows\): --resume finishes a job with the flags"
    ):
        Parts(out, schema(True), resume=True)
    assert Parts(out, schema(False), resume=True).done == {"1"}


def test_a_part_is_due_after_its_seconds_too(tmp_path):
    parts = Parts(tmp_path / "o.parquet", schema(False), resume=False, rows_per_part=1000, seconds=0.0)
    parts.add(rows([1]))
    assert len(complete_parts(tmp_path / "o.parquet")) == 1


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "o.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        Parts(tmp_path / "o.parquet", schema(False), resume=False)


def test_a_name_that_promises_another_format_is_refused(tmp_path):
    """`-o labels.csv` wrote a folder of Parquet parts named labels.csv."""
    with pytest.raises(ValueError, match=r"-o .*labels.csv: OUT is a folder of Parquet parts .* not .csv$"):
        Parts(tmp_path / "labels.csv", schema(False), resume=False)
    assert not (tmp_path / "labels.csv").exists()
    assert Parts(tmp_path / "run.2024", schema(False), resume=False).format == "parquet"  # a dotted folder name
    assert Parts(tmp_path / "l.ndjson", schema(False), resume=False).format == "jsonl"


def test_timeline_rows_nest_segments_and_windows():
    row = {**error_row("a", "a.mp4", "ok", ""), "labels": ["x"], "scores": [0.5],
           "segments": [{"label": "x", "start_s": 0.0, "end_s": 2.0, "score": 0.5}],
           "windows": [{"start_s": 0.0, "end_s": 2.0, "labels": ["x"], "scores": [0.5]}]}  # fmt: skip
    data = table([row], timeline=True)
    assert data.schema.field("segments").type == pa.list_(schema(True).field("segments").type.value_type)
    assert data.to_pylist()[0]["segments"][0]["label"] == "x"


def test_discard_removes_only_an_out_this_run_made_and_left_empty(tmp_path):
    """`sttm label DIR -o OUT --address HOST:PORT` with no cluster there left an empty OUT folder."""
    made = Parts(tmp_path / "new.parquet", schema(False), resume=False)
    made.discard()
    assert not (tmp_path / "new.parquet").exists()
    (tmp_path / "theirs.parquet").mkdir()
    Parts(tmp_path / "theirs.parquet", schema(False), resume=False).discard()
    assert (tmp_path / "theirs.parquet").is_dir()  # the user's folder stays
    written = Parts(tmp_path / "written.parquet", schema(False), resume=False, rows_per_part=1)
    written.add(rows([1]))
    written.discard()
    assert complete_parts(tmp_path / "written.parquet")
