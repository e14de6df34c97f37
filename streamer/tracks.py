"""Track files: a recording of the pipeline's results, one writer per format.

`.jsonl` (or `.ndjson`) is the reference format: the protocol's `meta` message, then exactly one
`pose` message per input frame, so a track file replays as the live stream would have, then the
stream's `end` message where the run ended in order. `.csv` flattens the same numbers into one row
per (frame, person) for spreadsheets, with the meta (and the end) in a `<stem>.meta.json` sidecar.
`.npz` holds dense arrays for NumPy users, one person per frame. The end says whether the input
was read to its end, stopped or failed (`track_end`; `track --skip-done` reads it).

JSONL and CSV are flushed after every frame: if the process is killed, the frames already
processed are on disk (flushed to the operating system, not fsync'ed: a kernel crash can still
lose the tail). NPZ cannot be appended to, so it is written once, on close, atomically.

A named pipe written from a live source never holds the run back: a reader slower than the
stream gets whole frames left out (counted and said) while the oldest frame waiting for it beyond
what the pipe itself holds (64 KB on Linux) has waited BEHIND_S, as the live capture leaves out
stale frames, rather than slowing every other output and subscriber to its pace; at the end the
frames still waiting get up to CLOSE_WAIT_S (STOPPED_WAIT_S after a stop). From a file, every
frame waits for the reader.

`-` as a track's path is standard output, in JSONL, for a program reading it through a pipe
(`posecast track walk.mp4 -o - | jq ...`): written as a named pipe is, the run's own lines going to
standard error.

A file is made (or replaced) only once it has a frame to hold: a run that ends before its first
frame leaves whatever was at the path as it was. Whether it can be written is checked when the
writer is opened.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import errno
import io
import json
import logging
import math
import os
import select
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from engines.errors import InputError, OutputLostError, ReaderGoneError
from engines.files import check_writable_folder, name_removed, replaced_when_done, write_hint
from streamer.protocol import END_FAILED, SCHEMA_VERSION, PoseFrame, frame_from_message, person_dict, pose_message

if TYPE_CHECKING:
    from engines.stop_signals import StopSignals

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".ndjson")
# The formats whose writer records how the run ended (`TrackWriter.end`, `records_end`).
END_RECORDING_SUFFIXES = (*JSONL_SUFFIXES, ".csv", ".npz")
TRACK_SUFFIXES = (*JSONL_SUFFIXES, ".csv", ".npz", ".bvh")
WHOLE_FILE_SUFFIXES = (".npz", ".bvh")      # written once, on close; the others as they go

STDOUT = "-"                # a track's path meaning standard output (JSONL)

FIFO_POLL_S = 0.05          # how often a named pipe is tried for a reader
FIFO_SAY_AFTER_S = 1.0      # waited for a reader this long, the wait is said
BEHIND_S = 2.0              # a live pipe's oldest frame waiting for a slow reader: new ones left out after this
CLOSE_WAIT_S = 5.0          # at the end, how long a live pipe's waiting frames wait for its reader...
STOPPED_WAIT_S = 1.0        # ...and after a stop (Ctrl-C), or for a frame the reader has begun to take


class ReaderWaitStopped(Exception):
    """A named pipe's writer gave up waiting for its reader because the run was stopped: not an
    error of its own (the run ends as a stopped one does), and nothing was written to the pipe."""


def track_write_error(path: Path, err: OSError) -> InputError:
    if err.errno == errno.EPIPE:
        return ReaderGoneError(f"cannot write {shown_track(path)}: the program reading the pipe went away, so the "
                               f"run was stopped")
    return InputError(f"cannot write {shown_track(path)}: {err.strerror or err} ({write_hint(err)})")


def track_name(path: Path | str) -> str:
    """A track, named in a line beside other outputs: its path, quoted, or standard output's."""
    return "the track on standard output" if is_stdout(path) else f"'{path}'"


def shown_track(path: Path | str) -> str:
    """A track's name at the start of a line for the user."""
    return track_name(path) if is_stdout(path) else f"track file {track_name(path)}"


