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

import pytest
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


def test_ctrl_c_while_a_silent_stream_is_being_opened_ends_the_run_at_once(posecast) -> None:
    """Opening a stream that answers nothing waits `source.open_timeout_s` inside FFmpeg, where
    no signal reaches. The run is stopped anyway, as one stopped before its first frame (it
    reported a connection error, exit 2, or with a longer timeout waited it out and warned of
    frames in flight and a killed stage)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    config = posecast.cwd / "open60.yaml"
    config.write_text("source:\n  open_timeout_s: 60\n")
    out = posecast.cwd / "never.jsonl"
    try:
        proc = _start(posecast, ["run", f"http://127.0.0.1:{srv.getsockname()[1]}/s.ts", "--config", config,
                                 "--port", _free_port(), "-o", out, "--no-progress"])
        time.sleep(3.0)                     # the network is loaded; the source is still being opened
        assert proc.poll() is None, Path(proc.stderr_path).read_text()
        err = _stop(proc, timeout=20.0)     # well inside the 60 s the open would otherwise wait
    finally:
        srv.close()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "posecast: interrupted (SIGINT) before the first frame; no file was written", err
    assert "WARNING" not in err and not out.exists(), err


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
    # The person jumps back to where they started: a new shot, a new id, no filter across the jump.
    period = 1 / 30                                                 # clip40's rate (a dropped frame leaves no seq)
    ids = [(p["t_media"], p["people"][0]["id"]) for p in poses if p["people"]]
    first_pass = {i for t, i in ids if t < 40 * period - 1e-6}
    second_pass = [i for t, i in ids if 40 * period - 1e-6 <= t < 80 * period - 1e-6]
    assert len(first_pass) == 1 and second_pass and second_pass[0] not in first_pass, ids


class _TwoFrames:
    """A file of two frames, for a reader that loops it."""

    def __init__(self, at_end=lambda: None) -> None:
        from streamer.sources import SourceInfo

        self.info = SourceInfo("f", "f.mp4", False, 32, 24, 30.0, 2)
        self.at_end = at_end

    def frames(self):
        import numpy as np

        from streamer.sources import Frame

        for i in range(2):
            yield Frame(np.zeros((24, 32, 3), np.uint8), i, time.time(), i / 30)
        self.at_end()

    def close(self) -> None:
        pass


def test_a_loop_restart_dropped_from_the_mailbox_still_starts_a_shot() -> None:
    """Live, the reader keeps only the newest frame: a restart's first frame replaced before it
    was taken hands its new shot on to the frame that replaced it."""
    import threading

    from streamer.stages.base import Control
    from streamer.stages.capture import _NewestFrame, _Reopen

    def reopen():
        return _TwoFrames(at_end=newest.quit.set)      # one loop restart, then stop

    control = Control(stop=threading.Event(), abort=threading.Event())
    newest = _NewestFrame()
    newest.fill_from(_TwoFrames(), control, False, _Reopen(reopen, loop=True))
    frame, _ = newest.take(timeout_s=0)
    assert newest.dropped >= 2 and frame.index == 1 and frame.new_shot


class _Connection:
    """A live stream's connection: `burst` frames at once (what FFmpeg read while opening it),
    then `paced` ones `gap_s` apart; media times from `t0`, at 2 fps. Then it drops, or ends the
    test (`at_end`)."""

    def __init__(self, burst: int, paced: int, gap_s: float, t0: float = 0.0, backlog: bool = True,
                 at_end=None) -> None:
        from streamer.sources import SourceInfo

        self.info = SourceInfo("net", "http://x/live.ts", True, 32, 24, 2.0, None)
        self.burst, self.paced, self.gap_s, self.t0, self.at_end = burst, paced, gap_s, t0, at_end
        self.backlog_at_open = backlog

    def frames(self):
        import numpy as np

        from engines.errors import InputError
        from streamer.sources import Frame

        for i in range(self.burst + self.paced):
            if i >= self.burst:
                time.sleep(self.gap_s)
            yield Frame(np.zeros((24, 32, 3), np.uint8), i, time.time(), self.t0 + i / 2)
        if self.at_end is not None:
            self.at_end()
            return
        raise InputError("stream http://x/live.ts dropped (the connection dropped)")

    def close(self) -> None:
        pass


def _read_all(first, reopen=None):
    """What a fast sender takes from the reader, and how many frames it dropped."""
    import threading

    from streamer.stages.base import Control
    from streamer.stages.capture import _NewestFrame, _Reopen

    control = Control(stop=threading.Event(), abort=threading.Event())
    newest = _NewestFrame()
    policy = _Reopen(reopen, reconnect=True) if reopen is not None else None
    reader = threading.Thread(target=newest.fill_from, args=(first, control, False, policy), daemon=True)
    reader.start()
    taken = []
    while not newest.finished or newest.frame is not None:
        got = newest.take(timeout_s=0.05)
        if got is not None:
            taken.append(got[0])
    reader.join(10)
    assert newest.error is None, newest.error
    return taken, newest.dropped


def test_a_streams_backlog_at_open_is_dropped_as_stale_not_sent_at_once() -> None:
    """Frames FFmpeg read while opening a stream decode at once: 8 here, 4 s of video. A fast
    sender took nearly all of them, and published seconds of motion in a fraction of one. Now
    only the newest of them goes, and the others are stale, and counted. Frames at the sender's
    pace all go."""
    conn = _Connection(burst=8, paced=3, gap_s=0.6, at_end=lambda: None)
    taken, dropped = _read_all(conn)
    assert [f.index for f in taken] == [7, 8, 9, 10] and dropped == 7
    # A camera, or a stream that does not open with a backlog, keeps its first frames.
    taken, dropped = _read_all(_Connection(burst=0, paced=3, gap_s=0.6, backlog=False, at_end=lambda: None))
    assert [f.index for f in taken] == [0, 1, 2] and dropped == 0


class _Misstated(_Connection):
    """MJPEG over HTTP as FFmpeg sees it: a stated rate (2 fps here) that is not what comes (20),
    and no media time."""

    def frames(self):
        import numpy as np

        from streamer.sources import Frame

        for i in range(60):
            time.sleep(0.05)
            yield Frame(np.zeros((24, 32, 3), np.uint8), i, time.time(), None)


def test_a_stream_faster_than_its_stated_rate_is_held_back_for_a_second_at_most() -> None:
    """Its frames all come sooner than half the stated period after the one before: as a backlog
    would. Held back until one came at the stated pace, it gave a frame or two in 3 s; the hold
    ends a second after the connection's first frame."""
    taken, dropped = _read_all(_Misstated(burst=0, paced=0, gap_s=0.0))
    late = [f.index for f in taken if f.index >= 30]           # 1.5 s in, well after the hold
    assert len(late) >= 15 and len(taken) + dropped == 60, ([f.index for f in taken], dropped)


