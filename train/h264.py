"""Square BGR frames into an H.264 file (yuv420p): the one encoder loop of the tools that make
video for evaluation (`train.synth.clip`, `train.synth.cut_clips`, `scripts/vtest_crop.py`,
`scripts/person_free_video.py`). The pipeline's own writer, with its error messages and the
poses drawn on, is `streamer.overlay.OverlayWriter`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


def not_a_video_name(path: Path) -> str | None:
    """Why `path` cannot name the video a script writes (its extension is no container here), or None."""
    if Path(path).suffix.lower() in CONTAINERS:
        return None
    return f"the output must be a video file ({', '.join(sorted(CONTAINERS))}; got '{path}')"


class NoFrames(ValueError):
    """The frames to encode were none: no file is written."""


def write_h264(path: str | Path, frames: Iterable[np.ndarray], size: int, fps: int,
               options: dict[str, str] | None = None) -> int:
    """Encodes every (size, size, 3) uint8 BGR frame of `frames` to `path` at `fps` frames/s with
    libx264 `options` (e.g. {"crf": "18"}; none: its defaults) and returns how many it wrote.
    PyAV's errors (av.FFmpegError) reach the caller.

    One encoder thread unless `options` say otherwise: x264's output depends on its threads, and
    a seeded clip should come out as nearly the same file as it can on any machine. The file is written
    under a temporary name and renamed into place when whole: an interrupted run leaves no
    half-written video for the next to take as done. Nothing is written for no frames."""
    import av

    from engines.files import replaced_when_done

    written = 0
    container = CONTAINERS.get(Path(path).suffix.lower(), "mp4")     # the temporary name says nothing
    with replaced_when_done(Path(path)) as tmp, av.open(str(tmp), "w", format=container) as out:
        stream = out.add_stream("libx264", rate=fps, options={"threads": "1", **(options or {})})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
            written += 1
        for packet in stream.encode():
            out.mux(packet)
        if not written:
            raise NoFrames(f"no frames to write to {path}")
    return written
