"""Text files a user writes: UTF-8 with or without a BOM; anything else named in one line."""

from __future__ import annotations

import pytest

from models.errors import CheckpointError
from models.text import read_labels, read_text


def test_a_bom_is_dropped_and_other_encodings_are_named(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"\xef\xbb\xbfpath,label\r\n")
    assert read_text(path) == "path,label\n"
    path.write_bytes("caf\xe9.mp4,a\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"train.csv: not UTF-8 text \(byte 0xe9 at 3\)$"):
        read_text(path)


def test_labels_are_one_a_line_in_order_and_an_empty_or_missing_file_is_refused(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"\xef\xbb\xbfabseiling\r\n\r\nair drumming\r\n")
    assert read_labels(path) == ("abseiling", "air drumming")
    path.write_text("\n \n")
    with pytest.raises(CheckpointError, match="labels.txt: no labels in file"):
        read_labels(path)
    with pytest.raises(CheckpointError, match="missing.txt: cannot read labels"):
        read_labels(tmp_path / "missing.txt")
