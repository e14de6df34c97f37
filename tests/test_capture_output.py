"""The capture and output stages run in this process, fed and read by the test: when a file starts
being read, when the publishing endpoint is announced, and how a file that cannot be finished is
reported. No timing is asserted."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from engines.errors import InputError, OutputLostError, PosecastError, ReaderGoneError
from engines.model_file import default_model_config
from streamer.channels import Inbox, Outbox
from streamer.config import load_pipeline_config
from streamer.packets import END, FRAME, RESULT, START, EndPacket, FramePacket, ResultPacket, RunSummary, StepStats, pack, unpack
from streamer.protocol import END_OF_INPUT, end_message
from streamer.ring import FrameRing, RingSpec, unlink_ring
from streamer.sources import SourceInfo
from streamer.stages.base import Control, Reporter
from streamer.tracks import read_track, track_end

WAIT_MS = 30_000          # generous: only a broken stage takes this long


@pytest.fixture
def endpoint() -> Iterator[str]:
    """An ipc:// endpoint in a short folder (Unix socket paths must stay short)."""
    folder = tempfile.mkdtemp(prefix="pcs")
    yield f"ipc://{folder}/s"
    shutil.rmtree(folder, ignore_errors=True)


def _control() -> Control:
    return Control(stop=threading.Event(), abort=threading.Event(), ready=threading.Semaphore(0))


class _Reports:
    """Stands in for the pipe to the parent: keeps what a stage reports, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def send(self, report: tuple[str, str, Any]) -> None:
        self.sent.append(report)

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.sent]


class _Running:
    """`stage.run()` on a thread; what it raised, if anything."""

    def __init__(self, stage: Any) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(stage,), daemon=True)
        self.thread.start()

    def _run(self, stage: Any) -> None:
        try:
            stage.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self) -> None:
        self.thread.join(timeout=WAIT_MS / 1000)
        assert not self.thread.is_alive(), "the stage did not end"


def _recv(inbox: Inbox, kind: str) -> dict[str, Any]:
    msg = inbox.recv(WAIT_MS)
    assert msg is not None and msg[0] == kind, msg
    return msg[1]


# --- capture --------------------------------------------------------------------------------

def test_a_file_is_read_only_once_the_stages_after_it_are_ready(clip40: Path, endpoint: str) -> None:
    """Frames read while the network loads would be processed before the run's clock starts (the
    output stage's, once it is ready), and a short file's summary would claim thousands of frames
    a second. So a file, as a live source, is read only once every stage after it is ready."""
    from streamer.stages.capture import CaptureStage

    ring = f"posecast-test-{os.getpid()}-{secrets.token_hex(4)}"
    control = _control()
    ctx = zmq.Context()
    inbox = Inbox(ctx, endpoint)
    capture = CaptureStage(str(clip40), load_pipeline_config(), ring, threading.Semaphore(0), endpoint, control,
                           Reporter("capture", None), stages_after=3)
    running = _Running(capture)
    try:
        assert not _recv(inbox, START)["info"]["live"]        # open, its ring sized
        control.mark_ready()
        control.mark_ready()                                   # two of three stages ready
        assert inbox.recv(500) is None, "a frame was read before every stage was ready"
        control.mark_ready()
        assert _recv(inbox, FRAME)["seq"] == 0
    finally:
        control.abort.set()
        running.join()
        inbox.close()
        ctx.term()
        unlink_ring(ring)
    assert running.error is None


def test_an_unforeseen_source_error_still_ends_the_input_first(clip40: Path, endpoint: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An error that is not an InputError (FFmpeg's frame conversion failing with EAGAIN on a machine
    out of threads) aborted the run: the frames already captured were lost (68 of 99 written). It
    ends the input as a dropped stream does, and is reported after the frames in flight."""
    import streamer.stages.capture as capture_module
    from streamer.sources import open_source

    class Failing:
        def __init__(self, src: Any) -> None:
            self.src, self.info, self.corrupt = src, src.info, 0

        def frames(self) -> Iterator[Any]:
            for i, frame in enumerate(self.src.frames()):
                if i == 3:
                    raise BlockingIOError(11, "Resource temporarily unavailable")
                yield frame

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            self.src.close()

    monkeypatch.setattr(capture_module, "open_source", lambda spec, config: Failing(open_source(spec, config)))
    ring = f"posecast-test-{os.getpid()}-{secrets.token_hex(4)}"
    ctx = zmq.Context()
    inbox = Inbox(ctx, endpoint)
    capture = capture_module.CaptureStage(str(clip40), load_pipeline_config(), ring, threading.Semaphore(0),
                                          endpoint, _control(), Reporter("capture", None))
    running = _Running(capture)
    try:
        _recv(inbox, START)
        assert [_recv(inbox, FRAME)["seq"] for _ in range(3)] == [0, 1, 2]
        end = EndPacket.from_dict(_recv(inbox, END))
        running.join()
    finally:
        inbox.close()
        ctx.term()
        unlink_ring(ring)
    assert (end.reason, end.frames) == ("source failed", 3)
    assert isinstance(running.error, BlockingIOError) and getattr(running.error, "drained", False)


