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

import glob
import logging
import os
import re
import sys
import threading
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import av
import cv2
import numpy as np
from PIL import Image

from engines.errors import InputError
from streamer.config import SourceConfig
from streamer.frame_rate import choose_rate, rate_from_times

log = logging.getLogger(__name__)

_EXIF_TURNED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")   # Pillow's names
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
                    ".pnm", ".jp2", ".j2k")
# Pictures a folder may hold that are not read as shots: named in a warning, not silently left out.
# (A GIF is often an animation: given alone, it is read as a video.)
UNREAD_IMAGE_EXTENSIONS = (".gif", ".heic", ".heif", ".avif", ".jxl", ".svg", ".ico", ".dng", ".cr2", ".nef", ".arw")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_GLOB_CHARS = re.compile(r"[*?\[]")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_CAMERA = re.compile(r"^(?:/dev/video)?(\d+)$")
_CV2_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}
_DETAILED_WARNINGS = 10        # then only a count, so a badly damaged file can't flood the log
SHORT_END_SLACK = 2            # frames a file with a stated duration may end early by, unreported
LOOK_AHEAD_PACKETS = 64        # a file's packets read before its first frame: ~2 s to time frames by


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


@dataclass
class Frame:
    image: np.ndarray           # (H, W, 3) uint8 BGR, possibly strided; valid until the next read
    index: int                  # 0-based position among the frames yielded
    t_capture: float            # time.time() when the frame became available
    t_media: float | None       # presentation time in seconds (video files and streams)
    scale: float = 1.0          # original-image pixels per frame pixel (downscaled folder images)
    name: str | None = None     # image file name (folders)
    new_shot: bool = False      # shares nothing with the frame before (a looped file starting again)


class Source(ABC):
    """A blocking, single-pass supplier of frames. Use as a context manager, or call close().

    Warnings about a file's damage are held until its first frame (`_warn`): an input that gives
    no frame ends in one error line that sums them up, rather than a warning per damaged part first."""

    info: SourceInfo
    corrupt: int                # corrupt packets/frames/images skipped so far
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


def open_source(spec: str, config: SourceConfig, reopened: bool = False) -> Source:
    """Open the input `spec` names; raises InputError with a one-line reason if it can't.

    `reopened`: the same input again (a reconnect, a `--loop` restart), whose start-up notices
    (a camera number read as a file, a second video stream, pictures left out) were already given."""
    spec = str(spec)
    if not spec.strip():
        # An unset shell variable ("$VIDEO"): not the current folder's images.
        raise InputError("the input is empty: give a video file, an image folder or pattern, a stream URL "
                         "or a camera number")
    if _CAMERA.match(spec):
        if spec.isdigit() and Path(spec).exists():
            if not reopened:
                log.warning("'%s' is read as the %s of that name here; for camera %s, give /dev/video%s",
                            spec, "folder" if Path(spec).is_dir() else "file", spec, spec)
        else:
            return CameraSource(spec, config)
    url = _URL.match(spec)
    if url:
        scheme = url.group(1).lower()
        if scheme not in STREAM_SCHEMES:
            raise InputError(
                f"unsupported URL scheme '{scheme}' in '{_redact(spec)}' (supported: "
                f"{', '.join(STREAM_SCHEMES)}; or give a video file, a folder or a camera number)"
            )
        return StreamSource(spec, config, reopened)
    path = Path(os.path.expanduser(spec))
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS):
        return ImageFolderSource(spec, config.max_image_side, reopened)
    if not path.exists() and _GLOB_CHARS.search(spec):
        return ImageFolderSource(spec, config.max_image_side, reopened)
    if not path.exists() and path.suffix.lower() in IMAGE_EXTENSIONS:
        raise InputError(f"cannot open image '{spec}': no such file")
    return VideoFileSource(spec, reopened)


# ------------------------------------------------------------------------------------------------
# PyAV: video files and network streams share one demux/decode loop.


def _reason(exc: BaseException) -> str:
    """FFmpeg's human reason ('Connection refused'), without errno numbers or paths."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return str(reason).strip().rstrip(".") or type(exc).__name__


def _redact(url: str) -> str:
    """The URL without a password, so error messages and logs never show credentials."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}{port}"))
    except ValueError:
        return url


def _describe_streams(container: av.container.InputContainer) -> str:
    kinds: dict[str, int] = {}
    for s in container.streams:
        kinds[s.type] = kinds.get(s.type, 0) + 1
    if not kinds:
        return "no streams at all"
    return ", ".join(f"{n} {k} stream{'s' if n > 1 else ''}" for k, n in kinds.items())


