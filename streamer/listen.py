"""`posecast listen`: subscribe to a pose stream, show it, or record it to a track file.

Shows, about once a second: the message rate, the pipeline latency (t_publish - t_capture, from
the publisher's clock), the delivery delay (receive time - t_publish; meaningful when both ends
share a clock, i.e. on one machine), the people count and a small text drawing of the 2D skeleton.

Anything may publish on the port it connects to: messages that are not Posecast's are skipped
and counted, never fatal. Ctrl-C, SIGTERM and SIGHUP all end it in order, the recording complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import zmq

from engines.errors import InputError, OutputLostError, ReaderGoneError
from engines.stop_signals import StopSignals
from streamer.protocol import END_TOPIC, META_TOPIC, POSE_TOPIC
from streamer.protocol import topic as protocol_topic
from streamer.protocol_check import NotPosecast, parse_message, pose_problem

log = logging.getLogger(__name__)

# As `track`'s exit code for damaged input: done, but what was read is not all there was.
EXIT_RECORDING_INCOMPLETE = 3


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
    ended: dict[str, Any] | None = None  # the publisher's end message, once it came
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

    def end(self, msg: dict[str, Any]) -> None:
        """The publisher's end message: the poses it sent after the last one that came here were
        lost on the way, which no gap in `seq` showed."""
        self.ended = msg
        last = msg.get("last_seq")
        if self.last_seq is not None and last is not None and last > self.last_seq:
            self.gaps += last - self.last_seq
            self.last_seq = last

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


def screen_rows(text: str, columns: int) -> int:
    """The rows `text` takes on a terminal `columns` wide, its long lines wrapped."""
    return sum(max(1, math.ceil(len(line) / max(1, columns))) for line in text.split("\n"))


def tcp_port(endpoint: str) -> int | None:
    """The port number of a tcp:// endpoint; None for another transport, or a port that is not
    a number (ZeroMQ refuses those itself, but takes any number modulo 65536)."""
    if not endpoint.startswith("tcp://") or ":" not in endpoint[len("tcp://"):]:
        return None
    try:
        return int(endpoint.rsplit(":", 1)[1])
    except ValueError:
        return None


def describe_end(end: dict[str, Any], stats: StreamStats) -> str:
    return (f"stream '{end.get('source')}' ended ({end['reason']}): the publisher sent {end['poses']} pose "
            f"messages; {stats.received} came here, {stats.gaps} lost")


def describe_meta(meta: dict[str, Any]) -> str:
    model = meta.get("model")
    trained = model.get("trained") if isinstance(model, dict) else None
    return (f"stream '{meta.get('source')}': {len(meta['joint_names'])} joints, "
            f"axes {meta.get('axes')}, model trained: {trained}")


def listen(endpoint: str, topic: str, record: Path | None, count: int | None, timeout_s: float,
           show_skeleton: bool, out: TextIO = sys.stdout,
           announce: Callable[[str], None] | None = None, through_ends: bool = False) -> int:
    """Subscribe and show (or record) until the publisher's end message (unless `through_ends`:
    a restarted publisher's stream is recorded on), `count` poses, `timeout_s` without a Posecast
    message, or a signal (Ctrl-C, SIGTERM, SIGHUP; see `StopSignals`). Messages that are not
    Posecast's are skipped and counted. Returns the exit code: 0; `EXIT_RECORDING_INCOMPLETE` where a recording
    lacks messages of the stream (lost on the way, or a restart's never claimed by a meta); or 128
    + the signal's number. `announce` is told the line that ends a recording, or says which signal
    ended it (default: print it on stderr)."""
    from streamer.tracks import ReaderWaitStopped, is_stdout, may_block, open_track_writer, stoppable_write

    say = announce or _stderr
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
    sock.setsockopt(zmq.SUBSCRIBE, protocol_topic(META_TOPIC))
    sock.setsockopt(zmq.SUBSCRIBE, protocol_topic(END_TOPIC))      # and when it ends
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
    # On a terminal each second's figures and skeleton are drawn over the last ones, not scrolled;
    # not while recording, whose writer may warn between two blocks (a redraw would erase that).
    redraw = out.isatty() and record is None
    drawn_rows = 0                # screen rows of the last block drawn, since anything else was printed
    last_msg = time.monotonic()
    quiet = False                 # ended by --timeout's silence after the stream had spoken
    # A recording into a pipe (`--record - | program`, a named pipe) waits for its reader: a stop
    # must end such a write, once it has begun to record (a named pipe's wait for its reader ends
    # at a stop of itself). The pipe may then end in part of a line.
    blocking = record is not None and may_block(record)
    cut_short = False

    with StopSignals() as stop:
        try:
            while (count is None or stats.received < count) and stop.signum is None:
                # Silence is counted from the last Posecast message: a stranger that keeps
                # publishing on the port does not keep `listen` waiting for ever.
                if time.monotonic() - last_msg > timeout_s:
                    if stats.received == 0:
                        raise InputError(_silence(endpoint, timeout_s, stats, meta, topic))
                    quiet = True
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
                if msg["type"] == "end":
                    stats.end(msg)
                    print(describe_end(msg, stats), file=out, flush=True)
                    drawn_rows = 0                       # not drawn over
                    if not through_ends:
                        if writer is not None and not awaiting_meta:
                            # The recording ends as the stream did, with its end (`track_end`).
                            with _saying_what_it_holds(record, writer), \
                                    stoppable_write(stop, writer, blocking):
                                writer.end(msg)
                        break
                    continue
                if msg["type"] == "meta":
                    change = None if meta is None else meta_change(meta, msg)
                    if change is not None and writer is not None:
                        if writer.frames_written:
                            # One recording is one stream: its meta line describes every pose in it.
                            raise InputError(_stream_changed(endpoint, change, record, writer))
                        writer.close()               # nothing recorded yet: record the new stream
                        writer = None
                    if meta is None or change is not None:
                        meta, joints = msg, len(msg["joint_names"])
                        stats.replayed = bool(msg.get("replay"))
                        print(describe_meta(msg), file=out)
                        drawn_rows = 0
                    if record is not None and writer is None:
                        writer = open_track_writer(record, msg, lambda: stop.signum is not None)
                    if writer is not None:
                        with _saying_what_it_holds(record, writer), \
                                stoppable_write(stop, writer, blocking):
                            _write_pending(writer, pending, joints, stats)
                        last_msg = time.monotonic()   # a named pipe's wait for its reader is no silence
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
                    with _saying_what_it_holds(record, writer), \
                            stoppable_write(stop, writer, blocking):
                        writer.write_message(msg)
                    last_msg = time.monotonic()
                if time.monotonic() - last_shown >= 1.0:
                    last_shown = time.monotonic()
                    block = stats.line()
                    if show_skeleton and meta is not None:
                        block += "\n" + text_skeleton(msg, meta["parents"])
                    if redraw and drawn_rows:
                        out.write(f"\x1b[{drawn_rows}F\x1b[J")     # up to the block's first row, clear below
                    print(block, file=out, flush=True)
                    drawn_rows = screen_rows(block, shutil.get_terminal_size().columns)
        except ReaderWaitStopped:
            pass                                 # stopped while a named pipe waited for its reader: said below
        except KeyboardInterrupt:
            if stop.signum is None:              # not a stop of ours (StopSignals sets no handler off the main thread)
                raise
            cut_short = True                     # a stop ended a write into the pipe: said below
        except ReaderGoneError as exc:
            # `listen --record - | head`: standard output's reader chose to go, and the command ends
            # as a pipeline's writer does, 141 without a line (a named pipe's reader gone is said).
            exc.quiet = record is not None and is_stdout(record)
            raise
        finally:
            try:
                if writer is not None:
                    with _saying_what_it_holds(record, writer):
                        writer.close()
            finally:
                sock.close()            # an .npz that fails as it is written: the socket closes all the same
                ctx.term()
    if stop.signum is not None:
        # After SIGHUP the terminal may be gone: the recording is closed already, and failing
        # to say so must not turn the exit code into a traceback's.
        with contextlib.suppress(OSError):
            print(stats.line(), file=out)
            _warn_skipped(endpoint, stats)
            say(_interrupted(stop.name, record, writer, stats, endpoint, pending, cut_short))
        return 128 + stop.signum
    print(stats.line(), file=out)
    _warn_skipped(endpoint, stats)
    if quiet and stats.ended is None:
        # The rate line above is the last second's with messages: say why it stopped there.
        say(f"the stream went quiet: nothing from '{endpoint}' for {timeout_s:g} s after "
            f"{stats.received} pose messages, and no end message (the publisher stalled or was killed; "
            f"--timeout waits longer)")
    if record is None:
        return 0
    if writer is None:
        raise InputError(f"nothing recorded: no meta message arrived from '{endpoint}'"
                         + _skipped_clause(stats))
    lost = _lost_clause(stats, pending)
    if lost:
        say(f"error: recorded {writer.frames_written} pose messages to {_named(record)}{lost} "
            f"(exit code {EXIT_RECORDING_INCOMPLETE})")
        return EXIT_RECORDING_INCOMPLETE
    if quiet and stats.ended is None:
        say(f"recorded {writer.frames_written} pose messages to {_named(record)}, complete up to the last one "
            f"that came; any the publisher sent after it are not known (it sent no end message)")
        return 0
    say(f"recorded {writer.frames_written} pose messages to {_named(record)} (complete)")
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
            f"stream, so recording stopped: {_named(record)} holds the {writer.frames_written} pose messages "
            f"from before the change (complete). Record the new stream to another file")


@contextlib.contextmanager
def _saying_what_it_holds(record: Path, writer: Any) -> Iterator[None]:
    """A write that fails (a full disk) ends the recording: its one line says what the file holds,
    as the recording's normal end does. A named pipe's reader gone, or the file deleted, say what
    became of it themselves."""
    from streamer.tracks import WHOLE_FILE_SUFFIXES

    try:
        yield
    except (ReaderGoneError, OutputLostError):
        raise
    except InputError as exc:
        if not writer.frames_written:
            held = "nothing was recorded"
        elif record.suffix.lower() in WHOLE_FILE_SUFFIXES:
            # Kept in memory until the end, and written through a new file renamed over the old.
            held = (f"the {writer.frames_written} pose messages that came are not recorded (a "
                    f"{record.suffix.lower()} is written whole, at the end)")
        else:
            # The line writers cut a failed write back to the frame before it.
            held = f"{_named(record)} holds the {writer.frames_written} pose messages recorded before it, each whole"
        raise InputError(f"{exc}; {held}") from None


def _write_pending(writer: Any, pending: list[dict[str, Any]], joints: int,
                   stats: StreamStats) -> None:
    """The poses that arrived before the meta, now that it says how many joints a pose has."""
    for early in pending:
        problem = pose_problem(early, joints)
        if problem is None:
            writer.write_message(early)
        else:
            stats.skip(problem)
    pending.clear()


def _named(record: Path | None) -> str:
    """A recording's name in a line: its path, quoted, or standard output's (`--record -`)."""
    from streamer.tracks import is_stdout

    return "standard output" if record is not None and is_stdout(record) else f"'{record}'"


def _stderr(line: str) -> None:
    print(f"posecast: {line}", file=sys.stderr)


def _skipped_clause(stats: StreamStats) -> str:
    if not stats.skipped:
        return ""
    return (f"; {stats.skipped} message(s) there were not Posecast messages ({stats.skip_reason()}; "
            f"is another program publishing on that port?)")


def _silence(endpoint: str, timeout_s: float, stats: StreamStats, meta: dict[str, Any] | None,
             wanted: str) -> str:
    said = f"no pose messages from '{endpoint}' in {timeout_s:g} s"
    if meta is not None:
        # A stream's meta came: a publisher is there, so the topic asked for, or its source, is why.
        poses = protocol_topic(POSE_TOPIC, str(meta.get("source"))).decode()
        if not poses.startswith(wanted):
            return (f"{said} on topic '{wanted}': the stream there is '{meta.get('source')}', whose poses come "
                    f"on topic '{poses}' (give --topic {poses}, or leave --topic out)")
        return f"{said}, though its stream '{meta.get('source')}' announced itself (is its source giving frames?)"
    if stats.skipped:
        return said + _skipped_clause(stats)
    return f"{said} (is `posecast run` publishing there?)"


def _warn_skipped(endpoint: str, stats: StreamStats) -> None:
    if stats.skipped:
        log.warning("skipped %d message(s) from '%s' that were not Posecast messages (%s)",
                    stats.skipped, endpoint, stats.skip_reason())


def _interrupted(signame: str, record: Path | None, writer: Any, stats: StreamStats, endpoint: str,
                 pending: list[dict[str, Any]], cut_short: bool = False) -> str:
    """The line of a stopped `listen`. `cut_short`: the stop ended a write into a pipe whose
    reader had stopped reading, which may hold part of the next message's line."""
    if record is None:
        return f"interrupted ({signame}) after {stats.received} pose messages"
    if writer is None:
        lost = f"; the {stats.received} pose messages that came without it are not recorded" if stats.received else ""
        return (f"interrupted ({signame}); nothing recorded to {_named(record)}: no meta message arrived from "
                f"'{endpoint}'{lost}")
    if not writer.frames_written:
        return (f"interrupted ({signame}); nothing recorded to {_named(record)}: no pose message was written "
                f"(a file already there was left as it was)")
    cut = ("; its reader had stopped reading, so the write of the next was cut off and its last line may be "
           "part of one" if cut_short else "")
    return (f"interrupted ({signame}); recorded {writer.frames_written} pose messages to {_named(record)}"
            + (_lost_clause(stats, pending) or ("" if cut_short else " (complete)")) + cut)


def _lost_clause(stats: StreamStats, pending: list[dict[str, Any]]) -> str:
    """What a recording lacks of the stream it recorded, or "" where it lacks nothing."""
    said = []
    if stats.gaps:
        said.append(f"{stats.gaps} were lost on the way (gaps in `seq`, or sent after the last one that came, as "
                    f"the publisher's end message says: this subscriber read too slowly, or the publisher sent "
                    f"faster than its queue of `publish.hwm` messages holds)")
    if pending:
        said.append(f"{len(pending)} that came after the publisher restarted are left out (no meta message "
                    f"said they are the recorded stream's)")
    return ", but " + "; ".join(said) if said else ""