def test_a_reconnected_stream_is_a_new_shot_whose_media_time_runs_on() -> None:
    """The stream's clock starts again with each connection (1.4 s after 8.0 s): the media time
    runs on by the time it was away instead, and the first frame after it starts a new shot."""
    opened = []

    def reopen():
        opened.append(1)
        return _Connection(burst=0, paced=3, gap_s=0.6, t0=1.4, backlog=False, at_end=lambda: None)

    taken, _ = _read_all(_Connection(burst=0, paced=3, gap_s=0.6, t0=7.0, backlog=False), reopen)
    media = [f.t_media for f in taken]
    assert len(opened) == 1 and len(taken) == 6, media
    assert all(b > a for a, b in zip(media, media[1:])) and media[3] - media[2] > 0.5 + 0.6, media
    assert [f.new_shot for f in taken] == [False, False, False, True, False, False]


# --- a source that comes back different ----------------------------------------------------------

class _DroppingSource:
    """A live source that gives two frames, then fails as a stream that hung up does."""

    def __init__(self) -> None:
        from streamer.sources import SourceInfo

        self.info = SourceInfo("net", "tcp://x", True, 320, 240, 30.0, None)
        self.closed = 0

    def frames(self):
        import numpy as np

        from engines.errors import InputError
        from streamer.sources import Frame

        for i in range(2):
            yield Frame(np.zeros((240, 320, 3), np.uint8), i, time.time(), i / 30)
        raise InputError("stream tcp://x ended (the connection dropped)")

    def close(self) -> None:
        self.closed += 1