def _open_to_stream(path: Path, cancelled: Callable[[], bool], live: bool = False) -> IO[bytes]:
    """`path` opened to write as it goes (unbuffered). A named pipe opens only once a program
    opens it to read; it is waited for, said after a second, until `cancelled()` (the run was
    stopped), rather than blocking in open() where no stop can reach. A `live` run's pipe stays
    non-blocking (its writes return None where the pipe is full). `STDOUT`: standard output, whose
    reader (a pipe's) is there already; a file of its own, so closing it leaves the process's be."""
    if is_stdout(path):
        fd = os.dup(1)
        if live and _is_pipe(fd):
            os.set_blocking(fd, False)
        return os.fdopen(fd, "wb", buffering=0)
    if not path.is_fifo():
        return open(path, "wb", buffering=0)
    started, said = time.monotonic(), False
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO:           # ENXIO: no reader yet
                raise
            if cancelled():
                raise ReaderWaitStopped(str(path)) from None
            if not said and time.monotonic() - started >= FIFO_SAY_AFTER_S:
                log.warning("waiting for a program to read the named pipe '%s' (start it, or press Ctrl-C)", path)
                said = True
            time.sleep(FIFO_POLL_S)
            continue
        os.set_blocking(fd, not live)
        return os.fdopen(fd, "wb", buffering=0)


def is_stdout(path: Path | str) -> bool:
    return str(path) == STDOUT


def may_block(path: Path | str) -> bool:
    """Whether a write into `path` may wait on another program: a pipe, named or standard
    output's, a terminal, a socket. A regular file's write never does. Such a write waits as long
    as its reader likes, so a command's stop must be able to end it (`StopSignals.raising`)."""
    try:
        mode = os.fstat(1).st_mode if is_stdout(path) else os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode)


def stoppable_write(stop: StopSignals, writer: TrackWriter, blocking: bool) -> contextlib.AbstractContextManager:
    """Where a write into `writer` may wait on another program (`blocking`, from `may_block`): a
    stop ends it at once. Not before its first frame, which fits the empty pipe, and whose wait
    for a named pipe's reader ends at a stop of itself (ReaderWaitStopped)."""
    return stop.raising() if blocking and writer.frames_written else contextlib.nullcontext()


def _shown_pipe(path: Path) -> str:
    return "standard output" if is_stdout(path) else f"the named pipe '{path}'"


def _is_pipe(fd: int) -> bool:
    return stat.S_ISFIFO(os.fstat(fd).st_mode)


def _dumps(obj: Any) -> str:
    # Compact, and never NaN/Infinity: JSON has no such numbers and the protocol promises finite.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _joint_names(meta: dict[str, Any]) -> list[str]:
    try:
        names = meta["joint_names"]
    except KeyError:
        raise ValueError("track meta has no 'joint_names' (build it with protocol.meta_message)") from None
    return [str(n) for n in names]


