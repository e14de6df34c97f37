"""`posecast convert`: a recorded .jsonl track written again in other formats (.csv, .npz, .bvh).

A `.jsonl` track holds every message the stream carried; the other formats are made from those
messages alone, without the video or the network, by the writers `track -o` uses, from the
numbers as the messages hold them (rounded to 0.1 mm and 0.01 px, as the stream rounds them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engines.errors import InputError, PosecastError, ReaderGoneError
from streamer.closing import close_all
from streamer.track_check import read_checked_track
from streamer.tracks import TrackWriter, is_stdout, open_track_writer


def convert_track(track: Path, outputs: list[Path], announce: Callable[[str], None]) -> int:
    """Writes each of `outputs` from the pose messages of `track`. Every line is checked before
    any output is opened (a bad line is one error, and no output is half made); an output that
    fails while it is written leaves the others to be finished, and its error is raised then; every
    output is closed whatever happens, so those written as they go keep what they got. Returns 0."""
    meta, poses, end = read_checked_track(track, "convert", lambda m: announce(f"warning: {m}"))
    bvh = [str(p) for p in outputs if p.suffix.lower() == ".bvh"]
    if bvh and not any(msg.get("people") for msg in poses):
        # Said before any output is made, not after the others are written.
        raise InputError(f"'{track}' has nobody in any of its {len(poses)} pose messages, and a BVH needs a "
                         f"pose: {', '.join(bvh)} cannot be made from it")
    writers = []
    failed: list[tuple[TrackWriter, PosecastError]] = []      # each output that failed, with its error
    try:
        for path in outputs:
            writers.append(open_track_writer(path, meta))
        writing = list(writers)
        for msg in poses:
            for writer in list(writing):
                try:
                    writer.write_message(msg)
                except PosecastError as err:
                    # One output that cannot be written (its disk full) must not cut the others
                    # short: an .npz or .bvh would be a whole-looking file of the first frames only.
                    # The others are finished, and the first failure's error is the command's line.
                    writing.remove(writer)
                    failed.append((writer, err))
        if end is not None:
            # The outputs say what the track says: whether its input was read to its end.
            for writer in writing:
                try:
                    writer.end(end)
                except PosecastError as err:
                    failed.append((writer, err))
    finally:
        close_all([w.close for w in writers])
    if failed:
        failure = failed[0][1]
        # `convert t.jsonl -o - | head`: the reader chose to go, and every file beside it is
        # finished, so the command ends as a pipeline's writer does: 141, without a line.
        if all(isinstance(err, ReaderGoneError) and is_stdout(w.path) for w, err in failed):
            failure.quiet = True
        raise failure
    announce(f"{len(poses)} pose messages from '{track}' -> {', '.join(str(p) for p in outputs)}")
    return 0
