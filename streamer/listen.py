"""`posecast listen`: subscribe to a pose stream, show it, or record it to a track file.

Shows, about once a second: the message rate, the pipeline latency (t_publish - t_capture, from
the publisher's clock), the delivery delay (receive time - t_publish; meaningful when both ends
share a clock, i.e. on one machine), the people count and a small text drawing of the 2D skeleton.

Anything may publish on the port it connects to: messages that are not Posecast's are skipped
and counted, never fatal. Ctrl-C, SIGTERM and SIGHUP all end it in order, the recording complete.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import zmq

from engines.errors import InputError
from streamer.process import STOP_SIGNALS
from streamer.protocol import META_TOPIC, SCHEMA_VERSION, PersonPose, frame_from_message
from streamer.publish import decode

log = logging.getLogger(__name__)


@dataclass
class StreamStats:
    """Rolling figures over the last `window` pose messages."""

    window: int = 120
    arrivals: deque = field(init=False)
    pipeline_ms: deque = field(init=False)
    delivery_ms: deque = field(init=False)
    received: int = 0
    gaps: int = 0                       # seq numbers skipped: messages this subscriber lost
    last_seq: int | None = None
    skip_reasons: Counter = field(default_factory=Counter)   # messages that were not Posecast's, by reason
    # A replay (its meta says so): its t_capture are the recording's, so t_publish - t_capture is
    # the time since the recording, not a latency.
    replayed: bool = False

    def __post_init__(self) -> None:
        self.arrivals = deque(maxlen=self.window)
        self.pipeline_ms = deque(maxlen=self.window)
        self.delivery_ms = deque(maxlen=self.window)

    def add(self, msg: dict[str, Any], t_recv: float) -> None:
        self.received += 1
        self.arrivals.append(t_recv)
        if msg.get("t_publish") is not None:
            if not self.replayed:
                self.pipeline_ms.append((msg["t_publish"] - msg["t_capture"]) * 1000.0)
            self.delivery_ms.append((t_recv - msg["t_publish"]) * 1000.0)
        seq = msg.get("seq")
        if self.last_seq is not None and seq is not None and seq > self.last_seq + 1:
            self.gaps += seq - self.last_seq - 1
        self.last_seq = seq

    @property
    def skipped(self) -> int:
        """Messages that were not Posecast's (see `parse_message`)."""
        return sum(self.skip_reasons.values())

    def skip(self, reason: str) -> None:
        self.skip_reasons[reason] += 1

    def skip_reason(self) -> str:
        """The commonest reason a message was skipped (and how many other reasons there were)."""
        (reason, _), *others = self.skip_reasons.most_common()
        return reason + (f", and {len(others)} other reason(s)" if others else "")

    def rate(self) -> float:
        if len(self.arrivals) < 2:
            return 0.0
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else 0.0

    def line(self) -> str:
        def p50(d: deque) -> str:
            return f"{np.median(d):.1f}" if d else "-"

        pipeline = "n/a (a replay)" if self.replayed else f"{p50(self.pipeline_ms)} ms"
        return (f"{self.received} msgs  {self.rate():5.1f}/s  pipeline p50 {pipeline}  "
                f"delivery p50 {p50(self.delivery_ms)} ms  lost {self.gaps}"
                + (f"  skipped {self.skipped} (not Posecast)" if self.skipped else ""))