class TrackWriter(ABC):
    """Writes one track file. `write` once per input frame, in order; `close` finishes the file.

    `close` is idempotent and may be called from a shutdown or signal path.
    """

    records_end = False         # whether `end` has a place in the file (.jsonl, .csv, .npz)

    def __init__(self, path: Path, streamed: bool) -> None:
        self.path = Path(path)
        self.frames_written = 0
        self._probe_writable(streamed)

    def _probe_writable(self, streamed: bool) -> None:
        """Finds out now, and without making or emptying anything, whether the file can be
        written: not at the first frame, nor (an .npz) after an hour of processing. A `streamed`
        file (written in place as it goes) that exists already, or a named pipe, needs no new
        file in its folder."""
        if self.path.is_dir():
            raise track_write_error(self.path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
        if streamed and self.path.exists():
            if not os.access(self.path, os.W_OK):
                raise track_write_error(self.path, PermissionError(errno.EACCES, "the file is read-only"))
            return
        try:
            # The folder of the file a symbolic link names, which is the one written (and which
            # `write_whole` takes for removed during the run where it is missing at the end).
            check_writable_folder(Path(os.path.realpath(self.path)).parent)
        except OSError as err:
            raise track_write_error(self.path, err) from None

    @abstractmethod
    def write(self, frame: PoseFrame, message: dict[str, Any] | None = None) -> None:
        """`message`: the frame's `pose_message`, when the caller has built it already."""

    @abstractmethod
    def close(self) -> None:
        ...

    def write_message(self, msg: dict[str, Any]) -> None:
        """Write a pose message as received from a stream (`posecast listen --record`)."""
        self.write(frame_from_message(msg))

    def end(self, message: dict[str, Any]) -> None:
        """Records the stream's `end` message (`protocol.end_message`), before `close`, where the
        format has a place for it (.jsonl, .csv, .npz; not .bvh), so that the file says whether
        its input was read to its end (`track_end`). Nothing for a track without a frame: it
        makes no file."""

    def __enter__(self) -> TrackWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _LineFileWriter(TrackWriter):
    """Shared file handling for the text formats: each frame's lines go to the file at once.

    The file is made at the first frame, with `header` before it: a run that ends before its
    first frame (a source that fails, a model that cannot run) leaves a file already at that path
    as it was, rather than emptied. `live`: a named pipe's backlog for a slow reader (see the
    module's docstring); `frames_written` then counts the frames written into the pipe."""

    def __init__(self, path: Path, header: str, cancelled: Callable[[], bool] | None = None,
                 live: bool = False) -> None:
        super().__init__(path, streamed=True)
        self._header = header
        self._cancelled = cancelled or (lambda: False)
        self._live = live
        self._behind_pipe = False   # a live run's named pipe, found when it is opened
        self._file: IO[bytes] | None = None
        self._closed = False
        self._complete = 0          # bytes up to the end of the last whole frame
        # A live pipe's frames the pipe has not taken yet, whole, with when each came (the first may
        # be partly sent, up to `_head_sent`).
        self._behind: collections.deque[tuple[bytes, bool, float]] = collections.deque()
        self._head_sent = 0
        self.frames_left_out = 0
        self._reader_gone = False   # a write's error said that the pipe's reader went away

    def _start(self) -> None:
        """Makes the file and writes the header (subclasses: and whatever goes beside it)."""
        try:
            # Unbuffered: nothing waits in memory, so what was written survives this process being
            # killed, and a failed write leaves nothing behind to be flushed later.
            self._file = _open_to_stream(self.path, self._cancelled, self._live)
        except OSError as err:
            raise track_write_error(self.path, err) from None
        self._behind_pipe = self._live and _is_pipe(self._file.fileno())
        self._emit(self._header, frame=False)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"track file '{self.path}' is already closed")
        if self._file is None:
            self._start()

    def _emit(self, text: str, frame: bool = True) -> None:
        """Writes one frame's lines (`frame`: they count in `frames_written`). If the disk fills
        up in the middle, the file is cut back to the frame before, so that it still reads back
        line by line."""
        self._check_open()
        assert self._file is not None
        encoded = text.encode("utf-8")
        if self._behind_pipe:
            self._emit_behind(encoded, frame)
            return
        data = memoryview(encoded)
        try:
            while data:
                written = self._file.write(data)     # a write may take only part of it
                if not written:
                    raise OSError(errno.EIO, "the file took no more bytes")
                data = data[written:]
        except OSError as err:
            try:
                self._file.truncate(self._complete)
            except OSError:
                pass
            raise track_write_error(self.path, err) from None
        self._complete += len(encoded)
        self.frames_written += frame

    def _emit_behind(self, encoded: bytes, frame: bool) -> None:
        """A live pipe's write: what the pipe takes now, the rest kept for the next frames. A
        frame that comes while the oldest waiting one has waited BEHIND_S is left out whole, so
        that the reader gets whole lines, in order, and the run is never held back."""
        try:
            self._send_behind()
        except ReaderGoneError:
            self.frames_left_out += frame            # the frame in hand, too
            raise
        now = time.monotonic()
        if frame and self._behind and now - self._behind[0][2] >= BEHIND_S:
            self.frames_left_out += 1
            if self.frames_left_out == 1:
                log.warning("the program reading %s is slower than the stream: poses are left "
                            "out of it (counted) to stay live", _shown_pipe(self.path))
            return
        self._behind.append((encoded, frame, now))
        self._send_behind()

    def _send_behind(self, head_only: bool = False) -> None:
        """Writes waiting frames until the pipe is full (`head_only`: the first one)."""
        assert self._file is not None
        try:
            while self._behind:
                data, frame, _ = self._behind[0]
                written = self._file.write(memoryview(data)[self._head_sent:])
                if not written:                  # None: the pipe is full
                    return
                self._head_sent += written
                if self._head_sent < len(data):
                    continue
                self._behind.popleft()
                self._head_sent = 0
                self.frames_written += frame
                if head_only:
                    return
        except OSError as err:
            error = track_write_error(self.path, err)
            self._reader_gone = isinstance(error, ReaderGoneError)
            raise error from None

    def _wait_behind(self, deadline: float, head_only: bool) -> float:
        """Sends until the deadline, which a stop in the meantime brings to STOPPED_WAIT_S from
        then; returns the deadline as it ended."""
        stopped = False
        while (self._head_sent if head_only else self._behind) and time.monotonic() < deadline:
            if not stopped and self._cancelled():
                stopped = True
                deadline = min(deadline, time.monotonic() + STOPPED_WAIT_S)
            select.select([], [self._file], [], FIFO_POLL_S)
            self._send_behind(head_only)
        return deadline

    def _finish_behind(self) -> None:
        """At the end, the waiting frames get CLOSE_WAIT_S for the reader to take them
        (STOPPED_WAIT_S after a stop); one it has begun to take gets at least STOPPED_WAIT_S, so
        that its last line is whole."""
        deadline = time.monotonic() + (STOPPED_WAIT_S if self._cancelled() else CLOSE_WAIT_S)
        try:
            deadline = self._wait_behind(deadline, head_only=False)
            self._wait_behind(max(deadline, time.monotonic() + STOPPED_WAIT_S), head_only=True)
        except ReaderGoneError:
            left = sum(frame for _, frame, _ in self._behind)
            self.frames_left_out += left
            self._behind.clear()
            raise ReaderGoneError(f"cannot write {shown_track(self.path)}: the program reading the pipe went away "
                                  f"before taking the last {left} pose(s)") from None
        self.frames_left_out += sum(frame for _, frame, _ in self._behind)
        self._behind.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._file is None:
            return
        if self._reader_gone:
            # The write that found the reader gone said so and stopped the run: the poses left
            # waiting, and the count, would be a second and a third line about the same pipe.
            self._file.close()
            return
        # Standard output is no file of the user's naming: the program that started posecast may
        # have given it a file without a name (Python's tempfile.TemporaryFile), and reads it still.
        lost = not is_stdout(self.path) and name_removed(self._file.fileno())
        try:
            if self._behind:
                self._finish_behind()
        finally:
            if self.frames_left_out:
                log.warning("%d pose(s) were left out of %s (its reader was slower than the "
                            "stream, or went away)", self.frames_left_out, _shown_pipe(self.path))
            try:
                self._file.close()
            except OSError as err:
                raise track_write_error(self.path, err) from None
        if lost:
            raise OutputLostError([str(self.path)])


