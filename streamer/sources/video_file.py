"""Video files: every frame, in order; a file that ends early or is damaged is reported."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av

from engines.errors import InputError
from streamer.sources.av_source import MP4_INDEX_AT_END, MP4_INDEX_FIX, AVSource, is_mp4, main_video_stream
from streamer.sources.base import error_reason
from streamer.sources.stream import mistyped_url_hint, shown_spec

log = logging.getLogger(__name__)

SHORT_END_SLACK = 2            # frames a file with a stated duration may end early by, unreported
JITTER_MAX = 0.5               # a file's first frames come at one rate if most of their gaps are within this
REGULAR_SHARE = 0.8            # "most": a gap of damage among the first frames leaves the rest regular
MISSING_GAP = 1.5              # a gap of more frame periods than this (plus the jitter) between packets: frames are missing
TS_DAMAGE_GAP_S = 2.0          # an MPEG-TS gap near a damaged packet up to this long is frames lost, not a jump
TS_DAMAGE_REACH = 3            # "near": within this many packets after it (the demuxer resyncs in between)


class VideoFileSource(AVSource):
    """A video file: every frame, in order, as fast as it decodes."""

    def __init__(self, path: str | Path, reopened: bool = False) -> None:
        spec = str(path)
        p = Path(os.path.expanduser(spec))
        what = f"'{spec}'"
        try:
            if not p.exists():
                hint = " (to read standard input, give /dev/stdin)" if spec == "-" else mistyped_url_hint(spec)
                raise InputError(f"cannot open video '{shown_spec(spec)}': no such file{hint}")
            if p.is_dir():
                raise InputError(f"cannot open video '{spec}': it is a folder (to read the images "
                                 f"in it, give the folder to open_source)")
            # Only a regular file's size says anything: a named pipe (mkfifo) has none, and is read.
            if p.is_file() and p.stat().st_size == 0:
                raise InputError(f"cannot open video '{spec}': the file is empty (0 bytes)")
        except OSError as exc:
            raise InputError(f"cannot open video '{spec}': {error_reason(exc)}") from None
        try:
            container = av.open(str(p), metadata_errors="replace")
        except av.error.InvalidDataError as exc:
            raise InputError(_mp4_cut_short(p, spec)
                             or f"'{spec}' is not a video file PyAV can read ({error_reason(exc)})") from None
        except av.error.EOFError:
            raise InputError(f"'{spec}' ends inside its header (the file is cut short, or still "
                             f"being written)") from None
        except (av.FFmpegError, OSError) as exc:
            # PyAV's PermissionError is Python's too: this user may not read the file.
            refused = " (check the file's permissions)" if isinstance(exc, PermissionError) else ""
            raise InputError(f"cannot open video '{spec}': {error_reason(exc)}{refused}") from None
        if container.format.name == "tty":
            # FFmpeg "plays" text files as ANSI art; nobody means that.
            container.close()
            raise InputError(f"'{spec}' is a text file, not a video")
        try:
            super().__init__(container, p.stem, spec, live=False, what=what, reopened=reopened)
        except InputError as exc:
            raise InputError(_mp4_cut_short(p, spec) or str(exc)) from None
        self._piped = not p.is_file()          # a named pipe: read once, as it arrives
        # A named pipe can be read once only: it keeps its picture as stored.
        turns = display_quarter_turns(p) if not self._piped else 0
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
        name = container.format.name
        # A Matroska, WebM or FLV demuxer that meets damaged data skips to the next place it can
        # read, without an error: the frames in between are gone, and only their timestamps show
        # it. Where the first frames came at one rate, a later gap in the timestamps is said. It is
        # not counted as damage: a recording that dropped frames or paused leaves the same gap, and
        # nothing that reaches this code tells the two apart (the byte positions did not).
        # Phones' and browsers' recordings stamp their frames with jitter: the gap it takes to
        # say so grows with it. An AVI's index lists the frames a recording dropped as empty
        # chunks, which the demuxer skips: they show as the same gaps, and its frame count
        # includes them, so they are said the same way and are not the frames a short file
        # lacks. (An MP4's index lists every frame it holds.)
        # MPEG-TS timestamps may jump by design (joined segments): a gap of up to TS_DAMAGE_GAP_S
        # just after a packet the demuxer marked damaged is frames lost there, and counted; one
        # elsewhere is said, as above.
        self._mpegts = name == "mpegts"
        self._gap_grid: tuple[float, float] | None = None    # (frame period, gap limit in periods), if looked for
        if (name in ("matroska,webm", "flv") and self._exact_count is None) or name == "avi":
            self._gap_grid = self._regular_period()
        elif self._mpegts and self.info.fps:
            self._gap_grid = (1.0 / self.info.fps, MISSING_GAP)
        self._last_dts: int | None = None
        self._undated = 0                       # packets without a timestamp since the last with one
        self._since_damaged = TS_DAMAGE_REACH   # packets since the last one the demuxer marked damaged
        self._gaps = 0                          # gaps in the frames' times...
        self._gap_frames = 0                    # ...and the frames due in them

    def _decodes_marked_packets(self) -> bool:
        # MPEG-TS marks a packet damaged also where its counters restart, as they do where two
        # files were joined, and that packet is whole. A file's are decoded: the decoder judges
        # them, a damaged picture comes out flagged (`_count_concealed`), one that never comes out
        # is counted (`_account_lost`), and the frames a gap near one shows missing too
        # (`_on_packet`). (A stream's are skipped, as an incomplete packet, and counted.)
        return self._mpegts

    def _regular_period(self) -> tuple[float, float] | None:
        """The seconds between frames, where the packets read ahead come at that rate within
        `JITTER_MAX` of a period, and the gap in periods beyond which frames are missing."""
        tb = self._stream.time_base
        times = sorted({float(p.pts * tb) for p in self._ahead if p.pts is not None and tb})
        gaps = [b - a for a, b in zip(times, times[1:])]
        if len(gaps) < 8 or not self.info.fps:
            return None
        period = 1.0 / self.info.fps
        deviations = sorted(abs(g / period - 1.0) for g in gaps)
        jitter = deviations[min(len(deviations) - 1, int(REGULAR_SHARE * len(deviations)))]
        return (period, MISSING_GAP + jitter) if jitter <= JITTER_MAX else None

    def _on_packet(self, packet: av.Packet) -> None:
        self._since_damaged = 0 if packet.is_corrupt else self._since_damaged + 1
        if self._gap_grid is None:
            return
        if packet.dts is None:
            self._undated += 1                  # a frame in the gap, after damage: not missing
            return
        last, self._last_dts = self._last_dts, packet.dts
        undated, self._undated = self._undated, 0
        if last is None or packet.dts <= last:
            return
        tb = self._stream.time_base
        gap = float((packet.dts - last) * tb)
        period, limit = self._gap_grid
        missing = round(gap / period) - 1 - undated
        if gap <= limit * period or missing <= 0:
            return
        if self._mpegts:
            if gap > TS_DAMAGE_GAP_S:
                return                          # a jump in the times, as joined segments make
            if self._since_damaged <= TS_DAMAGE_REACH:
                self.corrupt += missing
                self._warn("%s: about %d frame(s) lost after damaged data at %.2f s (no frame until %.2f s)",
                           self._what, missing, float(last * tb), float(packet.dts * tb))
                return
            # Damage the demuxer did not mark (whole packets lost, the counters in step again)
            # shows only in the times, as in the formats above: said, not counted.
        self._gaps += 1
        self._gap_frames += missing
        if self._gaps == 1:
            self._warn("%s: no frame between %.2f s and %.2f s, where about %d frame(s) were due at %.4g fps: the "
                       "file is damaged there, or its recording dropped them", self._what, float(last * tb),
                       float(packet.dts * tb), missing, 1.0 / period)

    def _say_gaps(self) -> None:
        if self._gaps > 1:
            self._warn("%s: %d such gaps in all, where about %d frame(s) were due", self._what, self._gaps,
                       self._gap_frames)

    def _on_end(self, yielded: int) -> None:
        self._say_gaps()
        self._check_complete(yielded)

    def _why_no_frames(self) -> str:
        if self._piped and self.corrupt and is_mp4(self._container):
            return (f"none could be read through the pipe: the file is damaged, or it is {MP4_INDEX_AT_END}, "
                    f"which cannot be read as it arrives ({MP4_INDEX_FIX})")
        return super()._why_no_frames()

    def _on_read_error(self, exc: av.FFmpegError, yielded: int) -> None:
        # Unreadable data past a point (a damaged or truncated file): keep what was decoded.
        self._say_gaps()
        self._warn("%s: stopped reading after %d frames: %s", self._what, yielded, error_reason(exc))
        if not self._check_complete(yielded):
            self.corrupt += 1

    def _check_complete(self, yielded: int) -> bool:
        """Count frames the index promised but the file didn't deliver; False if unknowable."""
        if self._exact_count is None:
            return self._check_duration()
        missing = self._exact_count - yielded - self.corrupt - self._discarded - self._gap_frames
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