def test_a_source_back_at_another_size_ends_the_run_instead_of_being_retried() -> None:
    """Reopening cannot make a stream that came back at another frame size fit the ring: that
    error ends the reader (and so the run) at the first reopen, where other failures are retried."""
    import threading

    from streamer.stages.base import Control
    from streamer.stages.capture import SourceChangedError, _NewestFrame, _Reopen

    opened = []

    def reopen():
        opened.append(1)
        raise SourceChangedError("'tcp://x' came back at 160x128, not 320x240; restart posecast to follow the new size")

    control = Control(stop=threading.Event(), abort=threading.Event())
    newest = _NewestFrame()
    src = _DroppingSource()
    reader = threading.Thread(target=newest.fill_from, args=(src, control, False, _Reopen(reopen, reconnect=True)))
    reader.start()
    reader.join(timeout=20)          # the first reopen comes after a 0.5 s wait; retries wait longer
    still_retrying = reader.is_alive()
    newest.quit.set()
    reader.join(timeout=20)
    assert not still_retrying and len(opened) == 1, "the size change was retried"
    assert isinstance(newest.error, SourceChangedError) and "160x128, not 320x240" in str(newest.error)
    assert newest.finished and src.closed >= 1


def test_reopen_refuses_another_size_with_an_error_that_is_not_retried(monkeypatch) -> None:
    from engines.errors import InputError
    from streamer.config import load_pipeline_config
    from streamer.stages import capture as capture_module
    from streamer.stages.capture import CaptureStage, SourceChangedError

    small = _DroppingSource()
    small.info = type(small.info)("net", "tcp://x", True, 160, 128, 30.0, None)
    monkeypatch.setattr(capture_module, "open_source", lambda spec, cfg, reopened=False: small)
    stage = CaptureStage("tcp://x", load_pipeline_config(), "ring", None, "inproc://x",  # type: ignore[arg-type]
                         None, None)  # type: ignore[arg-type]
    with pytest.raises(SourceChangedError, match=r"came back at 160x128, not 320x240; restart posecast") as err:
        stage._reopen((240, 320))
    assert isinstance(err.value, InputError) and err.value.exit_code == 2 and small.closed == 1


def test_a_stream_back_at_another_size_ends_with_one_line_and_exit_2(posecast, clip40: Path, clip90: Path) -> None:
    # The stream is 320x240 until it drops; it comes back at 160x120.
    import http.server

    from conftest import _serving

    first, later = as_mpegts(clip90, posecast.cwd / "a.ts"), as_mpegts(clip40, posecast.cwd / "b.ts")
    served = []

    class Changing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            self.wfile.write(later if served else first)
            served.append(1)
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    out = posecast.cwd / "live.jsonl"
    with _serving(Changing) as port:
        r = posecast.run(["run", f"http://127.0.0.1:{port}/live.ts", "--port", _free_port(), "-o", out,
                          "--min-score", "0", "--no-progress"], timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "still cannot reopen" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("posecast: error:") and "came back at 160x120, not 320x240" in last, r.stderr
    assert sum(line.startswith("posecast: error:") for line in r.stderr.splitlines()) == 1, r.stderr
    _, poses = read_track(out)                         # what came before the drop is kept
    assert poses and [p["seq"] for p in poses] == list(range(len(poses)))


def test_ctrl_c_while_a_pipe_track_waits_for_its_reader_ends_as_an_interruption(posecast, clip40: Path) -> None:
    """`-o poses.jsonl` made with mkfifo, its reader never started: the wait is said, and Ctrl-C
    ends the run as a stop (130), not as an error, saying the pipe got nothing."""
    fifo = posecast.cwd / "poses.jsonl"
    os.mkfifo(fifo)
    proc = _start(posecast, ["track", clip40, "-o", fifo, "--min-score", "0", "--no-progress"])
    _stderr_until(proc, "waiting for a program to read the named pipe")
    err = _stop(proc)
    assert proc.returncode == 130, err
    assert "nothing was written to the named pipe" in err and "error" not in err, err
    assert fifo.is_fifo()
