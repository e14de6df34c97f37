"""Live network sources through the whole pipeline: stale frames are dropped on purpose and
counted; a stream that fails mid-run ends the input there, every frame already captured is still
processed and written, and the run exits 2 with one line naming the source."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import as_mpegts, http_serving_live, http_serving_part

from streamer.tracks import read_track


def test_stream_dropping_midway_keeps_every_captured_frame(posecast, clip40: Path) -> None:
    out = posecast.cwd / "live.jsonl"
    with http_serving_part(clip40.read_bytes(), 0.6) as url:
        res = posecast.run(["track", url, "-o", out, "--min-score", "0", "--no-progress"])
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("posecast: error:") and url in last, res.stderr
    assert "Traceback" not in res.stderr
    meta, poses = read_track(out)
    assert meta["type"] == "meta"
    assert 0 < len(poses) < 40
    assert [p["seq"] for p in poses] == list(range(len(poses)))
    # Every frame that capture admitted reached the file: the summary counts the same frames.
    assert f"{len(poses)} frames in" in res.stderr


def test_a_video_file_over_http_is_read_whole(posecast, clip40: Path) -> None:
    # It has a length, so it is a file that happens to be remote: every frame, none dropped.
    out = posecast.cwd / "remote.jsonl"
    with http_serving_part(clip40.read_bytes(), 1.0) as url:
        res = posecast.run(["track", url, "-o", out, "--min-score", "0", "--no-progress"])
    assert res.returncode == 0, res.stderr
    assert "dropped" not in res.stderr
    _, poses = read_track(out)
    assert [p["seq"] for p in poses] == list(range(40))


def test_live_stream_drops_stale_frames_and_counts_them(posecast, clip40: Path) -> None:
    """A live stream (no length) served faster than real time: its frames come at once, and only
    the newest of such a run goes (capture's `_NewestFrame`), the others dropped as stale and
    reported; each result is still in order. Its end is the stream dropping, an error."""
    out = posecast.cwd / "live.jsonl"
    with http_serving_live(as_mpegts(clip40, posecast.cwd / "live.ts")) as url:
        res = posecast.run(["track", url, "-o", out, "--min-score", "0", "--no-progress"])
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"posecast: error: stream {url} dropped after 40 frames")
    _, poses = read_track(out)
    found = re.search(r"(\d+) stale frames dropped to stay live", res.stderr)
    assert found, res.stderr
    assert len(poses) + int(found.group(1)) == 40
    assert [p["seq"] for p in poses] == list(range(len(poses)))
    # The newest-frame policy never goes back in time (the frames the decoder still held when
    # the stream dropped come out without a time: null).
    media = [p["t_media"] for p in poses if p["t_media"] is not None]
    assert poses and int(found.group(1)) > 0 and media == sorted(media)
