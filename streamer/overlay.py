"""Drawing poses on images, and the overlay video: the input with the results drawn on it."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from engines.errors import InputError, OutputLostError
from engines.files import name_removed, unwritable_reason, write_hint
from engines.skeleton import H36M17, Skeleton
from streamer.frame_rate import FilePace
from streamer.protocol import PersonPose, PoseFrame

log = logging.getLogger(__name__)

# BGR. Left and right in clearly different hues so a mirrored pose is obvious at a glance.
LEFT_COLOR = (255, 128, 0)       # blue
RIGHT_COLOR = (0, 128, 255)      # orange
CENTRE_COLOR = (0, 220, 0)       # green
BOX_COLOR = (200, 200, 200)
TEXT_COLOR = (255, 255, 255)
OUTLINE_COLOR = (0, 0, 0)

DEFAULT_FPS = 30.0
TIME_BASE = Fraction(1, 90_000)  # the overlay's timestamps: MPEG's clock, exact for 25, 30 and 30000/1001 fps
GRID_SNAP_S = 0.001             # a frame this close to its place at the frame rate is put there
OVERLAY_SUFFIXES = (".mp4", ".mkv", ".mov")   # containers that take H.264 and that players open

_SHIFT = 4                       # fractional bits: sub-pixel positions for smooth AA lines
_SCALE = 1 << _SHIFT
_MAX_COORD = 100_000.0           # pixels; keeps wild values inside OpenCV's int range
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def line_thickness(width: int, height: int) -> int:
    """Bone thickness in pixels, growing with the image so poses read the same at any size."""
    return max(2, round(math.hypot(width, height) / 400))


def _font_scale(width: int, height: int, factor: float = 1.0) -> float:
    # Below 0.5 Hershey's glyphs, outlined and then through H.264, smear into one another.
    return max(0.5, math.hypot(width, height) / 2500 * factor)


def _side_color(skeleton: Skeleton, joint: int) -> tuple[int, int, int]:
    if skeleton.is_left(joint):
        return LEFT_COLOR
    if skeleton.is_right(joint):
        return RIGHT_COLOR
    return CENTRE_COLOR


def _faded(color: tuple[int, int, int]) -> tuple[int, int, int]:
    # Halfway to grey rather than darker: still visible on a dark background.
    return tuple((c + 128) // 2 for c in color)  # type: ignore[return-value]


def _check_image(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        raise ValueError(f"expected a BGR uint8 image of shape (H, W, 3), got "
                         f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")


def _text(image: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int]) -> None:
    # A dark outline under the text keeps it legible on any background.
    thick = max(1, round(scale * 2))
    # One pixel of outline round a one-pixel stroke: two would fill a small glyph's holes.
    cv2.putText(image, text, org, _FONT, scale, OUTLINE_COLOR, thick + min(2, thick), cv2.LINE_AA)
    cv2.putText(image, text, org, _FONT, scale, color, thick, cv2.LINE_AA)


def draw_pose(image: np.ndarray, person: PersonPose, skeleton: Skeleton = H36M17,
              min_conf: float = 0.0) -> None:
    """Draws one person in place on a BGR uint8 image: box, score, bones and joints.

    Bones take the colour of their child joint's side (left, right or centre). Joints below
    `min_conf`, and bones touching one, are drawn thin and faded; non-finite joints are skipped.
    """
    _check_image(image)
    h, w = image.shape[:2]
    thick = line_thickness(w, h)
    radius = thick + 1
    scale = _font_scale(w, h)

    box = np.asarray(person.bbox, np.float64) - 0.5
    if np.isfinite(box).all():
        x0, y0, x1, y1 = np.clip(box, -_MAX_COORD, _MAX_COORD).round().astype(int).tolist()
        # Axis-aligned and 1 px: anti-aliasing would only make it slower.
        cv2.rectangle(image, (x0, y0), (x1, y1), BOX_COLOR, 1, cv2.LINE_8)
        label = f"#{person.id} {float(person.score):.2f}"
        (_, text_h), baseline = cv2.getTextSize(label, _FONT, scale, max(1, round(scale * 2)))
        # Above the box, or just inside it when the box touches the top edge.
        ty = y0 - baseline - 2 if y0 - baseline - 2 - text_h >= 0 else y0 + text_h + 2
        _text(image, label, (max(x0, 0), ty), scale, TEXT_COLOR)

    # The protocol puts pixel centres at +0.5 (a pixel spans [i, i + 1)); OpenCV draws with
    # centres at integers.
    xy = np.asarray(person.joints_2d, np.float64) - 0.5
    finite = np.isfinite(xy).all(axis=1)
    pts = (np.clip(np.nan_to_num(xy), -_MAX_COORD, _MAX_COORD) * _SCALE).round().astype(np.int64).tolist()
    confident = (np.asarray(person.conf, np.float64) >= min_conf).tolist()
    finite = finite.tolist()

    for parent, child in skeleton.bones:
        if not (finite[parent] and finite[child]):
            continue
        color = _side_color(skeleton, child)
        if confident[parent] and confident[child]:
            cv2.line(image, pts[parent], pts[child], color, thick, cv2.LINE_AA, _SHIFT)
        else:
            cv2.line(image, pts[parent], pts[child], _faded(color), 1, cv2.LINE_AA, _SHIFT)
    for j in range(skeleton.num_joints):
        if not finite[j]:
            continue
        color = _side_color(skeleton, j)
        if confident[j]:
            cv2.circle(image, pts[j], radius * _SCALE, color, -1, cv2.LINE_AA, _SHIFT)
        else:
            cv2.circle(image, pts[j], radius * _SCALE, _faded(color), 1, cv2.LINE_AA, _SHIFT)


def draw_status(image: np.ndarray, frame: PoseFrame, note: str | None = None) -> None:
    """A small `seq N  people K` line in the top-left corner, and `note` on a line below it."""
    h, w = image.shape[:2]
    scale = _font_scale(w, h, 0.8)
    (_, text_h), _ = cv2.getTextSize("seq", _FONT, scale, 1)
    margin = max(4, text_h // 2)
    _text(image, f"seq {frame.seq}  people {len(frame.people)}", (margin, margin + text_h), scale, TEXT_COLOR)
    if note:
        # A warning that must survive a glance at the video: larger, on a solid box.
        big = scale * 1.4
        (note_w, note_h), base = cv2.getTextSize(note, _FONT, big, max(1, round(big * 2)) + 2)
        top = 2 * margin + text_h
        cv2.rectangle(image, (0, top), (note_w + 4 * margin, top + note_h + base + 2 * margin), (0, 0, 160), -1)
        _text(image, note, (margin, top + margin + note_h), big, (255, 255, 255))


def draw_corner_line(image: np.ndarray, text: str) -> None:
    """One small line in the bottom-left corner (the preview's rate and latency)."""
    h, w = image.shape[:2]
    scale = _font_scale(w, h, 0.8)
    (_, text_h), base = cv2.getTextSize(text, _FONT, scale, 1)
    margin = max(4, text_h // 2)
    _text(image, text, (margin, h - margin - base), scale, TEXT_COLOR)


def _video_rate(fps: float | None) -> Fraction:
    # Sources that do not know their rate report None, 0 or NaN: all mean "unknown".
    if fps is None or not math.isfinite(fps) or fps <= 0:
        fps = DEFAULT_FPS
    return Fraction(fps).limit_denominator(1001)


class OverlayWriter:
    """Encodes the input frames, with their poses drawn on, as an H.264 video (mp4).

    `write` never modifies the image it is given (it may be a view into shared memory): the image
    is copied once into a buffer owned by the writer and drawn on there. yuv420p needs even
    sizes, so an odd width or height is padded by one pixel (a copy of the last column or row),
    and libx264 at least 4 rows: `video_size` is the encoded size. Each frame is shown at its
    media time, counted from the first frame's (`FilePace`: a jump in the times plays on at the
    frame rate), so the video lasts as long as the input and lines up with it, whatever its frame
    rate does. A live source's frame without one (a camera's, MJPEG over HTTP) is shown at the
    time it was read (`t_capture`), so its overlay lasts as long as the run; an image folder's
    frame comes one frame period after the one before.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float | None = None,
                 skeleton: Skeleton = H36M17, min_conf: float = 0.0, note: str | None = None,
                 on_made: Callable[[], None] | None = None, live: bool = False) -> None:
        self.path = Path(path)
        self.live = live
        # What a failed video is removed as: through a symbolic link, the file it names.
        self._file = Path(os.path.realpath(self.path))
        self.note = note
        if width < 1 or height < 1:
            raise ValueError(f"overlay video size must be positive (got {width}x{height})")
        self.width, self.height = int(width), int(height)
        # libx264 refuses pictures under 4 rows: a thinner image gets edge rows below it too.
        self.video_size = (self.width + self.width % 2, max(4, self.height + self.height % 2))
        self.skeleton = skeleton
        self.min_conf = min_conf
        self.frames_written = 0
        self._closed = False
        self._written_to = False               # write() was called, whether or not the file was made
        self._write_failed = False             # a frame could not be encoded or written (a full disk)
        self._on_made = on_made                # told as the file is made (at the first frame)
        self._held: int | None = None          # the file the encoder writes, held open to ask for its names
        self.rate = _video_rate(fps)
        self._pace = FilePace(float(1 / self.rate))
        self._last_pts = -1

        vw, vh = self.video_size
        self._canvas = np.zeros((vh, vw, 3), np.uint8)
        self._yuv = np.zeros((vh * 3 // 2, vw), np.uint8)
        self._check_can_write()
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None

    def _check_can_write(self) -> None:
        """Everything that would stop the video, found now, without making or emptying the file:
        it is made at the first frame, so a run that ends before one leaves a file already at
        the path as it was."""
        if self.path.suffix.lower() not in OVERLAY_SUFFIXES:
            raise InputError(f"cannot tell the video format of overlay video '{self.path}' from its extension "
                             f"(use {', '.join(OVERLAY_SUFFIXES)})")
        why = unwritable_reason(self.path)
        if why is not None:
            raise InputError(f"cannot write overlay video '{self.path}': {why}")
        try:
            av.codec.Codec("libx264", "w")
        except (av.FFmpegError, ValueError) as err:
            raise InputError(f"cannot encode the overlay video '{self.path}': no libx264 encoder in "
                             f"this PyAV ({err}; install the 'av' wheel from PyPI)") from None

    def _start(self) -> tuple[av.container.OutputContainer, av.VideoStream]:
        """Makes the file, at the first frame."""
        try:
            # PyAV opens the file lazily, at the first packet; made here, a path that cannot take
            # it fails on this frame, and the file is there to remove if the video is not finished.
            with open(self.path, "wb"):
                pass
        except OSError as err:
            raise InputError(f"cannot write overlay video '{self.path}': {err.strerror or err} "
                             f"({write_hint(err)})") from None
        if self._on_made is not None:
            self._on_made()
        try:
            container = av.open(str(self.path), mode="w")
        except (av.FFmpegError, OSError) as err:
            self._file.unlink(missing_ok=True)
            raise InputError(f"cannot write overlay video '{self.path}': {err} (check the path)") from None
        try:
            stream = container.add_stream("libx264", rate=self.rate, options={"preset": "veryfast", "crf": "23"})
        except (av.FFmpegError, ValueError) as err:
            container.close()
            self._file.unlink(missing_ok=True)
            raise InputError(f"cannot encode the overlay video '{self.path}': {err}") from None
        stream.width, stream.height = self.video_size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = TIME_BASE
        try:
            # Opened now rather than at the first packet, which the encoder holds back for tens of
            # frames: the file it writes is then the one made above, held open here so that close
            # can ask whether any name still reaches it (else one deleted meanwhile was made again,
            # unseen). Its names, not the path: a video renamed during the run is not lost.
            container.start_encoding()
            self._held = os.open(self._file, os.O_RDONLY)
        except (av.FFmpegError, OSError) as err:
            container.close()
            self._file.unlink(missing_ok=True)
            raise InputError(f"cannot write overlay video '{self.path}': {_failure(err)}") from None
        self._container, self._stream = container, stream
        return container, stream

    @property
    def failed(self) -> bool:
        """A frame could not be written (a full disk): the video is removed as it closes."""
        return self._write_failed

    def _lost(self) -> bool:
        """Whether the video's file was deleted, or its folder removed, since it was made: no name
        reaches it any more (as the tracks ask). Closes the file held to ask."""
        if self._held is None:
            return False
        try:
            return name_removed(self._held)
        finally:
            os.close(self._held)
            self._held = None

    def write(self, image: np.ndarray, frame: PoseFrame) -> None:
        """Draws `frame`'s people and status line on a copy of `image` and encodes it."""
        if self._closed:
            raise ValueError(f"overlay video '{self.path}' is already closed")
        self._written_to = True
        _check_image(image)
        ih, iw = image.shape[:2]
        if ih > self.height or iw > self.width:
            raise ValueError(f"overlay video '{self.path}' is {self.width}x{self.height}, "
                             f"got a larger {iw}x{ih} image")
        canvas, w, h = self._canvas, self.width, self.height
        if (ih, iw) != (h, w):
            # Image folders mix sizes: a smaller image sits top-left on black, joints unmoved.
            canvas[:h, :w] = 0
        np.copyto(canvas[:ih, :iw], image)
        for person in frame.people:
            draw_pose(canvas, person, self.skeleton, self.min_conf)
        draw_status(canvas, frame, self.note)
        # Edge copies for the padding (not black): no dark fringe from chroma subsampling.
        if w < canvas.shape[1]:
            canvas[:, w:] = canvas[:, w - 1:w]
        if h < canvas.shape[0]:
            canvas[h:] = canvas[h - 1:h]
        # OpenCV's BT.601 limited-range I420 matches FFmpeg's default and is ~5x faster than swscale.
        cv2.cvtColor(canvas, cv2.COLOR_BGR2YUV_I420, dst=self._yuv)
        if self._container is None or self._stream is None:
            container, stream = self._start()
        else:
            container, stream = self._container, self._stream
        # The frame wraps the I420 buffer without a copy: libx264, the only encoder used, copies the
        # picture into its own frames within encode(), before the next frame is drawn into it
        # (the videos were byte-identical to a copying frame's at 768x576 and 1080p). PyAV's
        # wrapper takes the height as rows // 6 * 4, two rows short (and the colour planes
        # misplaced) where it is 2 more than a multiple of 4: those sizes get a copy.
        if self.video_size[1] % 4 == 0:
            video_frame = av.VideoFrame.from_numpy_buffer(self._yuv, format="yuv420p")
        else:
            video_frame = av.VideoFrame.from_ndarray(self._yuv, format="yuv420p")
        shown_at = frame.t_media if frame.t_media is not None or not self.live else frame.t_capture
        video_frame.pts = self._pts(shown_at)
        video_frame.time_base = TIME_BASE
        try:
            for packet in stream.encode(video_frame):
                container.mux(packet)
        except (av.FFmpegError, OSError) as err:
            self._write_failed = True
            raise InputError(f"cannot write overlay video '{self.path}': {_failure(err)}; the unfinished video is "
                             "removed") from None
        self.frames_written += 1

    def _pts(self, t_media: float | None) -> int:
        """The frame's place in the video, in TIME_BASE units, after the frame before."""
        pace = self._pace
        if t_media is not None and not math.isfinite(t_media):
            t_media = None
        pts = round(pace.due(t_media, 0.0) / TIME_BASE)
        # Times rounded to the millisecond (Matroska's) onto the frame grid where they are on it
        # but for the rounding: a steady input gives a steady video.
        grid = pace.period / TIME_BASE
        on_grid = round(round(pts / grid) * grid)
        if abs(pts - on_grid) <= GRID_SNAP_S / TIME_BASE:
            pts = on_grid
        pts = max(pts, self._last_pts + 1)
        self._last_pts = pts
        return pts

    def close(self, input_failed: bool = False) -> None:
        """Flushes the encoder and finishes the file. Idempotent. With no frame there is no file
        (and one already at the path is left as it was), with a warning unless the input or the
        run failed before its first frame (its error says why)."""
        if self._closed:
            return
        self._closed = True
        container, stream = self._container, self._stream
        if container is None or stream is None:
            if not input_failed and not self._written_to:     # else the error that stopped it says why
                log.warning("no frame reached the overlay video '%s', so it was not written", self.path)
            return
        lost = self._lost()
        failed: BaseException | None = None
        if self.frames_written:
            try:
                for packet in stream.encode(None):
                    container.mux(packet)
            except (av.FFmpegError, OSError) as err:
                failed = err
        try:
            container.close()            # writes the index, without which no player opens the file
        except (av.FFmpegError, OSError) as err:
            failed = failed or err
        if lost:
            # Nothing to remove (a file at the path now is another one); a failed frame has said so.
            if not self._write_failed:
                raise OutputLostError([str(self.path)])
            return
        if not self.frames_written:
            # Its first frame could not be encoded: an empty file no player opens is no video.
            self._file.unlink(missing_ok=True)
            return
        if failed is not None or self._write_failed:
            # Without its index the file plays nowhere: remove it rather than leave a broken video.
            self._file.unlink(missing_ok=True)
            if not self._write_failed:           # else the frame's error has said so: once is enough
                raise InputError(f"cannot finish overlay video '{self.path}': {_failure(failed)}; the unfinished "
                                 "video was removed") from None

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _failure(err: BaseException) -> str:
    """What failed, in the tracks' words ("No space left on device (free some disk space)"), not
    PyAV's "[Errno 28] No space left on device: 'PATH'": the message names the video already."""
    if isinstance(err, OSError) and err.errno:
        return f"{err.strerror or err} ({write_hint(err)})"
    return f"{err} (check free disk space)"
