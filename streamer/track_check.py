"""A recorded track's messages checked before they are used again (`replay`, `convert`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engines.errors import InputError
from streamer.protocol_check import message_problem
from streamer.tracks import read_track_and_end


def read_checked_track(track: Path, purpose: str, warn: Callable[[str], None] | None = None
                       ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """`read_track_and_end`, then an `InputError` naming the first line that is not a usable
    protocol message: `read_track` checks only each line's type, and a replay or a conversion would
    otherwise fail half-way, or pass on messages that nothing can use. `purpose` ("replay",
    "convert") words the error of a track with no pose message; `warn` is told of a last line
    cut off mid-write (left out)."""
    meta, poses, end = read_track_and_end(track, warn)
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
    if not poses:
        raise InputError(f"track file '{track}' holds no pose messages, only its meta line: nothing to {purpose}")
    return meta, poses, end


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