# --- output ---------------------------------------------------------------------------------

INFO = SourceInfo("clip", "clip.mp4", False, 160, 120, 30.0, 3)


def _output_stage(endpoint: str, control: Control, reports: _Reports, tracks: list[Path] = (),
                  publish: bool = False, overlay: Path | None = None, wait_subscribers: int = 0) -> Any:
    from streamer.stages.output import OutputStage

    config = load_pipeline_config()
    publish_config = dataclasses.replace(config.publish, enabled=publish, bind="127.0.0.1", port=0,
                                         wait_subscribers=wait_subscribers)
    return OutputStage(default_model_config(), {"name": "test", "trained": True}, list(tracks), overlay,
                       publish_config, config.coordinates, threading.Semaphore(0), endpoint, control,
                       Reporter("output", reports), progress=False)  # type: ignore[arg-type]


def _start(ring_name: str = "unused") -> dict[str, Any]:
    ring = {"name": ring_name, "slots": 4, "height": INFO.height, "width": INFO.width}
    return {"info": asdict(INFO), "ring": ring, "backend": "test"}


@pytest.fixture
def ring_name() -> Iterator[str]:
    """A frame ring for an overlay to draw on, as the capture stage makes it (black frames)."""
    name = f"posecast-test-{os.getpid()}-{secrets.token_hex(4)}"
    ring = FrameRing(RingSpec(name, 4, INFO.height, INFO.width), create=True)
    yield name
    ring.close()
    unlink_ring(name)


def _result(seq: int) -> dict[str, Any]:
    mc = default_model_config()
    j, r = mc.skeleton.num_joints, len(mc.roots)
    rng = np.random.default_rng(seq)
    frame = FramePacket(seq, 0, INFO.height, INFO.width, 1.7e9 + seq / 30, seq / 30, 1.0)
    return ResultPacket(frame, True, 0.9, rng.uniform(10, 100, (j, 2)), np.full(j, 0.8), np.zeros((r, j, 3)),
                        rng.normal(0, 0.3, (j, 3)), np.array([0.0, 0.0, 3.0]), track=0).to_dict()


def _end(frames: int) -> dict[str, Any]:
    return {"reason": "end of input", "frames": frames, "dropped": 0, "corrupt": 0, "reconnects": 0, "timings": {}}


def test_no_endpoint_is_announced_for_a_source_that_never_opened(endpoint: str) -> None:
    """The capture could not open its source (a camera that is not there): the run is aborted
    before any START, and its one line is that error, not 'publishing on ...' first."""
    control, reports = _control(), _Reports()
    control.abort.set()
    running = _Running(_output_stage(endpoint, control, reports, publish=True))
    running.join()
    assert running.error is None and "publishing" not in reports.kinds()


@contextlib.contextmanager
def _fed_output_stage(endpoint: str, control: Control, reports: _Reports,
                      **stage: Any) -> Iterator[tuple[Outbox, _Running]]:
    """An output stage running in a thread, and the socket that feeds it as the align stage
    would; stopped and closed whatever the test did."""
    ctx = zmq.Context()
    upstream = Outbox(ctx, endpoint)
    running = _Running(_output_stage(endpoint, control, reports, **stage))
    try:
        yield upstream, running
    finally:
        control.abort.set()
        running.join()
        upstream.close(linger_ms=0)
        ctx.term()


