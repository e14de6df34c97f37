"""`posecast convert`: a recorded .jsonl track written again in other formats (.csv, .npz, .bvh).

A `.jsonl` track holds every message the stream carried; the other formats are made from those
messages alone, without the video or the network, by the writers `track -o` uses, from the
numbers as the messages hold them (rounded to 0.1 mm and 0.01 px, as the stream rounds them).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engines.errors import InputError, PosecastError, ReaderGoneError
from engines.stop_signals import StopSignals, exit_code
from streamer.closing import close_all
from streamer.track_check import read_checked_track
from streamer.tracks import (ReaderWaitStopped, TrackWriter, is_stdout, may_block, open_track_writer,
                             stoppable_write)


def convert_track(track: Path, outputs: list[Path], announce: Callable[[str], None]) -> int:
    """Writes each of `outputs` from the pose messages of `track`. Every line is checked before
    any output is opened (a bad line is one error, and no output is half made); an output that
    fails while it is written leaves the others to be finished, and its error is raised then; every
    output is closed whatever happens, so those written as they go keep what they got. Returns 0,
    or 128 + the signal's number where Ctrl-C, SIGTERM or SIGHUP stopped it: said, with what the
    outputs hold (an .npz or .bvh of the first messages looks whole, but for its length)."""
    try:
        meta, poses, end = read_checked_track(track, "convert", lambda m: announce(f"warning: {m}"))
    except KeyboardInterrupt as stop:
        with contextlib.suppress(OSError):      # SIGHUP: the terminal may be gone
            announce(f"interrupted ({signal.Signals(exit_code(stop) - 128).name}) while reading '{track}'; "
                     f"nothing was written")
        return exit_code(stop)
    bvh = [str(p) for p in outputs if p.suffix.lower() == ".bvh"]
    if bvh and not any(msg.get("people") for msg in poses):
        # Said before any output is made, not after the others are written.
        raise InputError(f"'{track}' has nobody in any of its {len(poses)} pose messages, and a BVH needs a "
                         f"pose: {', '.join(bvh)} cannot be made from it")
    writers: list[TrackWriter] = []
    failed: list[tuple[TrackWriter, PosecastError]] = []      # each output that failed, with its error
    waited: list[TrackWriter] = []     # named pipes stopped while they waited for a reader: nothing went in
    written = 0
    # A stop is only noted, and heeded between two messages: a KeyboardInterrupt raised inside a
    # writer's close (a .bvh's solve, at the end) would lose that output and every one after it.
    with StopSignals() as stop:
        try:
            written = _write(outputs, meta, poses, end, writers, failed, waited, stop)
        finally:
            close_all([w.close for w in writers])
    if stop.signum is not None:
        held = [w.path for w in writers if w not in waited]
        with contextlib.suppress(OSError):      # SIGHUP: the terminal may be gone
            if written == 0 or not held:
                announce(f"interrupted ({stop.name}) before the first pose message was written; nothing was "
                         f"written")
            elif written < len(poses):
                announce(f"interrupted ({stop.name}) after {written} of the {len(poses)} pose messages of "
                         f"'{track}'; {_listed(held)} hold{'s' if len(held) == 1 else ''} those alone "
                         f"(convert it again for the whole track)")
            else:
                announce(f"interrupted ({stop.name}) while the outputs were closed; they were finished, with all "
                         f"{len(poses)} pose messages")
        return 128 + stop.signum
    if failed:
        failure = failed[0][1]
        # `convert t.jsonl -o - | head`: the reader chose to go, and every file beside it is
        # finished, so the command ends as a pipeline's writer does: 141, without a line.
        if all(isinstance(err, ReaderGoneError) and is_stdout(w.path) for w, err in failed):
            failure.quiet = True
        raise failure
    announce(f"{len(poses)} pose messages from '{track}' -> "
             f"{', '.join('standard output' if is_stdout(p) else str(p) for p in outputs)}")
    return 0


def _write(outputs: list[Path], meta: dict[str, Any], poses: list[dict[str, Any]], end: dict[str, Any] | None,
           writers: list[TrackWriter], failed: list[tuple[TrackWriter, PosecastError]], waited: list[TrackWriter],
           stop: StopSignals) -> int:
    """Opens the outputs (into `writers`, for the caller to close) and writes the messages until a
    stop; returns how many it wrote. An output that fails goes into `failed`, the others go on; a
    named pipe whose wait for its reader a stop ended, into `waited`."""
    for path in outputs:
        # A named pipe's wait for its reader ends at a stop too.
        writers.append(open_track_writer(path, meta, cancelled=lambda: stop.signum is not None))
    # A write into a pipe waits for its reader, as long as the reader likes (`-o - | less`, a
    # stalled program at a named pipe): a stop ends that write at once, as it ended before stops
    # were only noted. Noted alone, it would leave `timeout` and a second Ctrl-C no way out. Not
    # its first write, which fits the empty pipe and whose wait for a named pipe's reader ends at
    # a stop of itself (`stoppable_write`). The pipes take each message first, so that a stop in
    # their write leaves every other output at the message before, as the line says.
    blocking = {id(w) for w, path in zip(writers, outputs) if may_block(path)}
    writing = sorted(writers, key=lambda w: id(w) not in blocking)
    written = 0
    try:
        for written, msg in enumerate(poses):
            if stop.signum is not None:
                return written
            for writer in list(writing):
                try:
                    with stoppable_write(stop, writer, id(writer) in blocking):
                        writer.write_message(msg)
                except ReaderWaitStopped:
                    writing.remove(writer)
                    waited.append(writer)
                except PosecastError as err:
                    # One output that cannot be written (its disk full) must not cut the others
                    # short: an .npz or .bvh would be a whole-looking file of the first frames only.
                    # The others are finished, and the first failure's error is the command's line.
                    writing.remove(writer)
                    failed.append((writer, err))
        written = len(poses)
        if end is not None and stop.signum is None:
            # The outputs say what the track says: whether its input was read to its end.
            for writer in writing:
                try:
                    with stoppable_write(stop, writer, id(writer) in blocking):
                        writer.end(end)
                except PosecastError as err:
                    failed.append((writer, err))
    except KeyboardInterrupt:
        if stop.signum is None:         # not a stop of ours (StopSignals sets no handler off the main thread)
            raise
        # A stop while a pipe's write waited (noted in `stop`): that pipe may end in part of a line.
        return written
    return len(poses)


def _listed(outputs: list[Path]) -> str:
    return ", ".join("standard output" if is_stdout(p) else f"'{p}'" for p in outputs)