class JsonlTrackWriter(_LineFileWriter):
    """The protocol's messages, one per line: `meta`, then one `pose` per frame."""

    records_end = True

    def __init__(self, path: Path, meta: dict[str, Any], cancelled: Callable[[], bool] | None = None,
                 live: bool = False) -> None:
        try:
            header = _dumps(meta)
        except ValueError:
            raise ValueError(f"track meta for '{path}' has a non-finite number (fps NaN?)") from None
        super().__init__(path, header + "\n", cancelled, live)

    def write(self, frame: PoseFrame, message: dict[str, Any] | None = None) -> None:
        self.write_message(pose_message(frame) if message is None else message)

    def write_message(self, msg: dict[str, Any]) -> None:
        # The message as it is (t_publish included, when recorded from a stream).
        try:
            line = _dumps(msg)
        except ValueError:
            raise ValueError(
                f"frame {msg.get('seq')}: non-finite number in the pose (the protocol allows only finite values)"
            ) from None
        self._emit(line + "\n")

    def end(self, message: dict[str, Any]) -> None:
        if self._file is not None and not self._closed:
            self._emit(_dumps(message) + "\n", frame=False)


def csv_header(joint_names: list[str]) -> list[str]:
    """The CSV columns: frame and person fields, then every joint's 3D, then every joint's 2D."""
    cols = ["seq", "t_capture", "t_media", "person_id", "score", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1",
            "root3d_x", "root3d_y", "root3d_z"]
    for n in joint_names:
        cols += [f"{n}_x3d", f"{n}_y3d", f"{n}_z3d"]
    for n in joint_names:
        cols += [f"{n}_u", f"{n}_v", f"{n}_conf"]
    return cols + ["image"]


def files_written(tracks: list[Path], overlay: Path | None) -> list[Path]:
    """Every file a run's outputs write: its tracks (standard output aside), a CSV's meta beside
    it, its overlay."""
    tracks = [t for t in tracks if not is_stdout(t)]
    return tracks + [s for t in tracks if (s := sidecar_path(t)) is not None] + ([overlay] if overlay else [])


def sidecar_path(path: Path) -> Path | None:
    """The file a track writes beside itself: a CSV's meta, `<stem>.meta.json`; None for others."""
    path = Path(path)
    return path.with_suffix(".meta.json") if path.suffix.lower() == ".csv" else None