def test_the_end_of_the_input_crosses_the_wire_whole() -> None:
    """Each stage reads the END packet, adds to it and sends it on as msgpack: nothing is lost on
    the way, and its timings come back as typed stats."""
    end = EndPacket("end of input", 12, dropped=2, corrupt=1, reconnects=3,
                    timings={"capture": {"read": StepStats(12, 1.5, 1.25, 3.0)}}, network_runs=14, searches=2,
                    switches=1, tracks=2, shot_cuts=1)
    kind, body = unpack(pack(END, end.to_dict()))
    assert kind == END and EndPacket.from_dict(body) == end


def test_the_summary_holds_the_chains_counts_and_the_outputs_timings(endpoint: str) -> None:
    control, reports = _control(), _Reports()
    with _fed_output_stage(endpoint, control, reports) as (upstream, running):
        upstream.send(START, _start())
        for seq in range(3):
            upstream.send(RESULT, _result(seq))
        upstream.send(END, {**_end(3), "corrupt": 1, "searches": 2,
                            "timings": {"capture": {"read": {"n": 3, "mean": 1.0, "p50": 1.0, "p95": 1.0}}}})
        running.join()
    assert running.error is None
    (summary,) = [payload for kind, _, payload in reports.sent if kind == "summary"]
    assert isinstance(summary, RunSummary)
    assert (summary.frames, summary.found, summary.end.corrupt, summary.end.searches) == (3, 3, 1, 2)
    assert summary.end.timings["capture"]["read"] == StepStats(3, 1.0, 1.0, 1.0)
    assert summary.end.timings["output"]["output"].n == 3


def test_the_endpoint_is_announced_once_the_source_is_open(endpoint: str) -> None:
    control, reports = _control(), _Reports()
    with _fed_output_stage(endpoint, control, reports, publish=True) as (upstream, running):
        upstream.send(START, _start())
        assert control.ready.acquire(timeout=WAIT_MS / 1000)          # ready for frames
        assert "publishing" in reports.kinds()                         # announced by then
        upstream.send(END, _end(0))
        running.join()
    assert running.error is None
    announced = [payload for kind, _, payload in reports.sent if kind == "publishing"]
    assert len(announced) == 1 and announced[0].startswith("tcp://127.0.0.1:")
    assert reports.kinds().index("publishing") < reports.kinds().index("summary")


