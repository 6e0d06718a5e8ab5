"""What is refused before FFmpeg reads a container: absurd durations and sample tables."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

import media.decode
from media import Limits, VideoError, probe, read_frames
from tests.media.clips import no_decoding, probe_memory
from tests.service.fuzz import declare_samples, flat_h264


def test_absurd_durations_and_sample_counts_are_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(media.decode, "_decode", no_decoding)
    buf = io.BytesIO()  # two frames 100,000 s apart
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for pts in (0, 15 * 100_000):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = pts
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(VideoError) as err:
        read_frames(io.BytesIO(buf.getvalue()), np.arange(2), 32)
    assert err.value.code == "too_long" and "100000 s" in str(err.value)
    # A run-length sample table: 20 million samples in the bytes of one. FFmpeg would build a
    # 450 MiB index while opening it; the tables are read first, by the duration limit.
    path = tmp_path / "samples.mp4"
    path.write_bytes(declare_samples(flat_h264(64, 64), 20_000_000))
    with pytest.raises(VideoError) as err:
        read_frames(path, np.arange(2), 32)
    assert err.value.code == "too_long" and "20000000 samples" in str(err.value)
    code, grown_mib = probe_memory(path)
    assert code == "too_long" and grown_mib < 64, grown_mib
    one_frame = flat_h264(64, 64)  # the bound: max_duration_s x 1000 fps
    assert probe(io.BytesIO(declare_samples(one_frame, 10_000)), Limits(max_duration_s=10)).width == 64
    with pytest.raises(VideoError, match="10001 samples"):
        probe(io.BytesIO(declare_samples(one_frame, 10_001)), Limits(max_duration_s=10))


def test_an_index_after_the_media_is_seen_in_the_first_bytes(tmp_path):
    """What a stream reads as it arrives needs the index first (service.feed refuses the rest)."""
    from media.container import index_after_media
    from models.synth import write_mp4
    from tests.service.conftest import faststart

    written = tmp_path / "w.mp4"
    write_mp4(written, np.zeros((4, 32, 32, 3), np.uint8))  # as PyAV writes it: moov at the end
    assert index_after_media(written.read_bytes()[:4096])
    assert not index_after_media(faststart(written, tmp_path / "f.mp4").read_bytes()[:4096])
    assert not index_after_media(b"\x1a\x45\xdf\xa3" + bytes(60))  # not an MP4
    assert not index_after_media(written.read_bytes()[:20])  # the head ends inside ftyp: cannot tell