class CsvTrackWriter(_LineFileWriter):
    """One row per (frame, person); a frame with nobody gets one row with empty person fields.

    The numbers are the protocol's (same rounding as the JSONL track). The meta goes to the
    `<stem>.meta.json` sidecar, since CSV has no place for it.
    """

    records_end = True

    def __init__(self, path: Path, meta: dict[str, Any], cancelled: Callable[[], bool] | None = None,
                 live: bool = False) -> None:
        path = Path(path)
        self._num_joints = len(_joint_names(meta))
        self.meta_path = sidecar_path(path) or path.with_suffix(".meta.json")
        self._meta = meta
        try:
            self._meta_text = json.dumps(meta, indent=2, allow_nan=False)
        except ValueError:
            raise ValueError(f"track meta for '{path}' has a non-finite number (fps NaN?)") from None
        # Rows are formatted into memory, then written and flushed as one piece per frame.
        self._rows = io.StringIO()
        self._csv = csv.writer(self._rows, lineterminator="\n")
        self._empty_person = [""] * (2 + 4 + 3 + 6 * self._num_joints)
        self._csv.writerow(csv_header(_joint_names(meta)))
        super().__init__(path, self._take_rows(), cancelled, live)

    def _start(self) -> None:
        if self.path.is_fifo():
            super()._start()         # the reader is waited for first: a stopped wait leaves no sidecar
            self._write_sidecar()
        else:
            self._write_sidecar()    # first: if it cannot be written, a track at the path is untouched
            super()._start()

    def _write_sidecar(self) -> None:
        try:
            self.meta_path.write_text(self._meta_text + "\n", encoding="utf-8")
        except OSError as err:
            self._closed = True
            if self._file is not None:
                self._file.close()
            raise track_write_error(self.meta_path, err) from None

    def end(self, message: dict[str, Any]) -> None:
        # The sidecar again, whole, with the end under "end": CSV rows have no place for it.
        if self._file is None or self._closed:
            return
        text = json.dumps({**self._meta, "end": message}, indent=2, allow_nan=False) + "\n"
        write_whole(self.meta_path, lambda f: f.write(text.encode("utf-8")))

    def _take_rows(self) -> str:
        text = self._rows.getvalue()
        self._rows.seek(0)
        self._rows.truncate()
        return text

    def _emit_rows(self) -> None:
        self._emit(self._take_rows())

    def write(self, frame: PoseFrame, message: dict[str, Any] | None = None) -> None:
        self._check_open()
        msg_head = [int(frame.seq), round(float(frame.t_capture), 6),
                    "" if frame.t_media is None else round(float(frame.t_media), 6)]
        rows = []
        for person in frame.people:
            p = person_dict(person)
            if len(p["joints_3d"]) != self._num_joints:
                raise ValueError(f"frame {frame.seq}: person has {len(p['joints_3d'])} joints, "
                                 f"the track's skeleton has {self._num_joints}")
            numbers = [p["score"], *p["bbox"], *p.get("root_3d", ["", "", ""])]
            numbers += [v for xyz in p["joints_3d"] for v in xyz]
            for (u, v), c in zip(p["joints_2d"], p["conf"]):
                numbers += [u, v, c]
            rows.append([*msg_head, p["id"], *numbers])
        if not rows:
            rows.append([*msg_head, *self._empty_person])
        for row in rows:
            row.append("" if frame.image is None else frame.image)
        for row in rows:
            if not all(math.isfinite(v) for v in row if isinstance(v, float)):
                raise ValueError(
                    f"frame {frame.seq}: non-finite number in the pose (the protocol allows only finite values)"
                )
        self._csv.writerows(rows)
        self._emit_rows()


