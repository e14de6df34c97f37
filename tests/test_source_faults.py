"""A live source that fails mid-run: the input ends there, every frame already captured is still
processed and written, and the run exits 2 with one line naming the source."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.tracks import read_track


@pytest.fixture
def dropping_stream(clip40: Path) -> Iterator[str]:
    """An HTTP URL that serves 60% of the clip and then hangs up (Content-Length says more)."""
    data = clip40.read_bytes()

    class HalfBody(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) * 6 // 10])
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HalfBody)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/live.mp4"
    finally:
        server.shutdown()
        server.server_close()


def test_stream_dropping_midway_keeps_every_captured_frame(posecast, dropping_stream: str) -> None:
    out = posecast.cwd / "live.jsonl"
    res = posecast.run(["track", dropping_stream, "-o", out, "--min-score", "0", "--no-progress", "--stats"])
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("posecast: error:") and dropping_stream in last, res.stderr
    assert "Traceback" not in res.stderr
    meta, poses = read_track(out)
    assert meta["type"] == "meta"
    assert 0 < len(poses) < 40
    assert [p["seq"] for p in poses] == list(range(len(poses)))
    # Every frame that capture admitted reached the file: the summary counts the same frames.
    assert f"{len(poses)} frames in" in res.stderr
