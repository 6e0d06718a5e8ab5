"""INPUT arguments -> videos with ids: files, folders, globs, manifests; each id once."""

from __future__ import annotations

import json

import pytest

from label.inputs import Item, expand


@pytest.fixture
def tree(tmp_path):
    for name in ("a/1.mp4", "a/b/2.MKV", "a/b/notes.txt", "c/3.webm"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_a_folder_is_searched_recursively_for_videos_in_name_order(tree):
    paths = [i.path for i in expand([str(tree / "a")])]
    assert paths == [str(tree / "a/1.mp4"), str(tree / "a/b/2.MKV")]


def test_globs_files_and_folders_mix_and_each_id_comes_once(tree):
    items = expand([str(tree / "**/*.webm"), str(tree / "a/1.mp4"), str(tree), str(tree / "missing.mp4")])
    assert [i.id for i in items] == [
        str(tree / "c/3.webm"), str(tree / "a/1.mp4"), str(tree / "a/b/2.MKV"), str(tree / "missing.mp4"),
    ]  # fmt: skip
    assert all(i.id == i.path for i in items)  # without a manifest, a video's id is its path


def test_manifests_give_ids_and_resolve_relative_paths(tree):
    (tree / "list.csv").write_text("id,path\nfirst,a/1.mp4\n,c/3.webm\n")
    (tree / "list.jsonl").write_text(json.dumps({"url": "http://127.0.0.1:9/v.mp4", "id": 7}) + "\n\n")
    items = expand([str(tree / "list.csv"), str(tree / "list.jsonl")])
    assert items == [
        Item("first", str(tree / "a/1.mp4")),
        Item(str(tree / "c/3.webm"), str(tree / "c/3.webm")),
        Item("7", "http://127.0.0.1:9/v.mp4"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [("name\nx.mp4\n", "row 2 has no 'path' or 'url'"), ("not json\n", "not a JSON object")],
)
def test_a_bad_manifest_is_one_line(tmp_path, content, message):
    manifest = tmp_path / ("m.csv" if "," in content or "name" in content else "m.jsonl")
    manifest.write_text(content)
    with pytest.raises(ValueError, match=message):
        expand([str(manifest)])


def test_a_spreadsheet_manifest_with_a_bom_is_read_and_one_not_in_utf8_is_one_line(tree):
    """Excel's "CSV UTF-8" starts with a BOM: its header read as '\\ufeffpath' refused every row."""
    (tree / "excel.csv").write_bytes(b"\xef\xbb\xbfpath,id\r\na/1.mp4,first\r\n")
    (tree / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"path": "c/3.webm"}).encode() + b"\n")
    assert expand([str(tree / "excel.csv"), str(tree / "bom.jsonl")]) == [
        Item("first", str(tree / "a/1.mp4")), Item(str(tree / "c/3.webm"), str(tree / "c/3.webm"))
    ]  # fmt: skip
    (tree / "latin1.csv").write_bytes("path\ncafé.mp4\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.csv: not UTF-8 text \(byte 0xe9 at 8\)$"):
        expand([str(tree / "latin1.csv")])


def test_a_file_whose_name_looks_like_a_pattern_is_that_file(tmp_path):
    """'match [1080p].mp4' was read as a pattern (one of 1, 0, 8, p) and 'matches nothing'."""
    (tmp_path / "match [1080p].mp4").write_bytes(b"x")
    (tmp_path / "match 1.mp4").write_bytes(b"x")
    assert [i.path for i in expand([str(tmp_path / "match [1080p].mp4")])] == [str(tmp_path / "match [1080p].mp4")]
    assert [i.path for i in expand([str(tmp_path / "match [0-9].mp4")])] == [str(tmp_path / "match 1.mp4")]


def test_a_glob_that_matches_nothing_and_an_empty_folder_are_errors(tmp_path):
    with pytest.raises(ValueError, match="matches nothing"):
        expand([str(tmp_path / "*.mp4")])
    with pytest.raises(ValueError, match="no video files"):
        expand([str(tmp_path)])


def test_one_id_for_two_videos_is_refused(tree):
    """The second video was silently dropped: one row stood for two videos."""
    (tree / "dup.csv").write_text("id,path\nx,a/1.mp4\nx,c/3.webm\n")
    with pytest.raises(
        ValueError, match=f"dup.csv: id 'x' names two videos: {tree / 'a/1.mp4'} and {tree / 'c/3.webm'}$"
    ):
        expand([str(tree / "dup.csv")])
    (tree / "same.csv").write_text("id,path\nx,a/1.mp4\nx,a/1.mp4\n")  # the same video twice: once
    assert expand([str(tree / "same.csv")]) == [Item("x", str(tree / "a/1.mp4"))]