class NpzTrackWriter(TrackWriter):
    """Dense arrays, one person per frame (the first of `frame.people` when there are several).

    Arrays (N frames, J joints): seq (N,) int64; t_capture (N,) float64; t_media (N,) float64,
    NaN when unknown; found (N,) bool; person_id (N,) int64, the track number, -1 where nobody was
    found; score (N,), bbox (N, 4) x0 y0 x1 y1, root_3d (N, 3), joints_3d (N, J, 3),
    joints_2d (N, J, 2), conf (N, J), all float32 and NaN where nobody was found; image (N,) str,
    the image file's name for an image folder, else empty; meta_json, a 0-d string array holding
    the meta message as JSON; end_json, the same for the end message, where the run ended in order
    (`track_end`). Values are stored as given, not rounded.

    Frames are kept in memory and the file is written on `close` (if it got any), through a
    temporary file in the same folder and a rename, so readers never see a half-written file. `close` may be called
    from a signal handler: rows are filled before they are counted, so an interrupted `write`
    loses at most that frame.
    """

    records_end = True

    _FIRST_CAPACITY = 256

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self._num_joints = len(_joint_names(meta))
        try:
            self._meta_json = _dumps(meta)
        except ValueError:
            raise ValueError(f"track meta for '{path}' has a non-finite number (fps NaN?)") from None
        super().__init__(path, streamed=False)
        self._closed = False
        self._count = 0
        self._buf = self._allocate(self._FIRST_CAPACITY)
        self._end_json: str | None = None

    def _allocate(self, capacity: int) -> dict[str, np.ndarray]:
        j = self._num_joints
        return {
            "seq": np.zeros(capacity, np.int64),
            "t_capture": np.zeros(capacity, np.float64),
            "t_media": np.full(capacity, np.nan, np.float64),
            "found": np.zeros(capacity, bool),
            "person_id": np.full(capacity, -1, np.int64),
            "score": np.full(capacity, np.nan, np.float32),
            "bbox": np.full((capacity, 4), np.nan, np.float32),
            "root_3d": np.full((capacity, 3), np.nan, np.float32),
            "joints_3d": np.full((capacity, j, 3), np.nan, np.float32),
            "joints_2d": np.full((capacity, j, 2), np.nan, np.float32),
            "conf": np.full((capacity, j), np.nan, np.float32),
            "image": np.full(capacity, "", dtype=object),
        }

    def _grow(self) -> None:
        bigger = self._allocate(2 * len(self._buf["seq"]))
        n = self._count
        for name, arr in self._buf.items():
            bigger[name][:n] = arr[:n]
        self._buf = bigger

    def write(self, frame: PoseFrame, message: dict[str, Any] | None = None) -> None:
        if self._closed:
            raise ValueError(f"track file '{self.path}' is already closed")
        if self._count == len(self._buf["seq"]):
            self._grow()
        i, b = self._count, self._buf
        person = frame.people[0] if frame.people else None
        t_media = math.nan if frame.t_media is None else float(frame.t_media)
        if not math.isfinite(float(frame.t_capture)) or (frame.t_media is not None and not math.isfinite(t_media)):
            raise ValueError(f"frame {frame.seq}: non-finite timestamp")
        if person is not None:
            if len(person.conf) != self._num_joints:
                raise ValueError(f"frame {frame.seq}: person has {len(person.conf)} joints, "
                                 f"the track's skeleton has {self._num_joints}")
            b["score"][i] = person.score
            b["bbox"][i] = person.bbox
            b["root_3d"][i] = np.nan if person.root_3d is None else person.root_3d
            b["joints_3d"][i] = person.joints_3d
            b["joints_2d"][i] = person.joints_2d
            b["conf"][i] = person.conf
            # Checked after the float32 cast: a huge float64 becomes inf there.
            if not all(np.isfinite(b[k][i]).all() for k in ("score", "bbox", "joints_3d", "joints_2d", "conf")):
                for k in ("score", "bbox", "joints_3d", "joints_2d", "conf"):
                    b[k][i] = np.nan
                raise ValueError(
                    f"frame {frame.seq}: non-finite number in the pose (the protocol allows only finite values)"
                )
        else:
            # Explicitly: a failed earlier write may have left values in this uncounted row.
            for k in ("score", "bbox", "root_3d", "joints_3d", "joints_2d", "conf"):
                b[k][i] = np.nan
        b["seq"][i] = frame.seq
        b["t_capture"][i] = frame.t_capture
        b["t_media"][i] = t_media
        b["found"][i] = person is not None
        b["person_id"][i] = -1 if person is None else person.id
        b["image"][i] = "" if frame.image is None else frame.image
        self._count = i + 1     # last: the row only counts once it is complete
        self.frames_written = self._count

    def end(self, message: dict[str, Any]) -> None:
        self._end_json = _dumps(message)

    def close(self) -> None:
        if self._closed:
            return
        n = self._count
        if n == 0:
            # As the text formats: no frame, no file, and one already at that path is kept.
            self._closed = True
            return
        arrays = {name: arr[:n] for name, arr in self._buf.items()}
        arrays["image"] = arrays["image"].astype(str)       # fixed-width text: loads without pickle
        arrays["meta_json"] = np.array(self._meta_json)
        if self._end_json is not None:
            arrays["end_json"] = np.array(self._end_json)
        # Closed all the same if it fails: a second try would fail as the first did (a full
        # disk), and its error would be a second line about the same file.
        self._closed = True
        # Uncompressed: close may run on a shutdown path where speed matters more than size.
        write_whole(self.path, lambda f: np.savez(f, **arrays))


