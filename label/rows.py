"""The output's rows: one per video, as an Arrow schema (Parquet parts and JSON Lines alike).

`status` is `ok` or the error code the HTTP API answers with for the same input (a
`media.VideoError` code such as `not_a_video`, `corrupt`, `too_long`, `timeout`; `too_large`
for a file over the upload limit; `io_error` for a file that cannot be read, as `sttm
predict` says; `internal` for anything unexpected, as the server's 500). The answer columns
are null on an error row.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

PREDICTION_COLUMNS = [
    ("model", pa.string()),
    ("reduction", pa.float64()),
    ("precision", pa.string()),
    ("labels", pa.list_(pa.string())),  # top-k, best first
    ("scores", pa.list_(pa.float64())),  # their probabilities (views averaged after softmax)
    ("duration_s", pa.float64()),
    ("decode_ms", pa.float64()),  # decoding + preprocessing of this video
    ("inference_ms", pa.float64()),  # the model call this video was batched into (its windows' sum: --timeline)
]
SEGMENT = pa.struct(
    [("label", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()), ("score", pa.float64())]
)
WINDOW = pa.struct(
    [
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("labels", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
    ]
)
TIMELINE_COLUMNS = [("segments", pa.list_(SEGMENT)), ("windows", pa.list_(WINDOW))]
KEY_COLUMNS = [("id", pa.string()), ("path", pa.string()), ("status", pa.string()), ("message", pa.string())]

SCHEMA = pa.schema(KEY_COLUMNS + PREDICTION_COLUMNS)
TIMELINE_SCHEMA = pa.schema(KEY_COLUMNS + PREDICTION_COLUMNS + TIMELINE_COLUMNS)


def schema(timeline: bool) -> pa.Schema:
    return TIMELINE_SCHEMA if timeline else SCHEMA


def error_row(item_id: str, path: str, code: str, message: str) -> dict:
    """A row that says why a video has no answer (every answer column null)."""
    return {"id": item_id, "path": path, "status": code, "message": message}


def table(rows: Sequence[dict], timeline: bool) -> pa.Table:
    """Rows (dicts; missing columns are null) -> a table of the output schema."""
    return pa.Table.from_pylist(list(rows), schema=schema(timeline))
