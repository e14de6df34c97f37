"""Input sources: video files, cameras, network streams and image folders, behind one interface.

`open_source(spec, config)` picks the source from what the user typed (a camera number or
/dev/videoN, a stream URL, a folder, an image pattern or file, a video file) and opens it, so
every problem with the input is reported before the pipeline starts, as an `InputError` whose
one-line message says what failed and what to do. A source then yields `Frame`s, blocking,
until its input ends; damaged data is skipped and counted in `Source.corrupt`, never silently.

A source is read by one thread: call `close()` from the thread that iterates `frames()` (or after
it stops). A blocked network read gives up by itself after `read_timeout_s`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from engines.errors import InputError
from streamer.config import SourceConfig
from streamer.sources.av_source import redact_url
from streamer.sources.base import Frame, Source, SourceInfo
from streamer.sources.camera import CAMERA_SPEC, CameraSource
from streamer.sources.images import GLOB_CHARS, IMAGE_EXTENSIONS, ImageFolderSource
from streamer.sources.stream import STREAM_SCHEMES, StreamSource, mistyped_url_hint, shown_spec
from streamer.sources.video_file import VideoFileSource

__all__ = ["CameraSource", "Frame", "ImageFolderSource", "Source", "SourceInfo", "StreamSource", "VideoFileSource",
           "open_source", "redact_url", "source_kind"]

log = logging.getLogger(__name__)

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def source_kind(spec: str) -> str:
    """What `open_source` opens `spec` as: "camera", "stream", "images" (a folder, a pattern or a
    picture) or "file" (a video file), before any check of whether it can."""
    if CAMERA_SPEC.match(spec) and not (spec.isdigit() and Path(spec).exists()):
        return "camera"
    if _URL.match(spec):
        return "stream"
    path = Path(os.path.expanduser(spec))
    picture = path.suffix.lower() in IMAGE_EXTENSIONS
    if path.exists():
        return "images" if path.is_dir() or (picture and path.is_file()) else "file"
    # Nothing there: a pattern, or a picture that open_source reports missing.
    return "images" if picture or GLOB_CHARS.search(spec) else "file"


def open_source(spec: str, config: SourceConfig, reopened: bool = False) -> Source:
    """Open the input `spec` names; raises InputError with a one-line reason if it can't.

    `reopened`: the same input again (a reconnect, a `--loop` restart), whose start-up notices
    (a camera number read as a file, a second video stream, pictures left out) were already given."""
    spec = str(spec)
    if not spec.strip():
        # An unset shell variable ("$VIDEO"): not the current folder's images.
        raise InputError("the input is empty: give a video file, an image folder or pattern, a stream URL "
                         "or a camera number")
    kind = source_kind(spec)
    if kind == "camera":
        return CameraSource(spec, config)
    if CAMERA_SPEC.match(spec) and not reopened:
        log.warning("'%s' is read as the %s of that name here; for camera %s, give /dev/video%s",
                    spec, "folder" if Path(spec).is_dir() else "file", spec, spec)
    if kind == "stream":
        scheme = _URL.match(spec).group(1).lower()   # type: ignore[union-attr]
        if scheme not in STREAM_SCHEMES:
            raise InputError(
                f"unsupported URL scheme '{scheme}' in '{redact_url(spec)}' (supported: "
                f"{', '.join(STREAM_SCHEMES)}; or give a video file, a folder or a camera number)"
            )
        return StreamSource(spec, config, reopened)
    if kind == "images":
        if not Path(os.path.expanduser(spec)).exists() and not GLOB_CHARS.search(spec):
            raise InputError(f"cannot open image '{shown_spec(spec)}': no such file{mistyped_url_hint(spec)}")
        return ImageFolderSource(spec, config.max_image_side, reopened)
    return VideoFileSource(spec, reopened)