def write_whole(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """A track file written at once (.npz, .bvh) by `write(f)`: through a new file renamed into
    place, with the mode any new file gets, as the text formats have, so readers never see a
    half-written one; a failure is the track's one error line."""
    try:
        with replaced_when_done(path) as tmp, open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        if err.errno == errno.ENOENT and not Path(os.path.realpath(path)).parent.is_dir():
            # Its folder was there when the writer opened (TrackWriter._probe_writable): it was
            # removed during the run, most likely with the other outputs in it, named in one line.
            raise OutputLostError([str(path)]) from None
        raise track_write_error(path, err) from None


def open_track_writer(path: Path, meta: dict[str, Any], cancelled: Callable[[], bool] | None = None,
                      live: bool = False) -> TrackWriter:
    """A writer for `path`, its format chosen by the extension: .jsonl/.ndjson, .csv, .npz or .bvh.

    `meta` is the stream's `protocol.meta_message(...)`. `cancelled`: whether the run was stopped,
    for a named pipe's writer waiting for its reader (by default it waits as long as it takes).
    `live`: a named pipe's reader slower than the stream gets frames left out (see above).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES or is_stdout(path):
        return JsonlTrackWriter(path, meta, cancelled, live)
    if suffix == ".csv":
        return CsvTrackWriter(path, meta, cancelled, live)
    if suffix == ".npz":
        return NpzTrackWriter(path, meta)
    if suffix == ".bvh":
        from streamer.bvh import BvhTrackWriter

        return BvhTrackWriter(path, meta)
    raise track_format_error(path)


def track_format_error(path: Path) -> InputError:
    """What is wrong with a track's name whose extension names no format."""
    use = "use .jsonl, .csv, .npz or .bvh"
    if not path.suffix:
        return InputError(f"track file '{path}' has no extension, which picks its format ({use})")
    return InputError(f"unknown track format '{path.suffix}' for '{path}' ({use})")


def _jsonl_in(folder: Path) -> str:
    """What to give instead of a folder: one of the tracks in it, where it has any."""
    try:
        tracks = sorted(p for p in folder.iterdir() if p.suffix.lower() in JSONL_SUFFIXES and p.is_file())
    except OSError:
        tracks = []
    if not tracks:
        return "give a .jsonl track file; there is none in it"
    return f"give a .jsonl track file in it, e.g. '{tracks[0]}'"


def read_track(path: Path,
               warn: Callable[[str], None] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Reads a JSONL track back: (its meta message, its pose messages in file order). See
    `read_track_and_end`."""
    meta, poses, _ = read_track_and_end(path, warn)
    return meta, poses


def read_track_and_end(path: Path, warn: Callable[[str], None] | None = None
                       ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Reads a JSONL track back: its meta message, its pose messages in file order, and its end
    message (None where it has none), in one pass, which a named pipe allows only once.

    Blank lines are skipped. A last line cut off mid-write (no newline, not JSON) is left out, and
    `warn` (else the log) is told. Anything else that is not a protocol message is an `InputError`
    naming the line, so a corrupt or hand-edited file is easy to find and fix.
    """
    path = Path(path)
    if os.path.isdir(path):          # False, not an error, where a folder on its path may not be entered
        raise InputError(f"cannot read track file '{path}': it is a folder ({_jsonl_in(path)})")
    if path.suffix.lower() not in JSONL_SUFFIXES:
        raise InputError(f"cannot read track file '{path}': only .jsonl tracks can be read back "
                         f"(record with -o out.jsonl)")
    try:
        f = open(path, encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read track file '{path}': {err.strerror or err} (check the path)") from None
    meta: dict[str, Any] | None = None
    poses: list[dict[str, Any]] = []
    end: dict[str, Any] | None = None
    with f:
        try:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                if end is not None:
                    raise InputError(f"track file '{path}', line {lineno}: a message after the 'end' message, which "
                                     f"Posecast writes last (the file is corrupt or hand-edited)")
                if meta is not None and _cut_off(line):
                    # The writers flush after every frame, so a crash or a full disk mid-write cuts
                    # only this last line: the frames before it are whole.
                    (warn or log.warning)(f"track file '{path}', line {lineno}: cut off mid-write (the recording "
                                          f"stopped there); it is left out, and the {len(poses)} pose messages "
                                          f"before it are read")
                    break
                msg = _parse_line(path, lineno, line)
                kind = msg.get("type")
                if meta is None:
                    if kind != "meta":
                        raise InputError(f"track file '{path}', line {lineno}: expected the 'meta' message "
                                         f"first, got {kind!r} (is this a Posecast track?)")
                    schema = msg.get("schema")
                    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
                        raise InputError(f"track file '{path}', line {lineno}: its meta has no valid schema number "
                                         f"(got {schema!r}; the file is corrupt or hand-edited)")
                    if schema > SCHEMA_VERSION:
                        raise InputError(f"track file '{path}', line {lineno}: schema {schema} is not one this "
                                         f"version reads (up to {SCHEMA_VERSION}; upgrade Posecast)")
                    meta = msg
                elif kind == "pose":
                    poses.append(msg)
                elif kind == "end":
                    end = msg
                else:
                    raise InputError(f"track file '{path}', line {lineno}: expected a 'pose' message, "
                                     f"got {kind!r} (the file is corrupt or hand-edited)")
        except UnicodeDecodeError as err:
            raise InputError(f"track file '{path}' is not UTF-8 text ({err.reason}; is this a track file?)") from None
    if meta is None:
        raise InputError(f"track file '{path}' is empty (expected a 'meta' line first; re-record it)")
    if end is not None and end.get("reason") == END_FAILED:
        # A stop is how a live source ends; a failure may have cut the input short.
        (warn or log.warning)(f"track file '{path}': the run that wrote it failed after {len(poses)} poses "
                              f"(its end message says so), so it may lack the rest of its input")
    return meta, poses, end


def track_end(path: Path) -> dict[str, Any] | None:
    """The end message a track file recorded (`TrackWriter.end`): in a .jsonl its last line, in a
    .csv's sidecar under "end", in an .npz as end_json. None where it has none (the run that
    wrote it was killed, or a stage failed; a .bvh, which has no place for it; a file written
    before Posecast recorded ends) or cannot be read."""
    return _recorded(path, "end")


def track_meta(path: Path) -> dict[str, Any] | None:
    """The meta message a .jsonl, .csv or .npz track file recorded (the model, the axes, ...), or
    None where it cannot be read."""
    return _recorded(path, "meta")


def _recorded(path: Path, kind: str) -> dict[str, Any] | None:
    """The track's `kind` message ("meta" or "end"), read without reading its poses."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        return None                  # a named pipe is not read here: it would wait for a writer
    try:
        if suffix in JSONL_SUFFIXES:
            if kind == "meta":
                with open(path, encoding="utf-8") as f:
                    msg = json.loads(f.readline())
            else:
                msg = json.loads(_last_line(path))
        elif suffix == ".csv":
            sidecar = json.loads(path.with_suffix(".meta.json").read_text(encoding="utf-8"))
            msg = sidecar.get("end") if kind == "end" else {k: v for k, v in sidecar.items() if k != "end"}
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                name = f"{kind}_json"
                msg = json.loads(str(arrays[name])) if name in arrays.files else None
        else:
            return None
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    return msg if isinstance(msg, dict) and msg.get("type") == kind else None


def _last_line(path: Path, tail: int = 4096) -> str:
    """The file's last line that is not blank (an end message is far shorter than `tail`)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - tail))
        lines = [line for line in f.read().splitlines() if line.strip()]
    return lines[-1].decode("utf-8") if lines else ""


def _cut_off(line: str) -> bool:
    """Whether `line` is a last line cut short: without its newline, and not JSON (a whole
    message without the newline, as a hand-made file may end, is read)."""
    if line.endswith("\n"):
        return False
    try:
        json.loads(line, parse_constant=_reject_constant)
    except ValueError:
        return True
    return False


def _parse_line(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        msg = json.loads(line, parse_constant=_reject_constant)
    except ValueError as err:
        reason = getattr(err, "msg", str(err))
        raise InputError(f"track file '{path}', line {lineno}: not valid JSON ({reason}; "
                         f"the file is corrupt or was cut off)") from None
    if not isinstance(msg, dict):
        raise InputError(f"track file '{path}', line {lineno}: expected a JSON object, "
                         f"got {type(msg).__name__} (the file is corrupt or hand-edited)")
    return msg


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN/Infinity; the protocol (and every other JSON parser) does not.
    raise ValueError(f"non-finite number {name}")