def text_skeleton(msg: dict[str, Any], parents: list[int], cols: int = 40, rows: int = 16) -> str:
    """The first person's 2D joints drawn in a cols x rows character box."""
    people = msg.get("people") or []
    if not people:
        return "(nobody)"
    pts = np.asarray(people[0]["joints_2d"], dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.maximum(hi - lo, 1e-6)
    scale = min((cols - 1) / span[0], (rows - 1) * 2.0 / span[1])   # characters are ~2x tall
    grid = [[" "] * cols for _ in range(rows)]
    cells = np.round((pts - lo) * np.array([scale, scale / 2.0])).astype(int)
    cells = np.clip(cells, 0, [cols - 1, rows - 1])
    for j, p in enumerate(parents):
        if p < 0:
            continue
        for t in np.linspace(0.0, 1.0, 8):
            x, y = np.round(cells[p] + t * (cells[j] - cells[p])).astype(int)
            if grid[y][x] == " ":
                grid[y][x] = "."
    for x, y in cells:
        grid[y][x] = "o"
    return "\n".join("".join(r).rstrip() for r in grid)


def tcp_port(endpoint: str) -> int | None:
    """The port number of a tcp:// endpoint; None for another transport, or a port that is not
    a number (ZeroMQ refuses those itself, but takes any number modulo 65536)."""
    if not endpoint.startswith("tcp://") or ":" not in endpoint[len("tcp://"):]:
        return None
    try:
        return int(endpoint.rsplit(":", 1)[1])
    except ValueError:
        return None


class NotPosecast(ValueError):
    """A received message that is not one of the protocol's. `str()` says why, for the user."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _meta_problem(msg: dict[str, Any]) -> str | None:
    """Why a meta message cannot describe poses (None: it can). It names the joints and their
    bones, and it must be writable as a track's first line (JSON, finite numbers)."""
    names, parents = msg.get("joint_names"), msg.get("parents")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "a meta message without a list of 'joint_names'"
    if (not isinstance(parents, list) or len(parents) != len(names)
            or not all(isinstance(i, int) and -1 <= i < len(names) for i in parents)):
        return "a meta message whose 'parents' do not match its 'joint_names'"
    try:
        json.dumps(msg, allow_nan=False)
    except (TypeError, ValueError):
        return "a meta message with a value JSON cannot hold (bytes, NaN or Infinity)"
    return None


_INT64 = range(-(2 ** 63), 2 ** 63)      # what the .npz writer stores seq and person ids in


def _pose_problem(msg: dict[str, Any], joints: int | None) -> str | None:
    """Why a pose message cannot be shown or recorded (None: it can). `joints`: the count the
    stream's meta gives, once it is known. The checks are what the statistics, the skeleton
    drawing and every track writer rely on, so nothing past here fails on a stranger's message."""
    if not isinstance(msg.get("seq"), int) or msg["seq"] not in _INT64 or not _finite(msg.get("t_capture")):
        return "a pose message without an integer 'seq' and a finite 't_capture'"
    for key in ("t_media", "t_publish"):
        if msg.get(key) is not None and not _finite(msg[key]):
            return f"a pose message whose '{key}' is not a finite number"
    if not isinstance(msg.get("people"), list) or not all(isinstance(p, dict) for p in msg["people"]):
        return "a pose message without a list of 'people'"
    try:
        # A huge number becomes Infinity in float32, as the .npz writer stores it: found below.
        with np.errstate(over="ignore", invalid="ignore"):
            frame = frame_from_message(msg)
            problems = [_person_problem(person, joints) for person in frame.people]
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        return "a pose message with a malformed person (see docs/protocol.md)"
    problem = next((p for p in problems if p is not None), None)
    if problem is not None:
        return problem
    try:
        json.dumps(msg, allow_nan=False)       # what a .jsonl recording writes: finite numbers only
    except (TypeError, ValueError):
        return "a pose message with a value JSON cannot hold (bytes, NaN or Infinity)"
    return None


def _person_problem(person: PersonPose, joints: int | None) -> str | None:
    n = len(person.conf)
    if (person.conf.shape != (n,) or person.joints_3d.shape != (n, 3) or person.joints_2d.shape != (n, 2)
            or len(person.bbox) != 4 or (person.root_3d is not None and person.root_3d.shape != (3,))):
        return "a pose message whose person's arrays do not fit together (see docs/protocol.md)"
    if person.id not in _INT64:
        return "a pose message with a person 'id' out of range"
    numbers = [person.joints_3d, person.joints_2d, person.conf,
               np.asarray([person.score, *person.bbox], dtype=np.float32)]
    if person.root_3d is not None:
        numbers.append(person.root_3d)
    if not all(np.isfinite(a).all() for a in numbers):
        return "a pose message with a number that is not finite (the protocol allows only finite values)"
    if joints is not None and n != joints:
        return f"a pose message with {n} joints where the stream's meta names {joints}"
    return None


def parse_message(parts: list[bytes], joints: int | None = None) -> dict[str, Any]:
    """A received ZeroMQ message as a protocol map (streamer/protocol.py), or `NotPosecast`.

    Anyone may publish on the port a subscriber connects to: another program, or an older or
    newer Posecast. `listen` skips what it cannot use instead of failing on it."""
    if len(parts) != 2:
        raise NotPosecast(f"a ZeroMQ message of {len(parts)} part(s), not [topic, payload]")
    try:
        msg = decode(parts[1])
    except Exception:      # noqa: BLE001 - msgpack and json raise many types on garbage; all mean this
        raise NotPosecast("a payload that is neither msgpack nor JSON") from None
    problem = message_problem(msg, joints)
    if problem is not None:
        raise NotPosecast(problem)
    return msg


def message_problem(msg: Any, joints: int | None = None) -> str | None:
    """Why a decoded message is not a usable protocol message (None: it is). `listen` skips
    such messages; `replay` refuses a track line that is one, before it publishes anything."""
    if not isinstance(msg, dict) or msg.get("type") not in ("meta", "pose"):
        return "a payload that is not a Posecast 'meta' or 'pose' map"
    schema = msg.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        return f"a {msg['type']} message without an integer 'schema'"
    if schema > SCHEMA_VERSION:
        return f"schema {schema}, newer than this version reads (up to {SCHEMA_VERSION}; upgrade Posecast)"
    return _meta_problem(msg) if msg["type"] == "meta" else _pose_problem(msg, joints)


class StopSignals:
    """Ctrl-C, SIGTERM (`timeout`, systemd, docker stop) and SIGHUP (the terminal closed) all end
    `listen` the same orderly way: the handler only notes the signal, the loop sees it within
    one poll, and the recording is written and closed. An NPZ recording exists only once it is
    closed, so the default actions (KeyboardInterrupt anywhere, or death) could lose all of it.
    Later signals are ignored: stopping the close half-way would lose the recording too.
    The exit code is then 128 + the signal's number, as `posecast track` gives. A signal that
    was ignored already stays ignored: `nohup posecast listen` must outlive its terminal."""

    SIGNALS = STOP_SIGNALS

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():    # only it may set handlers
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


def describe_meta(meta: dict[str, Any]) -> str:
    model = meta.get("model")
    trained = model.get("trained") if isinstance(model, dict) else None
    return (f"stream '{meta.get('source')}': {len(meta['joint_names'])} joints, "
            f"axes {meta.get('axes')}, model trained: {trained}")


def listen(endpoint: str, topic: str, record: Path | None, count: int | None, timeout_s: float,
           show_skeleton: bool, out: TextIO = sys.stdout,
           announce: Callable[[str], None] | None = None) -> int:
    """Subscribe and show (or record) until `count` poses, `timeout_s` without a Posecast message,
    or a signal (Ctrl-C, SIGTERM, SIGHUP; see `StopSignals`). Messages that are not Posecast's are
    skipped and counted. Returns the exit code: 0, or 128 + the signal's number.
    `announce` is told the line to show when a signal ended it (default: print it on stderr)."""
    from streamer.tracks import open_track_writer

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        ctx.term()
        raise InputError(f"cannot connect to '{endpoint}': {exc} (use tcp://HOST:PORT)") from None
    # meta is always wanted: it says what the pose messages mean (and subscribing asks for it).
    sock.setsockopt(zmq.SUBSCRIBE, META_TOPIC.encode())
    sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    stats = StreamStats()
    meta: dict[str, Any] | None = None
    joints: int | None = None
    writer = None
    # Poses wait here until a meta says what they are: those before the first one, and those
    # of a restarted publisher (its `seq` went back) whose meta has not come yet (it sends it
    # first, but ZeroMQ may deliver a pose ahead of it): they may be a different stream's.
    pending: list[dict[str, Any]] = []
    awaiting_meta = True
    meta_last = False             # the last message was a meta: a restart's comes just before its poses
    last_shown = 0.0
    last_msg = time.monotonic()
    with StopSignals() as stop:
        try:
            while (count is None or stats.received < count) and stop.signum is None:
                # Silence is counted from the last Posecast message: a stranger that keeps
                # publishing on the port does not keep `listen` waiting for ever.
                if time.monotonic() - last_msg > timeout_s:
                    if stats.received == 0:
                        raise InputError(_silence(endpoint, timeout_s, stats))
                    break
                if not sock.poll(200):
                    continue
                parts = sock.recv_multipart()
                t_recv = time.time()
                try:
                    msg = parse_message(parts, joints)
                except NotPosecast as exc:
                    stats.skip(str(exc))
                    continue
                last_msg = time.monotonic()
                if msg["type"] == "meta":
                    change = None if meta is None else meta_change(meta, msg)
                    if change is not None and writer is not None:
                        # One recording is one stream: its meta line describes every pose in it.
                        raise InputError(_stream_changed(endpoint, change, record, writer))
                    if meta is None or change is not None:
                        meta, joints = msg, len(msg["joint_names"])
                        stats.replayed = bool(msg.get("replay"))
                        print(describe_meta(msg), file=out)
                    if record is not None and writer is None:
                        writer = open_track_writer(record, msg)
                    if writer is not None:
                        _write_pending(writer, pending, joints, stats)
                    awaiting_meta, meta_last = False, True
                    continue
                if stats.last_seq is not None and msg["seq"] <= stats.last_seq and not meta_last:
                    awaiting_meta = True         # a new run of the publisher: its meta may differ
                meta_last = False
                stats.add(msg, t_recv)
                if record is not None:
                    if awaiting_meta:
                        pending.append(msg)      # written once a meta says they are this recording's stream
                        continue
                    writer.write_message(msg)
                if time.monotonic() - last_shown >= 1.0:
                    last_shown = time.monotonic()
                    print(stats.line(), file=out)
                    if show_skeleton and meta is not None:
                        print(text_skeleton(msg, meta["parents"]), file=out)
        finally:
            if writer is not None:
                writer.close()
            sock.close()
            ctx.term()
    if stop.signum is not None:
        # After SIGHUP the terminal may be gone: the recording is closed already, and failing
        # to say so must not turn the exit code into a traceback's.
        with contextlib.suppress(OSError):
            print(stats.line(), file=out)
            _warn_skipped(endpoint, stats)
            _warn_unrecorded(writer, pending)
            (announce or _stderr)(_interrupted(stop.name, record, writer, stats, endpoint))
        return 128 + stop.signum
    print(stats.line(), file=out)
    _warn_skipped(endpoint, stats)
    _warn_unrecorded(writer, pending)
    if record is not None and writer is None:
        raise InputError(f"nothing recorded: no meta message arrived from '{endpoint}'"
                         + _skipped_clause(stats))
    return 0


def meta_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """How `new` describes a different stream from `old` (None: the same one). A publisher
    re-sends its meta every 2 s and on each subscription, and a restarted one sends it again:
    only a difference in what the poses mean counts. Clock fields (`t_*`) are not that."""
    keys = sorted(k for k in {*old, *new} if not k.startswith("t_"))
    changed = [k for k in keys if old.get(k) != new.get(k)]
    if not changed:
        return None
    return ", ".join(_field_change(k, old.get(k), new.get(k)) for k in changed)


def _field_change(key: str, old: Any, new: Any) -> str:
    def brief(value: Any) -> str | None:
        if key == "axes" and isinstance(value, dict) and "frame" in value:
            return json.dumps(value["frame"])
        text = json.dumps(value, default=str)
        return text if len(text) <= 40 else None

    before, after = brief(old), brief(new)
    return f"{key} {before} -> {after}" if before is not None and after is not None else key


def _stream_changed(endpoint: str, change: str, record: Path | None, writer: Any) -> str:
    return (f"the publisher on '{endpoint}' changed its stream ({change}); a recording holds one "
            f"stream, so recording stopped: '{record}' holds the {writer.frames_written} pose messages "
            f"from before the change (complete). Record the new stream to another file")


def _write_pending(writer: Any, pending: list[dict[str, Any]], joints: int,
                   stats: StreamStats) -> None:
    """The poses that arrived before the meta, now that it says how many joints a pose has."""
    for early in pending:
        problem = _pose_problem(early, joints)
        if problem is None:
            writer.write_message(early)
        else:
            stats.skip(problem)
    pending.clear()


def _stderr(line: str) -> None:
    print(f"posecast: {line}", file=sys.stderr)


def _skipped_clause(stats: StreamStats) -> str:
    if not stats.skipped:
        return ""
    return (f"; {stats.skipped} message(s) there were not Posecast messages ({stats.skip_reason()}; "
            f"is another program publishing on that port?)")


def _silence(endpoint: str, timeout_s: float, stats: StreamStats) -> str:
    if stats.skipped:
        return f"no pose messages from '{endpoint}' in {timeout_s:g} s" + _skipped_clause(stats)
    return f"no pose messages from '{endpoint}' in {timeout_s:g} s (is `posecast run` publishing there?)"


def _warn_skipped(endpoint: str, stats: StreamStats) -> None:
    if stats.skipped:
        log.warning("skipped %d message(s) from '%s' that were not Posecast messages (%s)",
                    stats.skipped, endpoint, stats.skip_reason())


def _warn_unrecorded(writer: Any, pending: list[dict[str, Any]]) -> None:
    if writer is not None and pending:
        log.warning("%d pose message(s) after the publisher restarted are not recorded: it ended "
                    "before a meta message said they belong to the recorded stream", len(pending))


def _interrupted(signame: str, record: Path | None, writer: Any, stats: StreamStats, endpoint: str) -> str:
    if record is None:
        return f"interrupted ({signame}) after {stats.received} pose messages"
    if writer is None:
        lost = f"; the {stats.received} pose messages that came without it are not recorded" if stats.received else ""
        return (f"interrupted ({signame}); nothing recorded to '{record}': no meta message arrived from "
                f"'{endpoint}'{lost}")
    return f"interrupted ({signame}); recorded {writer.frames_written} pose messages to '{record}' (complete)"


def replay_clock(poses: list[dict]) -> str:
    """The field that gives a recording's pace. A video file's track was made as fast as the
    pipeline ran, so its `t_capture` is the processing's pace; its `t_media`, the video's own
    time, is the original one. Cameras and streams have no `t_media`, and a looped file's goes
    back at each loop: those are played by `t_capture`, when their frames were read."""
    media = [p.get("t_media") for p in poses]
    if media and all(isinstance(t, (int, float)) for t in media) and all(b >= a for a, b in zip(media, media[1:])):
        return "t_media"
    return "t_capture"


def replay(track: Path, endpoint: str, encoding: str, speed: float, hwm: int = 64,
           announce: Callable[[str], None] | None = None) -> int:
    """Publish a recorded track again, at its original pace (`replay_clock`) times `speed`.
    Every line is checked before anything is published. A signal ends it as it ends `listen`
    (`StopSignals`): the messages sent so far go out, and the exit code is 128 + its number."""
    from streamer.publish import Publisher
    from streamer.tracks import read_track

    say = announce or _stderr
    with StopSignals() as stop:
        meta, poses = read_track(track)
        _check_track(track, meta, poses)
        sent = 0
        pub = Publisher(endpoint, encoding, hwm)
        # Said once the track is known good and the port is ours: a bad one is its one error line.
        say(f"replaying {track} on {pub.endpoint}")
        try:
            pub.start(meta.get("source", track.stem), {**meta, "replay": True})
            # let subscribers that connect at start-up see the first messages
            if _sleep_until(pub.joined_by, stop) and poses:
                clock = replay_clock(poses)
                t0_track, t0 = poses[0][clock], time.monotonic()
                for msg in poses:
                    if not _sleep_until(t0 + (msg[clock] - t0_track) / speed, stop):
                        break
                    msg.pop("t_publish", None)
                    pub.publish(msg)
                    sent += 1
        finally:
            pub.close()
    if stop.signum is None:
        return 0
    with contextlib.suppress(OSError):      # SIGHUP: the terminal may be gone
        say(f"interrupted ({stop.name}) after publishing {sent} of {len(poses)} pose messages")
    return 128 + stop.signum


def _sleep_until(due: float, stop: StopSignals) -> bool:
    """Wait for the monotonic time `due`; False if a stop signal came first. Python resumes a
    sleep after a signal's handler, so it sleeps in short steps to notice one."""
    while stop.signum is None:
        left = due - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.1))
    return False


def _check_track(track: Path, meta: dict[str, Any], poses: list[dict[str, Any]]) -> None:
    """An `InputError` naming the first line that is not a usable protocol message. `read_track`
    checks only each line's type; a replay would otherwise fail half-way, or publish messages
    that its subscribers cannot use."""
    problem = message_problem(meta)
    index = 0
    if problem is None:
        joints = len(meta["joint_names"])
        for index, pose in enumerate(poses, start=1):
            problem = message_problem(pose, joints)
            if problem is not None:
                break
    if problem is not None:
        raise InputError(f"track file '{track}', line {_line_number(track, index)}: {problem} "
                         f"(the file is corrupt or hand-edited; re-record it)")


def _line_number(track: Path, index: int) -> int:
    """The line number of the track's `index`-th message (0: the meta), counted as `read_track`
    reads them: blank lines are skipped. (A file cut shorter since: its count of messages. A
    named pipe cannot be read twice: the count of messages, which is the line number where the
    file has no blank lines.)"""
    if not track.is_file():
        return index + 1
    with open(track, encoding="utf-8") as f:
        lines = (number for number, line in enumerate(f, start=1) if line.strip())
        return next(itertools.islice(lines, index, None), index + 1)
