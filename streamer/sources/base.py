"""What every source is: its `SourceInfo`, the `Frame`s it yields, and the `Source` interface."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np

log = logging.getLogger(__name__)

DETAILED_WARNINGS = 10         # then only a count, so a badly damaged file can't flood the log
# Counterclockwise quarter turns as OpenCV's rotations (cv2.rotate: about 7 times faster into the
# ring than copying np.rot90's view element by element, at 1080p).
CV2_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def three_channels(image: np.ndarray) -> np.ndarray | None:
    """An 8-bit grey, BGR or BGRA picture as BGR (grey and alpha dropped to three channels);
    None for any other number of channels."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image if image.shape[2] == 3 else None


def sendable_text(text: str) -> str:
    """`text` as messages can carry it: a file name's bytes that are not UTF-8 (names from old
    archives and shares, which Python decodes to lone surrogates) written as \\xNN instead."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class SourceInfo:
    name: str                   # short id for topics/logs: file stem, 'cam0', URL host, folder name
    uri: str                    # what the user gave
    live: bool                  # cameras and streams: stale frames may be dropped; files never
    width: int                  # frame width; image folders: the largest width a frame can have
    height: int
    fps: float | None           # frames a second if known (from the timestamps where the container's is wrong)
    frame_count: int | None     # total frames if known (an estimate for some files)
    stills: bool = False        # each frame is its own image (image folders), not a moment of one scene

    def __post_init__(self) -> None:
        # Both go into the protocol's messages (and msgpack between the stages), which need UTF-8.
        object.__setattr__(self, "name", sendable_text(self.name))
        object.__setattr__(self, "uri", sendable_text(self.uri))


@dataclass
class Frame:
    """A picture and when it came. `image` is the picture as stored, which a phone's video may
    need turned to be upright (`quarter_turns`): the turn is made where the picture is copied to
    anyway (`copy_upright_into`, the capture's one copy into shared memory), not as a second copy."""
    image: np.ndarray           # (H, W, 3) uint8 BGR as stored, possibly strided; valid until the next read
    index: int                  # 0-based position among the frames yielded
    t_capture: float            # time.time() when the frame became available
    t_media: float | None       # presentation time in seconds (video files and streams)
    scale: float = 1.0          # original-image pixels per frame pixel (downscaled folder images)
    name: str | None = None     # image file name (folders)
    new_shot: bool = False      # shares nothing with the frame before (a looped file starting again, an image of another size)
    quarter_turns: int = 0      # counterclockwise quarter turns that show `image` upright
    # An image scaled down to fit: (width, height) of the upright picture in its file, which a
    # single `scale` can miss by a pixel (8000x5330 fitted to 1920x1279).
    full_size: tuple[int, int] | None = None

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) of the upright picture."""
        h, w = self.image.shape[:2]
        return (h, w) if self.quarter_turns % 2 else (w, h)

    def upright(self) -> np.ndarray:
        """The upright picture: `image` itself, or a turned copy."""
        turns = self.quarter_turns % 4
        return cv2.rotate(self.image, CV2_TURNS[turns]) if turns else self.image

    def copy_upright_into(self, dst: np.ndarray) -> None:
        """The upright picture copied into `dst` ((height, width, 3) uint8, contiguous), turned
        on the way where it needs turning: one copy either way."""
        turns = self.quarter_turns % 4
        if not turns:
            np.copyto(dst, self.image)
            return
        out = cv2.rotate(self.image, CV2_TURNS[turns], dst=dst)
        if out is not dst and not np.shares_memory(out, dst):     # OpenCV made its own: never here
            np.copyto(dst, out)


class Source(ABC):
    """A blocking, single-pass supplier of frames. Use as a context manager, or call close().

    Warnings about a file's damage are held until its first frame (`_warn`): an input that gives
    no frame ends in one error line that sums them up, rather than a warning per damaged part first."""

    info: SourceInfo
    corrupt: int                # corrupt packets/frames/images skipped so far
    # A live network stream's first frames of each connection come at once: what FFmpeg read
    # while opening it, seconds old where the sender went on meanwhile.
    backlog_at_open: bool = False
    _held_warnings: list[tuple[str, tuple[object, ...]]] | None   # [] in __init__; None once released

    def _warn(self, message: str, *args: object) -> None:
        if self._held_warnings is None:
            log.warning(message, *args)
        else:
            self._held_warnings.append((message, args))

    def _release_warnings(self) -> None:
        """Says the warnings held so far: the input has given a frame (or ended with frames)."""
        if self._held_warnings is not None:
            held, self._held_warnings = self._held_warnings, None
            for message, args in held:
                log.warning(message, *args)

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield frames until the input ends (files) or fails (live: raises InputError)."""

    @abstractmethod
    def close(self) -> None:
        """Release the input. Safe to call more than once."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def error_reason(exc: BaseException) -> str:
    """An OS or FFmpeg error's human reason ('Connection refused'), without errno numbers or paths."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return str(reason).strip().rstrip(".") or type(exc).__name__