class _AVSource(Source):
    """Demuxes the first video stream and decodes it; subclasses decide what a failure means."""

    def __init__(self, container: av.container.InputContainer, info_name: str, uri: str,
                 live: bool, what: str, reopened: bool = False) -> None:
        self._container = container
        self._what = what                      # how messages name the input: "'x.mp4'", a URL
        self.corrupt = 0
        self._decode_errors = 0
        self._concealed = 0                    # frames given with damage the decoder covered up
        self._packets = 0                      # non-empty, non-discarded packets sent to decode
        self._discarded = 0
        self._closed = False
        self._resized = False                  # warned of a mid-stream size change
        self._quarter_turns = 0                # counterclockwise, applied to every frame
        try:
            if not container.streams.video:
                raise InputError(
                    f"{what} has no video stream (it has {_describe_streams(container)})")
            stream = main_video_stream(container)
            if len(container.streams.video) > 1 and not reopened:
                log.warning("%s has %d video streams; tracking stream #%d (%dx%d, %s), the one players show",
                            what, len(container.streams.video), stream.index, stream.codec_context.width,
                            stream.codec_context.height, stream.codec_context.name)
            if not stream.codec_context.width or not stream.codec_context.height:
                raise InputError(f"{what} has a video stream with no frame size (codec "
                                 f"'{stream.codec_context.name}'); re-encode it, e.g. to H.264")
            # Frame threading is the big decode speed-up at 1000x1000, but it holds back one
            # frame per thread: fine for files, too much latency for live inputs.
            stream.thread_type = "SLICE" if live else "AUTO"
            stream.codec_context.open(strict=False)
        except InputError:
            container.close()
            raise
        except (av.FFmpegError, ValueError) as exc:
            container.close()
            raise InputError(f"cannot decode the video in {what}: {_reason(exc)}") from None
        self._stream = stream
        self._demux = container.demux(stream)
        # A file's first packets are read now, and decoded later, so that their timestamps can
        # check the container's frame rate before the pipeline sizes its filters from it.
        self._ahead: list[av.Packet] = []
        self._ahead_error: av.FFmpegError | None = None
        self._demux_ended = False
        self._last_pts: int | None = None       # the latest timestamp of a video packet read (stream units)
        self._held_warnings = []
        if not live:
            self._read_ahead(LOOK_AHEAD_PACKETS)
        stated = stream.average_rate or stream.guessed_rate or stream.base_rate
        rate = choose_rate(float(stated) if stated else None, rate_from_times(
            [float(p.pts * p.time_base) for p in self._ahead if p.pts is not None and p.time_base]))
        if rate.corrected:
            shown = f"not the {rate.stated:.4g} fps its container gives" if rate.stated else "its container gives none"
            log.info("%s: its frames come %.4g a second (%s); using that", what, rate.fps, shown)
        self.info = SourceInfo(
            name=info_name, uri=uri, live=live, width=stream.codec_context.width,
            height=stream.codec_context.height, fps=rate.fps,
            frame_count=self._frame_count(container, stream, rate.fps),
        )

    def _read_ahead(self, count: int) -> None:
        """Demux up to `count` packets of the stream into `_ahead`; frames() decodes them first.
        A read error is kept for frames() to meet where it happened."""
        try:
            for packet in self._demux:
                self._ahead.append(packet)
                if len(self._ahead) >= count:
                    return
        except av.FFmpegError as exc:
            self._ahead_error = exc
        self._demux_ended = True          # asked again, PyAV's ended demuxer raises StopIteration through `yield from`

    def _packet_stream(self) -> Iterator[av.Packet]:
        """The packets read ahead, then the rest of the stream."""
        ahead, self._ahead = self._ahead, []
        yield from ahead
        if self._ahead_error is not None:
            raise self._ahead_error
        if not self._demux_ended:
            yield from self._demux
            self._demux_ended = True

    @staticmethod
    def _frame_count(container: av.container.InputContainer, stream: av.VideoStream,
                     fps: float | None) -> int | None:
        if stream.frames > 0:
            return int(stream.frames)
        if fps is None:
            return None
        if stream.duration and stream.time_base:
            return max(1, round(float(stream.duration * stream.time_base) * fps))
        if container.duration:
            return max(1, round(container.duration / av.time_base * fps))
        return None

    def frames(self) -> Iterator[Frame]:
        index = 0
        demux = self._packet_stream()
        read_error: av.FFmpegError | None = None
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                read_error = exc
                break
            if packet.size and packet.pts is not None and (self._last_pts is None or packet.pts > self._last_pts):
                self._last_pts = packet.pts
            if packet.size and packet.is_corrupt:
                # A packet the demuxer could only partly read (a truncated file, a lost network
                # chunk): decoding it would yield a damaged picture or stall frame threads.
                self._skipped(f"incomplete packet at {self._when(packet)}")
                continue
            if packet.size:
                if packet.is_discard:
                    self._discarded += 1           # edit-list trims: never meant to be shown
                else:
                    self._packets += 1
            for av_frame in self._decode(packet):
                frame = self._to_frame(av_frame, index)
                self._count_concealed(av_frame, index)
                self._release_warnings()
                yield frame
                index += 1
        if read_error is not None:
            # The demuxer's end-of-stream flush packets never came: drain the decoder by hand.
            for av_frame in self._decode(None):
                frame = self._to_frame(av_frame, index)
                self._count_concealed(av_frame, index)
                self._release_warnings()
                yield frame
                index += 1
        if self._concealed > 1:
            # Damage inside a picture's data that FFmpeg filled in from around it raises no
            # error: the frame is there (nothing is lost), but its picture, and so its pose, may not be.
            self._warn("%s: %d frame(s) were decoded from damaged data (the decoder filled in what was "
                       "missing); their poses may be wrong", self._what, self._concealed)
        if read_error is not None:
            self._account_lost(index)
            self._on_read_error(read_error, index)
        else:
            self._account_lost(index)
            self._on_end(index)
        if index == 0:
            # The warnings held so far say what this line sums up.
            raise InputError(f"{self._what} gave no frame to track: {self._why_no_frames()}")
        self._release_warnings()


    def _why_no_frames(self) -> str:
        if self._discarded and not self.corrupt:
            return (f"its {self._discarded} frame(s) are all marked not to be shown (by its edit list); "
                    f"re-encode it, e.g. to H.264")
        if self.corrupt:
            return f"none could be decoded (about {self.corrupt} frame(s) damaged or missing); the file is damaged"
        return "it holds no video frames"

    def _decode(self, packet: av.Packet | None) -> list[av.VideoFrame]:
        try:
            if packet is None:
                return list(self._stream.codec_context.decode(None))
            return list(packet.decode())
        except av.FFmpegError as exc:
            self._decode_errors += 1
            where = self._when(packet) if packet is not None and packet.size else "the end"
            self._skipped(f"undecodable data at {where} ({_reason(exc)})")
            return []

    def _account_lost(self, yielded: int) -> None:
        # After damage, FFmpeg silently drops frames whose reference frames are gone (and frame
        # threads may lose buffered frames when they report an error). Packets in minus frames
        # out minus errors already counted is that loss; counting it keeps "frames yielded +
        # corrupt == frames in the input" true. Only after an error, because some containers
        # legitimately carry a packet or two that produce no picture.
        if not self.corrupt:
            return
        lost = self._packets - yielded - self._decode_errors
        if lost > 0:
            self.corrupt += lost
            self._warn("%s: %d more frame(s) could not be decoded after the damage", self._what,
                        lost)
        if self.corrupt > _DETAILED_WARNINGS:
            self._warn("%s: %d corrupt packet(s)/frame(s) skipped in total", self._what,
                        self.corrupt)

    def _count_concealed(self, av_frame: av.VideoFrame, index: int) -> None:
        """Counts a frame decoded from damaged data. The first is said at once: a live stream may
        never reach the count said at its end."""
        if not av_frame.is_corrupt:
            return
        self._concealed += 1
        if self._concealed == 1:
            at = f" ({av_frame.time:.3f} s)" if av_frame.time is not None else ""
            self._warn("%s: frame %d%s was decoded from damaged data (the decoder filled in what was missing); "
                       "its pose may be wrong", self._what, index, at)

    def _skipped(self, what: str) -> None:
        self.corrupt += 1
        if self.corrupt <= _DETAILED_WARNINGS:
            self._warn("%s: skipped %s", self._what, what)

    def _when(self, packet: av.Packet) -> str:
        if packet.pts is not None and packet.time_base:
            return f"{float(packet.pts * packet.time_base):.3f} s"
        if packet.pos is not None and packet.pos >= 0:
            return f"byte {packet.pos}"
        return "an unknown time"

    def _turn_upright(self, quarter_turns: int) -> None:
        """Show every frame turned by `quarter_turns` counterclockwise: `info` then gives the
        turned size."""
        self._quarter_turns = quarter_turns % 4
        if self._quarter_turns % 2:
            self.info = replace(self.info, width=self.info.height, height=self.info.width)

    def _to_frame(self, av_frame: av.VideoFrame, index: int) -> Frame:
        w, h = self.info.width, self.info.height
        if self._quarter_turns % 2:
            w, h = h, w                        # the stored picture's size, before the turn
        if av_frame.width != w or av_frame.height != h:
            # A mid-stream resolution change: downstream buffers are sized from `info`.
            if not self._resized:
                self._resized = True
                log.warning("%s: the picture changed size mid-stream (%dx%d to %dx%d); its frames are scaled "
                            "to the first size, so people in them look stretched if the shape changed",
                            self._what, w, h, av_frame.width, av_frame.height)
            av_frame = av_frame.reformat(width=w, height=h, format="bgr24")
        # Possibly a strided view (FFmpeg pads rows): capture copies it into the ring anyway, so a
        # contiguous copy here would be a second full-frame copy.
        image = av_frame.to_ndarray(format="bgr24")
        if self._quarter_turns:
            image = self._turn(image)
        # After a damaged packet FFmpeg may give a frame without a usable timestamp (PyAV then
        # reports NaN): the protocol says "unknown" with null, never NaN.
        t_media = av_frame.time
        if t_media is not None and not math.isfinite(t_media):
            t_media = None
        return Frame(image=image, index=index, t_capture=time.time(), t_media=t_media)

    def _turn(self, image: np.ndarray) -> np.ndarray:
        # A new array each frame, as decoding gives: a live reader thread decodes the next frame
        # while the capture still copies this one, so a reused buffer would be overwritten under
        # it. (Not np.rot90's view: the ring's copy of it goes element by element, about 7 times
        # slower than cv2.rotate at 1080p.)
        return cv2.rotate(image, _CV2_TURNS[self._quarter_turns])

    def _on_end(self, yielded: int) -> None:
        """The demuxer reached the end of the input."""

    @abstractmethod
    def _on_read_error(self, exc: av.FFmpegError, yielded: int) -> None:
        """The demuxer failed before the end."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


class VideoFileSource(_AVSource):
    """A video file: every frame, in order, as fast as it decodes."""

    def __init__(self, path: str | Path, reopened: bool = False) -> None:
        spec = str(path)
        p = Path(os.path.expanduser(spec))
        what = f"'{spec}'"
        try:
            if not p.exists():
                raise InputError(f"cannot open video '{spec}': no such file")
            if p.is_dir():
                raise InputError(f"cannot open video '{spec}': it is a folder (to read the images "
                                 f"in it, give the folder to open_source)")
            # Only a regular file's size says anything: a named pipe (mkfifo) has none, and is read.
            if p.is_file() and p.stat().st_size == 0:
                raise InputError(f"cannot open video '{spec}': the file is empty (0 bytes)")
        except OSError as exc:
            raise InputError(f"cannot open video '{spec}': {_reason(exc)}") from None
        try:
            container = av.open(str(p), metadata_errors="replace")
        except av.error.InvalidDataError as exc:
            raise InputError(_mp4_cut_short(p, spec)
                             or f"'{spec}' is not a video file PyAV can read ({_reason(exc)})") from None
        except av.error.EOFError:
            raise InputError(f"'{spec}' ends inside its header (the file is cut short, or still "
                             f"being written)") from None
        except (av.FFmpegError, OSError) as exc:
            raise InputError(f"cannot open video '{spec}': {_reason(exc)}") from None
        if container.format.name == "tty":
            # FFmpeg "plays" text files as ANSI art; nobody means that.
            container.close()
            raise InputError(f"'{spec}' is a text file, not a video")
        try:
            super().__init__(container, p.stem, spec, live=False, what=what, reopened=reopened)
        except InputError as exc:
            raise InputError(_mp4_cut_short(p, spec) or str(exc)) from None
        # A named pipe can be read once only: it keeps its picture as stored.
        turns = display_quarter_turns(p) if p.is_file() else 0
        if turns:
            self._turn_upright(turns)
            log.info("%s: shown turned by %d degrees, as its rotation metadata asks", what, 90 * turns)

        # MP4/MOV indexes say exactly how many frames the file holds; a shortfall at the end
        # means a truncated file, and those frames count as corrupt like any other lost ones.
        self._exact_count = self.info.frame_count if self._stream.frames > 0 else None
        # Matroska and FLV state their duration in the header, written when the recording ended:
        # a file whose video ends well before it was cut short. (Other formats' durations are
        # FFmpeg's estimates from the file as it is, truncated or not.)
        self._stated_end = None if self._exact_count is not None else _stated_video_end(container, self._stream)

    def _on_end(self, yielded: int) -> None:
        self._check_complete(yielded)

    def _on_read_error(self, exc: av.FFmpegError, yielded: int) -> None:
        # Unreadable data past a point (a damaged or truncated file): keep what was decoded.
        self._warn("%s: stopped reading after %d frames: %s", self._what, yielded, _reason(exc))
        if not self._check_complete(yielded):
            self.corrupt += 1

    def _check_complete(self, yielded: int) -> bool:
        """Count frames the index promised but the file didn't deliver; False if unknowable."""
        if self._exact_count is None:
            return self._check_duration()
        missing = self._exact_count - yielded - self.corrupt - self._discarded
        if missing > 0:
            self.corrupt += missing
            self._warn("%s: ended %d frame(s) early (the file is truncated or damaged)",
                        self._what, missing)
        return True

    def _check_duration(self) -> bool:
        """Count the frames a file whose header states its video's end lacks there, from the
        time of its last packet read (damaged ones included: those are counted already); False
        where that is unknowable or nothing was found missing."""
        fps = self.info.fps
        if self._stated_end is None or fps is None:
            return False
        last = None if self._last_pts is None else float(self._last_pts * self._stream.time_base)
        missing = round((self._stated_end - (last if last is not None else 0.0)) * fps) - (last is not None)
        # A frame or two of slack: the last frame's stated length need not be one period.
        if missing <= SHORT_END_SLACK:
            return False
        self.corrupt += missing
        self._warn("%s: ended at %.2f s of the %.2f s its header states, about %d frame(s) early (the file is "
                   "cut short or damaged)", self._what, last or 0.0, self._stated_end, missing)
        return True


