"""Live operation that keeps going: a stream that drops is reopened with backoff and a log line,
a file can loop, and a source that never comes back is retried (with growing waits) until the
user stops the run. No timing is asserted beyond "it got there within a generous timeout"."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

from conftest import as_mpegts, http_serving_live

from streamer.tracks import read_track


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stderr_until(proc, pattern: str, timeout: float = 60.0) -> None:
    """Wait until the run has logged `pattern` (stderr is read only after it ends: poll a file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, Path(proc.stderr_path).read_text()):
            return
        assert proc.poll() is None, f"posecast ended early: {Path(proc.stderr_path).read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"no '{pattern}' in stderr within {timeout:.0f} s: {Path(proc.stderr_path).read_text()}")


def _start(posecast, args: list) -> object:
    """A running posecast whose stderr goes to a file the test can watch as the run goes on."""
    err = posecast.cwd / f"stderr-{time.monotonic_ns()}.txt"
    proc = posecast.start(args, start_new_session=True, stderr=open(err, "w"))
    proc.stderr_path = err
    return proc


def _stop(proc, timeout: float = 30.0) -> str:
    """Ctrl-C to the group; then the runner's checks: no process, ring or socket folder left."""
    from conftest import assert_no_leaks

    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=timeout)
    err = Path(proc.stderr_path).read_text()
    assert_no_leaks(proc.pid, proc.posecast_tag, Path(proc.posecast_tmpdir), err)
    return err


def test_a_dropping_stream_is_reopened_with_a_log_line(posecast, clip40: Path) -> None:
    # A live stream (no length; a video file over HTTP is read as a file) that hangs up each time.
    out = posecast.cwd / "live.jsonl"
    with http_serving_live(as_mpegts(clip40, posecast.cwd / "live.ts")) as url:
        proc = _start(posecast, ["run", url, "--port", _free_port(), "-o", out, "--min-score", "0", "--no-progress"])
        _stderr_until(proc, r"source reopened \(reconnect 2\)")
        err = _stop(proc)
    assert proc.returncode == 130, err
    assert "; reconnecting" in err and "Traceback" not in err
    assert re.search(r"the source was reopened \d+ times", err), err
    _, poses = read_track(out)
    assert [p["seq"] for p in poses] == list(range(len(poses)))     # one stream, numbered on


def test_a_source_that_stays_away_is_retried_until_stopped(posecast, clip40: Path) -> None:
    out = posecast.cwd / "live.jsonl"
    with http_serving_live(as_mpegts(clip40, posecast.cwd / "live.ts")) as url:
        proc = _start(posecast, ["run", url, "--port", _free_port(), "-o", out, "--min-score", "0", "--no-progress"])
        _stderr_until(proc, r"frames? .*|reconnecting", timeout=60)
    # The server is gone now: every attempt fails, and the waits grow.
    _stderr_until(proc, r"still cannot reopen the source .*next try in 2\.0 s")
    err = _stop(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    read_track(out)                                   # what came before is intact


def test_run_loop_plays_a_file_again_with_media_time_running_on(posecast, clip40: Path) -> None:
    out = posecast.cwd / "loop.jsonl"
    proc = _start(posecast, ["run", clip40, "--loop", "--port", _free_port(), "-o", out, "--min-score", "0",
                             "--no-progress"])
    deadline = time.monotonic() + 60
    while (not out.exists() or out.read_bytes().count(b"\n") < 60) and time.monotonic() < deadline:
        assert proc.poll() is None, Path(proc.stderr_path).read_text()
        time.sleep(0.05)
    err = _stop(proc)
    assert proc.returncode == 130, err
    _, poses = read_track(out)
    assert len(poses) > 40                                          # past the end of the 40 frames
    media = [p["t_media"] for p in poses]
    assert all(b > a for a, b in zip(media, media[1:])), media      # the loop's time runs on