def test_an_output_stage_without_an_overlay_never_imports_the_overlay_module(endpoint: str, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The overlay's module brings in PyAV: a run that writes tracks alone paid for importing it
    at each input's start in a batch. (Where it is imported, it now fails.)"""
    monkeypatch.setitem(sys.modules, "streamer.overlay", None)      # `import streamer.overlay` raises ImportError
    control, reports = _control(), _Reports()
    track = tmp_path / "t.jsonl"
    with _fed_output_stage(endpoint, control, reports, tracks=[track]) as (upstream, running):
        _three_frames(upstream, running)
    assert running.error is None
    assert "summary" in reports.kinds() and track.read_text().count("\n") == 1 + 3 + 1


def _three_frames(upstream: Any, running: Any, start: dict[str, Any] | None = None) -> None:
    """Feeds the output stage a start, three results and the end, and waits for it to finish."""
    upstream.send(START, start or _start())
    for seq in range(3):
        upstream.send(RESULT, _result(seq))
    upstream.send(END, _end(3))
    running.join()


def test_a_track_file_the_disk_cannot_take_is_reported_once(endpoint: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An .npz is written at the input's end; on a full disk that fails, and the stage's error is
    that one line: no warning about the same file from the closing on the way out."""
    def full(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    control, reports = _control(), _Reports()
    jsonl, npz = tmp_path / "t.jsonl", tmp_path / "t.npz"
    with _fed_output_stage(endpoint, control, reports, tracks=[jsonl, npz]) as (upstream, running):
        _three_frames(upstream, running)
    assert isinstance(running.error, InputError)
    assert f"cannot write track file '{npz}': No space left on device" in str(running.error)
    assert "while closing" not in capsys.readouterr().err
    assert "summary" not in reports.kinds()
    assert jsonl.read_text().count("\n") == 1 + 3 + 1 and not npz.exists()   # the other file is whole, its end too


def _fails_at(monkeypatch: pytest.MonkeyPatch, writer: type, nth: int) -> None:
    """`writer`'s files stop taking frames (a full disk) at the `nth` frame each is given."""
    real_write, calls = writer.write, {}

    def fills_up(self: Any, frame: Any, message: Any = None) -> None:
        calls[self.path] = calls.get(self.path, 0) + 1
        if calls[self.path] >= nth:
            raise InputError(f"cannot write track file '{self.path}': No space left on device (free some disk space)")
        real_write(self, frame, message)

    monkeypatch.setattr(writer, "write", fills_up)


def _frames(upstream: Any, n: int, start: dict[str, Any] | None = None, end: bool = True) -> None:
    """Feeds the output stage a start, `n` results and (`end`) the input's end."""
    upstream.send(START, start or _start())
    for seq in range(n):
        upstream.send(RESULT, _result(seq))
    if end:
        upstream.send(END, _end(n))


def test_an_output_that_fails_is_closed_and_the_others_get_every_frame(endpoint: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A .csv that stops taking frames (a full disk) at the second of five: it keeps its whole
    first frame, the .jsonl and .npz beside it get all five (the run went on to the input's end),
    and the one error names the failed file and what it holds. (The run ended at that frame, and
    the others held two of the five.)"""
    from streamer.tracks import CsvTrackWriter

    _fails_at(monkeypatch, CsvTrackWriter, 2)
    control, reports = _control(), _Reports()
    csv, jsonl, npz = tmp_path / "t.csv", tmp_path / "t.jsonl", tmp_path / "t.npz"
    with _fed_output_stage(endpoint, control, reports, tracks=[csv, jsonl, npz]) as (upstream, running):
        _frames(upstream, 5)
        running.join()
    assert isinstance(running.error, PosecastError) and running.error.exit_code == 2
    assert str(running.error) == (f"cannot write track file '{csv}': No space left on device (free some disk space); "
                                  f"it holds only the first frame of 5, and '{jsonl}' and '{npz}' got all 5 frames")
    assert "summary" not in reports.kinds()                # the one line says what was written
    assert csv.read_text().count("\n") == 1 + 1             # the header and the first frame, whole
    assert jsonl.read_text().count("\n") == 1 + 5 + 1       # and its end: it got every frame
    assert track_end(csv) is None and track_end(jsonl)["poses"] == track_end(npz)["poses"] == 5
    with np.load(npz) as arrays:
        assert arrays["seq"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("live", [False, True], ids=["file", "live"])
def test_a_run_that_publishes_goes_on_past_a_recording_that_failed(endpoint: str, tmp_path: Path, live: bool,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """`posecast run CAMERA -o rec.jsonl` whose disk fills up: the subscribers get every pose and
    the stream ends as the input did; a live run says so at once (it may go on for hours), a
    file's run in its last line only. Both end with the one line."""
    from streamer.tracks import JsonlTrackWriter

    _fails_at(monkeypatch, JsonlTrackWriter, 2)
    control, reports = _control(), _Reports()
    track = tmp_path / "rec.jsonl"
    start = {**_start(), "info": {**asdict(INFO), "live": live}}
    with _subscribed_output_stage(endpoint, control, reports, tracks=[track], start=start) as (upstream, running, sub):
        for seq in range(3):
            upstream.send(RESULT, _result(seq))
        got = [_next_message(sub) for _ in range(3)]        # the third came after the failure
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        upstream.send(END, _end(3))
        running.join()
        got += _received(sub)
    assert [m["seq"] for m in got[:3]] == [0, 1, 2] and got[-1]["type"] == "end"
    assert (got[-1]["reason"], got[-1]["poses"]) == ("end_of_input", 3)
    said = f"cannot write track file '{track}': No space left on device (free some disk space)"
    assert warned == ([f"{said}; it holds only the first frame; the run goes on with the other outputs"] if live else [])
    assert str(running.error) == f"{said}; it holds only the first frame of 3, and the published stream got all 3 frames"
    assert track.read_text().count("\n") == 1 + 1


def test_when_every_output_has_failed_the_run_ends_at_once(endpoint: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing left to write to: the run ends on the frame where the last output failed, without
    waiting for the input's end, and its one line names both, with what each holds."""
    from streamer.tracks import CsvTrackWriter, JsonlTrackWriter

    _fails_at(monkeypatch, JsonlTrackWriter, 2)
    _fails_at(monkeypatch, CsvTrackWriter, 4)
    control, reports = _control(), _Reports()
    jsonl, csv = tmp_path / "t.jsonl", tmp_path / "t.csv"
    with _fed_output_stage(endpoint, control, reports, tracks=[jsonl, csv]) as (upstream, running):
        _frames(upstream, 6, end=False)
        running.join()                                      # no END was sent: it ended by itself
    assert isinstance(running.error, PosecastError) and running.error.exit_code == 2
    assert str(running.error) == (
        f"cannot write track file '{jsonl}': No space left on device (free some disk space); it holds only the first "
        f"frame; and 1 other output failed too: cannot write track file '{csv}': No space left on device (free some "
        f"disk space); it holds the first 3 frames")
    assert jsonl.read_text().count("\n") == 1 + 1 and csv.read_text().count("\n") == 1 + 3


def test_an_output_that_failed_before_the_run_was_aborted_is_said_beside_the_run_s_line(
        endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another stage failed (the run is aborted) after a track failed while the other went on:
    the track's failure is this stage's error, marked to go beside the run's line, not lost
    behind it."""
    from streamer.tracks import CsvTrackWriter

    _fails_at(monkeypatch, CsvTrackWriter, 2)
    control, reports = _control(), _Reports()
    csv, jsonl = tmp_path / "t.csv", tmp_path / "t.jsonl"
    with _fed_output_stage(endpoint, control, reports, tracks=[csv, jsonl]) as (upstream, running):
        _frames(upstream, 3, end=False)
        _wait_for_lines(jsonl, 1 + 3)
        control.abort.set()                   # the pipeline, when a stage dies
        running.join()
    assert getattr(running.error, "also", False) and running.error.exit_code == 2
    assert str(running.error) == (f"cannot write track file '{csv}': No space left on device (free some disk space); "
                                  "it holds only the first frame")


@contextlib.contextmanager
def _subscribed_output_stage(endpoint: str, control: Control, reports: _Reports, start: dict[str, Any] | None = None,
                             **stage: Any) -> Iterator[tuple[Outbox, _Running, zmq.Socket]]:
    """`_fed_output_stage`, publishing, started, with a subscriber to its poses and end message
    that it waited for (so it misses nothing)."""
    with _fed_output_stage(endpoint, control, reports, publish=True, wait_subscribers=1, **stage) as (upstream, running):
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        try:
            upstream.send(START, start or _start())
            deadline = time.monotonic() + WAIT_MS / 1000
            while "publishing" not in reports.kinds():
                assert time.monotonic() < deadline, "the stage never published"
                time.sleep(0.01)
            (where,) = [payload for kind, _, payload in reports.sent if kind == "publishing"]
            sub.connect(where)
            for prefix in (b"pose.", b"end."):
                sub.setsockopt(zmq.SUBSCRIBE, prefix)
            assert control.ready.acquire(timeout=WAIT_MS / 1000)      # it saw the subscriber
            yield upstream, running, sub
        finally:
            sub.close()
            ctx.term()


def _next_message(sub: zmq.Socket) -> dict[str, Any]:
    """The subscriber's next message."""
    from streamer.publish import decode

    assert sub.poll(WAIT_MS), "nothing came"
    return decode(sub.recv_multipart()[1])


def _received(sub: zmq.Socket) -> list[dict[str, Any]]:
    """What the subscriber got, up to and with the end message (or a wait with nothing more)."""
    from streamer.publish import decode

    got: list[dict[str, Any]] = []
    while (not got or got[-1]["type"] != "end") and sub.poll(WAIT_MS):
        got.append(decode(sub.recv_multipart()[1]))
    return got


@pytest.mark.parametrize("reason, published", [("end of input", "end_of_input"), ("stopped", "stopped"),
                                               ("source failed", "failed"), ("inference failed", "failed"),
                                               ("alignment failed", "failed")])
def test_the_stream_s_last_message_says_why_it_ended(endpoint: str, reason: str, published: str) -> None:
    control, reports = _control(), _Reports()
    with _subscribed_output_stage(endpoint, control, reports) as (upstream, running, sub):
        for seq in range(3):
            upstream.send(RESULT, _result(seq))
        upstream.send(END, {**_end(3), "reason": reason})
        running.join()
        got = _received(sub)
    assert running.error is None
    assert [m["type"] for m in got] == ["pose"] * 3 + ["end"]
    assert {k: got[-1][k] for k in ("source", "reason", "poses", "last_seq")} == {
        "source": "clip", "reason": published, "poses": 3, "last_seq": 2}


def test_a_run_that_fails_in_the_output_stage_or_elsewhere_ends_its_stream_as_failed(
        endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The output stage's own failure (a named pipe's reader went away at the second frame, which
    ends the run as a shell pipeline's end does: that frame was published first), then a run
    aborted because another stage died, with no END: both say "failed". (A track on a full disk
    no longer ends a run that publishes: test_a_run_that_publishes_goes_on_past_a_recording_that_failed.)"""
    from streamer.tracks import JsonlTrackWriter

    real_write = JsonlTrackWriter.write

    def reader_goes(self: Any, frame: Any, message: Any = None) -> None:
        if frame.seq == 1:
            raise ReaderGoneError(f"cannot write track file '{self.path}': the program reading the pipe went away, "
                                  "so the run was stopped")
        real_write(self, frame, message)

    monkeypatch.setattr(JsonlTrackWriter, "write", reader_goes)
    control, reports = _control(), _Reports()
    with tempfile.TemporaryDirectory() as folder:
        with _subscribed_output_stage(endpoint, control, reports, tracks=[Path(folder) / "t.jsonl"]) as (
                upstream, running, sub):
            for seq in range(3):
                upstream.send(RESULT, _result(seq))
            running.join()
            got = _received(sub)
    assert isinstance(running.error, ReaderGoneError)
    assert [m["type"] for m in got] == ["pose"] * 2 + ["end"]
    assert (got[-1]["reason"], got[-1]["poses"], got[-1]["last_seq"]) == ("failed", 2, 1)

    control, reports = _control(), _Reports()
    with _subscribed_output_stage(endpoint, control, reports) as (upstream, running, sub):
        upstream.send(RESULT, _result(0))
        assert sub.poll(WAIT_MS)
        control.abort.set()                   # the pipeline, when a stage dies
        running.join()
        got = _received(sub)
    assert running.error is None
    assert [m["type"] for m in got] == ["pose", "end"] and got[-1]["reason"] == "failed"


def _wait_for_lines(path: Path, n: int) -> None:
    deadline = time.monotonic() + WAIT_MS / 1000
    while not (path.exists() and path.read_bytes().count(b"\n") >= n):
        assert time.monotonic() < deadline, f"{path} never got {n} lines"
        time.sleep(0.01)


def test_outputs_whose_folder_is_removed_mid_run_are_named_in_one_line(endpoint: str, tmp_path: Path, ring_name: str,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`rm -rf` of the output folder while the run writes into it: the run fails (exit 2) with one
    line naming every output that was in it, rather than a summary naming files that are gone;
    the track elsewhere is finished."""
    control, reports = _control(), _Reports()
    folder, side = tmp_path / "out", tmp_path / "side.jsonl"
    folder.mkdir()
    lost = [folder / "a.jsonl", folder / "a.csv", folder / "a.npz"]
    with _fed_output_stage(endpoint, control, reports, tracks=[*lost, side],
                           overlay=folder / "a.mp4") as (upstream, running):
        upstream.send(START, _start(ring_name))
        for seq in range(3):
            upstream.send(RESULT, _result(seq))
        _wait_for_lines(side, 1 + 3)
        shutil.rmtree(folder)
        upstream.send(END, _end(3))
        running.join()
    assert isinstance(running.error, OutputLostError) and running.error.exit_code == 2
    # The video first: it is finished before the tracks record their end.
    assert running.error.paths == [str(p) for p in [folder / "a.mp4", *lost]]
    assert "while closing" not in capsys.readouterr().err
    assert "summary" not in reports.kinds()
    assert side.read_text().count("\n") == 1 + 3 + 1 and not folder.exists()


class _EncoderOnAFullDisk:
    """An overlay's encoder whose packets stop fitting on the disk after `room` frames."""

    def __init__(self, real: Any, room: int) -> None:
        self.real, self.room = real, room
        self.codec_context = real.codec_context

    def encode(self, frame: Any) -> Any:
        self.room -= 1
        if self.room < 0:
            raise OSError(28, "No space left on device", "a.mp4")      # as PyAV raises it
        return self.real.encode(frame)


def test_a_failed_overlay_is_removed_before_the_npz_is_written(endpoint: str, tmp_path: Path, ring_name: str,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A disk that fills up under the overlay video: the unfinished video is removed at once, so
    the .npz, written whole as it closes, has the room the video took; the track goes on to the
    input's end. One line, in the tracks' words. (The run ended at the overlay's failure, and
    the .npz held the frames up to it.)"""
    from streamer.overlay import OverlayWriter

    start = OverlayWriter._start

    def start_on_a_full_disk(self: OverlayWriter) -> Any:
        container, stream = start(self)
        self._stream = _EncoderOnAFullDisk(stream, room=2)
        return container, self._stream

    monkeypatch.setattr(OverlayWriter, "_start", start_on_a_full_disk)
    overlay, npz = tmp_path / "a.mp4", tmp_path / "a.npz"
    savez = np.savez

    def savez_while_room(*args: Any, **kwargs: Any) -> None:
        if overlay.exists():                      # the video still takes the disk's last room
            raise OSError(28, "No space left on device")
        savez(*args, **kwargs)

    monkeypatch.setattr(np, "savez", savez_while_room)
    control, reports = _control(), _Reports()
    with _fed_output_stage(endpoint, control, reports, tracks=[npz], overlay=overlay) as (upstream, running):
        _frames(upstream, 5, _start(ring_name))
        running.join()
    assert str(running.error) == (f"cannot write overlay video '{overlay}': No space left on device (free some disk "
                                  f"space); the unfinished video is removed, and '{npz}' got all 5 frames")
    assert running.error.exit_code == 2
    assert capsys.readouterr().err == ""
    assert not overlay.exists()
    with np.load(npz) as arrays:
        assert arrays["seq"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("failed", ["another stage", "this stage"])
def test_a_run_that_fails_before_the_first_frame_says_nothing_of_the_overlay(endpoint: str, tmp_path: Path,
                                                                           ring_name: str, failed: str,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The inference failed at its first frame (the run is aborted), or this stage failed on
    its first result: the run's one line says why. "no frame reached the overlay video" came
    before it as a second line."""
    from streamer.stages.output import OutputStage

    if failed == "this stage":
        def fails(*_args: Any, **_kwargs: Any) -> None:
            raise InputError("the first frame could not be written")

        monkeypatch.setattr(OutputStage, "_write", fails)
    control, reports = _control(), _Reports()
    overlay = tmp_path / "a.mp4"
    with _fed_output_stage(endpoint, control, reports, overlay=overlay) as (upstream, running):
        upstream.send(START, _start(ring_name))
        assert control.ready.acquire(timeout=WAIT_MS / 1000)          # the overlay is open: frames may come
        if failed == "this stage":
            upstream.send(RESULT, _result(0))
        else:
            control.abort.set()                                        # as the parent does
        running.join()
    assert (running.error is not None) == (failed == "this stage")
    assert "overlay video" not in caplog.text, caplog.text
    assert not overlay.exists()


def test_a_phone_clip_reaches_the_outputs_upright(posecast, tmp_path: Path) -> None:
    """A clip stored landscape with a display rotation of 90 degrees: the capture turns each frame
    on its one copy into shared memory, so the track's image size and the overlay are upright,
    and the marker stored in the top left corner shows at the bottom left."""
    import av
    import numpy as np

    from streamer.tracks import read_track

    path = tmp_path / "phone.mp4"
    stored = np.zeros((144, 192, 3), np.uint8)
    stored[:48, :48] = 255
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 192, 144, "yuv420p"
        s.set_display_rotation(90)
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(stored, format="bgr24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    track, overlay = tmp_path / "t.jsonl", tmp_path / "o.mp4"
    res = posecast.run(["track", path, "-o", track, "--overlay", overlay, "--min-score", "0", "--no-progress"])
    assert res.returncode == 0, res.stderr
    meta, poses = read_track(track)
    assert meta["image_size"] == [144, 192] and len(poses) == 5
    assert all(p["image_size"] == [144, 192] for p in poses)
    with av.open(str(overlay)) as c:
        picture = next(c.decode(video=0)).to_ndarray(format="bgr24")
    assert picture.shape[:2] == (192, 144)
    h, w = picture.shape[:2]
    quadrants = {"top left": picture[:h // 2, :w // 2], "top right": picture[:h // 2, w // 2:],
                 "bottom left": picture[h // 2:, :w // 2], "bottom right": picture[h // 2:, w // 2:]}
    assert max(quadrants, key=lambda q: quadrants[q].mean()) == "bottom left"


# --- how the tracks record the end ----------------------------------------------------------

def test_a_live_pipes_end_gives_the_streams_counts_not_what_its_slow_reader_took(
        endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live run's named pipe whose reader takes nothing until the run has ended: the pipe holds
    a part of the frames (64 KiB), the others wait for the reader (or are left out). The end says,
    as the publisher's does, how many poses the stream had and its last seq, so that the reader
    can tell what it missed (it said 48 poses, last_seq 199, of 200 frames, of which the reader
    got 108)."""
    from streamer.tracks import JsonlTrackWriter

    real_end, ended = JsonlTrackWriter.end, threading.Event()

    def end(self: Any, message: dict[str, Any]) -> None:
        real_end(self, message)
        ended.set()

    monkeypatch.setattr(JsonlTrackWriter, "end", end)
    fifo = tmp_path / "p.jsonl"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as f:
            ended.wait(WAIT_MS / 1000)          # the pipe full until the end is recorded
            got.extend(f)

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    start = _start()
    start["info"]["live"] = True
    control, reports = _control(), _Reports()
    n = 300                                     # about 300 KiB of pose lines
    with _fed_output_stage(endpoint, control, reports, tracks=[fifo]) as (upstream, running):
        _frames(upstream, n, start)
        running.join()
    reading.join(WAIT_MS / 1000)
    assert running.error is None
    messages = [json.loads(line) for line in got]
    assert messages[-1] == end_message("clip", END_OF_INPUT, n, n - 1)
    assert 0 < sum(m["type"] == "pose" for m in messages) <= n


def test_the_tracks_record_their_end_only_once_the_bvh_and_the_overlay_are_finished(
        endpoint: str, tmp_path: Path, ring_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .bvh takes seconds to finish (5 s for 30,000 frames), a video its encoder's last frames:
    a run killed then must leave tracks without an end, which `track --skip-done` tracks again,
    not tracks that say the input was done beside an unfinished video or no .bvh."""
    from streamer.bvh import BvhTrackWriter
    from streamer.overlay import OverlayWriter

    jsonl, csv, bvh, overlay = tmp_path / "t.jsonl", tmp_path / "t.csv", tmp_path / "t.bvh", tmp_path / "t.mp4"
    seen: dict[str, Any] = {}

    def looking(cls: type, name: str) -> None:
        real_close = cls.close

        def close(self: Any, *args: Any, **kwargs: Any) -> None:
            seen.setdefault(name, (track_end(jsonl), track_end(csv)))
            real_close(self, *args, **kwargs)

        monkeypatch.setattr(cls, "close", close)

    looking(BvhTrackWriter, "bvh")
    looking(OverlayWriter, "overlay")
    control, reports = _control(), _Reports()
    with _fed_output_stage(endpoint, control, reports, tracks=[jsonl, csv, bvh],
                           overlay=overlay) as (upstream, running):
        _frames(upstream, 3, _start(ring_name))
        running.join()
    assert running.error is None
    assert seen == {"bvh": (None, None), "overlay": (None, None)}
    assert track_end(jsonl) == track_end(csv) == end_message("clip", END_OF_INPUT, 3, 2)
    assert bvh.is_file() and overlay.is_file()


def test_a_bvh_the_disk_cannot_take_leaves_the_tracks_beside_it_without_their_end(
        endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The .bvh is written through a rename: on a full disk an earlier run's .bvh (one stopped
    by Ctrl-C) stays at the path, and a .jsonl that said the input was done would have
    `track --skip-done` take that old .bvh for this run's."""
    from streamer.bvh import BvhTrackWriter

    def full(self: Any) -> None:
        raise InputError(f"cannot write track file '{self.path}': No space left on device (free some disk space)")

    monkeypatch.setattr(BvhTrackWriter, "close", full)
    jsonl, bvh = tmp_path / "t.jsonl", tmp_path / "t.bvh"
    bvh.write_text("HIERARCHY\n")                      # an earlier run's
    control, reports = _control(), _Reports()
    with _fed_output_stage(endpoint, control, reports, tracks=[jsonl, bvh]) as (upstream, running):
        _frames(upstream, 3)
        running.join()
    assert isinstance(running.error, InputError) and "No space left on device" in str(running.error)
    assert track_end(jsonl) is None and len(read_track(jsonl)[1]) == 3