def _stated_video_end(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """When the video of a Matroska or FLV file ends, as its header states (seconds, in the
    frames' time), or None. Matroska gives each track's end in a DURATION tag (FFmpeg's muxer
    writes it) and the file's end as its duration, which counts from 0 whatever the first
    timestamp; FLV gives the file's length from its first timestamp. A file-wide figure says
    when the video ends only where there is no other stream (audio may run on)."""
    name = container.format.name
    if name == "matroska,webm":
        tag = stream.metadata.get("DURATION")
        if tag:
            try:
                hours, minutes, seconds = tag.split(":")
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            except ValueError:
                return None
        if len(container.streams) == 1 and container.duration:
            return container.duration / av.time_base
    elif name == "flv" and len(container.streams) == 1 and container.duration:
        return (container.duration + (container.start_time or 0)) / av.time_base
    return None


def _mp4_cut_short(path: Path, spec: str) -> str | None:
    """Why an MP4/MOV file cannot be read, where its top-level boxes tell: one that runs past the
    end of the file (a copy cut short), or no 'moov' box, the index a recording writes when it
    stops (a recording still going, or killed). None where they don't, or it is no such file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            offset, boxes = 0, []
            while offset + 8 <= size:
                fh.seek(offset)
                head = fh.read(16)
                length, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if length == 1 and len(head) == 16:
                    length = int.from_bytes(head[8:16], "big")
                elif length == 0:
                    length = size - offset             # the last box, to the end of the file
                if length < 8:
                    return None
                boxes.append(kind)
                if offset + length > size:
                    if boxes[0] != b"ftyp":
                        return None
                    return (f"'{spec}' is cut short: its '{kind.decode('latin-1')}' box runs to byte {offset + length}, "
                            f"past the file's end at {size}" + ("" if b"moov" in boxes else
                                                                 ", and its index ('moov' box) is missing") +
                            " (copy it again whole, or let the recording finish)")
                offset += length
    except OSError:
        return None
    if boxes and boxes[0] == b"ftyp" and b"moov" not in boxes:
        return (f"'{spec}' has no index (no 'moov' box): the recording was stopped before it was finished, "
                f"or is still being written")
    return None


def main_video_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The video stream to track: FFmpeg's own pick, as players make it, and not a cover picture
    or thumbnail that some files carry as their first video stream."""
    return container.streams.best("video") or container.streams.video[0]


def display_quarter_turns(path: Path, max_packets: int = 64) -> int:
    """Counterclockwise quarter turns that show a video file upright: its display matrix, which
    phones write instead of turning the picture (a portrait clip is stored landscape). Read from
    the first decoded frame of a second, short-lived opening of the file, since PyAV gives the
    matrix per frame only and the stream's size must be known before the first frame. 0 where
    there is none, it is not a multiple of 90 degrees, or the file cannot be read here (the
    main opening then reports why)."""
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            stream = main_video_stream(container)
            for n, packet in enumerate(container.demux(stream)):
                for frame in packet.decode():
                    # PyAV: the angle by which the display turns the frame counterclockwise.
                    angle = float(frame.rotation or 0)
                    turns = round(angle / 90.0)
                    return turns % 4 if abs(angle - 90.0 * turns) < 1.0 else 0
                if n >= max_packets:
                    break
    except (av.FFmpegError, OSError, IndexError, ValueError):
        pass
    return 0


class StreamSource(_AVSource):
    """A network stream (RTSP, RTMP, HTTP, UDP, TCP, SRT): live, so its end is an error, unless
    it has a known length (a video file over HTTP), which is read whole, as a file is."""

    def __init__(self, url: str, config: SourceConfig, reopened: bool = False) -> None:
        shown = _redact(url)
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as exc:
            raise InputError(f"'{shown}' is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        options = {"rtsp_transport": "tcp"} if scheme in ("rtsp", "rtsps") else {}
        self._read_timeout = config.read_timeout_s
        hint = "check the URL and that the stream is up"
        started = time.monotonic()
        try:
            container = av.open(url, options=options, metadata_errors="replace",
                                timeout=(config.open_timeout_s, config.read_timeout_s))
        except av.error.ProtocolNotFoundError:
            raise InputError(f"cannot open {shown}: this FFmpeg build (in PyAV) has no "
                             f"'{scheme}' support; use another protocol or a file") from None
        except (av.FFmpegError, OSError) as exc:
            # An interrupted handshake surfaces as whatever the protocol made of the cut-off
            # reply (RTSP says "Invalid data"); the clock tells the real story.
            if (isinstance(exc, (av.error.ExitError, av.error.TimeoutError))
                    or time.monotonic() - started >= 0.95 * config.open_timeout_s):
                raise InputError(f"cannot connect to {shown}: no answer within "
                                 f"{config.open_timeout_s:g} s ({hint})") from None
            raise InputError(f"cannot connect to {shown}: {_reason(exc)} ({hint})") from None
        # A stream with a known length (a file served over HTTP, a finished HLS playlist) is a
        # file that happens to be remote: every frame is read, none dropped to keep up, and it
        # ends. A live one (a camera over RTSP) has no length and only stops when something went
        # wrong.
        self._finite = bool(container.duration)
        super().__init__(container, host or scheme, url, live=not self._finite, what=shown,
                         reopened=reopened)

    def _on_end(self, yielded: int) -> None:
        expected = self.info.frame_count
        # The count may be estimated from the duration: allow a little slack.
        complete = expected is None or yielded + self.corrupt >= expected - max(2, expected // 50)
        if self._finite and complete:
            return
        raise InputError(f"stream {self._what} ended after {yielded} frames (the sender stopped "
                         f"or the connection dropped; restart when the stream is back)")

    def _on_read_error(self, exc: av.FFmpegError, yielded: int) -> None:
        if isinstance(exc, (av.error.ExitError, av.error.TimeoutError)):
            reason = f"no data for {self._read_timeout:g} s"
        else:
            reason = _reason(exc)
        raise InputError(f"stream {self._what} dropped after {yielded} frames: {reason} (check "
                         f"the network and that the stream is up)")


# ------------------------------------------------------------------------------------------------
# Cameras (OpenCV).


def _present_cameras() -> list[str]:
    return sorted(glob.glob("/dev/video*"), key=_natural_key)


class CameraSource(Source):
    """A local camera by index ('0') or device path ('/dev/video0'), through OpenCV."""

    def __init__(self, spec: str, config: SourceConfig) -> None:
        m = _CAMERA.match(str(spec))
        if not m:
            raise InputError(f"'{spec}' is not a camera (give a number such as 0, or /dev/videoN)")
        n = int(m.group(1))
        self.corrupt = 0
        self._n = n
        self._timeout = config.read_timeout_s
        self._closed = False
        device = f"/dev/video{n}"
        if sys.platform.startswith("linux") and not os.path.exists(device):
            present = _present_cameras()
            found = f"cameras present: {', '.join(present)}" if present else "no cameras found"
            raise InputError(f"camera {n} could not be opened (no {device}; {found})")
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(n, backend)
        if not cap.isOpened():
            cap.release()
            raise InputError(f"camera {n} could not be opened ({device} is busy, not a capture "
                             f"device, or not accessible to this user)")
        # One buffered frame: a reader that falls behind gets a fresh frame, not a queue of old.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        first = self._first_frame(cap)
        self._cap = cap
        self._first: tuple[np.ndarray, float] | None = first
        fps = cap.get(cv2.CAP_PROP_FPS)
        h, w = first[0].shape[:2]
        self.info = SourceInfo(name=f"cam{n}", uri=str(spec), live=True, width=w, height=h,
                               fps=float(fps) if fps and fps > 0 else None, frame_count=None)

    def _first_frame(self, cap: cv2.VideoCapture) -> tuple[np.ndarray, float]:
        # Some drivers block forever on a camera that opened but streams nothing: read in a
        # helper thread so opening can give up after the timeout.
        result: list[tuple[bool, np.ndarray | None]] = []
        abandoned = threading.Event()

        def read() -> None:
            try:
                result.append(cap.read())
            except cv2.error:
                result.append((False, None))
            if abandoned.is_set():
                cap.release()                  # the owner gave up; release once read returns

        worker = threading.Thread(target=read, name=f"cam{self._n}-open", daemon=True)
        worker.start()
        worker.join(self._timeout)
        if worker.is_alive():
            abandoned.set()
            raise InputError(f"camera {self._n} opened but sent no frame within "
                             f"{self._timeout:g} s (is another program using it?)")
        ok, image = result[0]
        if not ok or image is None:
            cap.release()
            raise InputError(f"camera {self._n} opened but delivered no frames (is another "
                             f"program using it?)")
        return self._bgr(image), time.time()

    @staticmethod
    def _bgr(image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        return np.ascontiguousarray(image)

    def frames(self) -> Iterator[Frame]:
        index = 0
        if self._first is not None:
            image, t = self._first
            self._first = None
            yield Frame(image=image, index=index, t_capture=t, t_media=None)
            index += 1
        while True:
            ok, image = self._cap.read()
            if not ok or image is None:
                raise InputError(f"camera {self._n} stopped delivering frames after {index} "
                                 f"(unplugged?); reconnect it and start again")
            yield Frame(image=self._bgr(image), index=index, t_capture=time.time(), t_media=None)
            index += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cap.release()


# ------------------------------------------------------------------------------------------------
# Image folders, patterns and single images.


def _natural_key(s: str) -> tuple:
    """'img2' before 'img10'. re.split alternates text and digit runs, so types line up."""
    parts = re.split(r"(\d+)", s)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), s


@dataclass(frozen=True)
class _ImageEntry:
    path: Path
    name: str                   # what messages call it: its path from the folder or pattern's start
    width: int                  # as OpenCV will decode it (EXIF orientation applied)
    height: int


def _images_among(paths: list[Path], where: str, reopened: bool = False) -> list[Path]:
    """The paths named as images this reads. A broken link among them is kept, to be reported as
    unreadable; macOS's '._' companion files are no images; pictures in formats not read here are
    named in one warning."""
    images = [c for c in paths if c.suffix.lower() in IMAGE_EXTENSIONS and not c.name.startswith("._")
              and (c.is_file() or (c.is_symlink() and not c.exists()))]
    unread = sorted({c.suffix.lower() for c in paths if c.suffix.lower() in UNREAD_IMAGE_EXTENSIONS})
    if unread:
        n = sum(1 for c in paths if c.suffix.lower() in UNREAD_IMAGE_EXTENSIONS)
        if not images:
            raise InputError(f"no images in {where} are in a format read here: its {n} picture(s) are "
                             f"{', '.join(unread)}; convert them to JPEG or PNG")
        if not reopened:
            log.warning("left out %d picture(s) in %s in formats not read here (%s); convert them to JPEG or PNG "
                        "to track them", n, where, ", ".join(unread))
    return images


def _shown_name(path: Path, base: Path) -> str:
    """An image's name in messages: its path from `base`, so that a recursive pattern's images in
    different folders keep different names ('a/x.jpg', 'b/x.jpg'); a plain folder's, its file name."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name


class ImageFolderSource(Source):
    """The images in a folder, matching a glob pattern, or a single image file, in natural order.

    Images larger than `max_image_side` are scaled down to fit (`Frame.scale` says by how much).
    Frames keep their own size: `info.width/height` is the largest a frame can be.
    """

    def __init__(self, spec: str, max_image_side: int = 1920, reopened: bool = False) -> None:
        self.corrupt = 0
        self._held_warnings = []
        self._max_side = max_image_side
        paths, name, base = self._find(str(spec), reopened)
        self._entries: list[_ImageEntry] = []
        failures: list[str] = []
        for p in paths:
            entry = self._header(p, _shown_name(p, base))
            if entry is None:
                failures.append(p.name)
                self._skipped(p, "cannot read the image header")
            else:
                self._entries.append(entry)
        if not self._entries:               # its one line: the warnings held say no more
            if len(paths) == 1:
                raise InputError(f"'{paths[0]}' is not an image file that can be read (damaged, or samples this "
                                 f"reader cannot take, such as 32-bit floats: convert it to an 8-bit JPEG or PNG)")
            raise InputError(f"none of the {len(paths)} images in '{spec}' can be read "
                             f"(first: {failures[0]}; damaged, or convert them to 8-bit JPEG or PNG)")
        # Readers size their buffers from info before any frame exists, so info needs the largest
        # frame up front. Pillow's open() reads only the header (pixels load lazily), which keeps
        # this fast for folders of thousands of large images.
        sizes = [self._fitted(e.width, e.height) for e in self._entries]
        self.info = SourceInfo(
            name=name, uri=str(spec), live=False,
            width=max(s[0] for s in sizes), height=max(s[1] for s in sizes),
            fps=None, frame_count=len(paths), stills=True,
        )

    def _find(self, spec: str, reopened: bool) -> tuple[list[Path], str, Path]:
        """The images, the input's short name, and the folder their names are given from."""
        p = Path(os.path.expanduser(spec))
        if p.is_file():
            return [p], p.stem, p.parent
        if p.is_dir():
            try:
                found = _images_among(list(p.iterdir()), f"folder '{spec}'", reopened)
            except OSError as exc:
                raise InputError(f"cannot read folder '{spec}': {_reason(exc)}") from None
            if not found:
                raise InputError(f"no images in folder '{spec}' (looked for "
                                 f"{', '.join(IMAGE_EXTENSIONS)})")
            return sorted(found, key=lambda c: _natural_key(c.name)), p.resolve().name or "images", p
        matches = [Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True)]
        found = _images_among(matches, f"'{spec}'", reopened)
        if not found:
            raise InputError(f"no images match '{spec}'")
        # The name is the folder the pattern starts in ('runs/a/*.png' -> 'a').
        base = Path(os.path.expanduser(spec))
        while base != base.parent and _GLOB_CHARS.search(str(base)):
            base = base.parent
        return sorted(found, key=lambda m: _natural_key(str(m))), base.resolve().name or "images", base

    @staticmethod
    def _header(p: Path, name: str) -> _ImageEntry | None:
        try:
            with Image.open(p) as im:
                w, h = im.size
                # OpenCV turns JPEG, PNG and WebP images by the EXIF orientation in their
                # header; match it. Pillow has read that EXIF on opening (a PNG's eXIf chunk after
                # the pixels, which would take reading the whole file, OpenCV ignores too), and
                # reports TIFFs already turned.
                if (im.format in _EXIF_TURNED_FORMATS and "exif" in im.info
                        and im.getexif().get(0x0112, 1) in (5, 6, 7, 8)):
                    w, h = h, w
        except Exception:   # Pillow raises many types for malformed files; all mean "unreadable"
            return None
        return _ImageEntry(p, name, w, h) if w > 0 and h > 0 else None

    def _fitted(self, w: int, h: int) -> tuple[int, int]:
        long_side = max(w, h)
        if long_side <= self._max_side:
            return w, h
        s = self._max_side / long_side
        return max(1, round(w * s)), max(1, round(h * s))

    def _skipped(self, p: Path, why: str) -> None:
        self.corrupt += 1
        if self.corrupt <= _DETAILED_WARNINGS:
            self._warn("skipped image '%s': %s", p, why)

    def _read(self, e: _ImageEntry) -> tuple[np.ndarray, float] | None:
        # Very large JPEGs decode much faster at 1/2, 1/4 or 1/8 size; stay at or above target.
        flags = cv2.IMREAD_COLOR
        for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if max(e.width, e.height) // factor >= self._max_side:
                flags = reduced
                break
        try:
            data = np.fromfile(e.path, dtype=np.uint8)   # imdecode: non-ASCII paths work too
        except OSError:
            return None
        image = cv2.imdecode(data, flags) if data.size else None
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            return None
        h, w = image.shape[:2]
        if flags == cv2.IMREAD_COLOR:
            ow, oh = w, h                  # decoded at full size: the decoder is the authority
        elif (w > h) == (e.width > e.height):
            ow, oh = e.width, e.height
        else:
            ow, oh = e.height, e.width     # rotated by an orientation tag the header check missed
        tw, th = self._fitted(ow, oh)
        # Never exceed info's size, which readers allocated from: only a header that lied can
        # get here, and shrinking a little more beats overrunning a buffer.
        s = min(1.0, self.info.width / tw, self.info.height / th)
        if s < 1.0:
            tw, th = max(1, int(tw * s)), max(1, int(th * s))
        if (w, h) != (tw, th):
            image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        scale = max(ow, oh) / max(tw, th)
        return np.ascontiguousarray(image), scale

    def frames(self) -> Iterator[Frame]:
        index = 0
        for e in self._entries:
            got = self._read(e)
            if got is None:
                self._skipped(e.path, "cannot decode the image")
                continue
            image, scale = got
            self._release_warnings()
            yield Frame(image=image, index=index, t_capture=time.time(), t_media=None,
                        scale=scale, name=e.name)
            index += 1
        if index == 0:
            n = self.info.frame_count
            raise InputError(f"none of the {n} image(s) in '{self.info.uri}' could be decoded (the files are "
                             f"damaged or not images)" if n != 1 else
                             f"'{self._entries[0].path}' could not be decoded (the file is damaged or not an image)")
        self._release_warnings()

    def close(self) -> None:
        pass                                 # nothing held open between frames
