"""PyAV: video files and network streams share one demux/decode loop."""

from __future__ import annotations

import logging
import math
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import av
from av.video.reformatter import VideoReformatter

from engines.errors import InputError
from streamer.frame_rate import choose_rate, rate_from_times
from streamer.sources.base import DETAILED_WARNINGS, Frame, Source, SourceInfo, error_reason

log = logging.getLogger(__name__)

LOOK_AHEAD_PACKETS = 64        # a file's packets read before its first frame: ~2 s to time frames by


# Query parameters that carry a secret, by name (lower case): cameras and services take tokens,
# keys and passwords there as often as in the user:password part.
SECRET_QUERY_NAMES = ("password", "passwd", "pass", "pwd", "token", "access_token", "authtoken", "auth_token",
                      "key", "apikey", "api_key", "session_key", "sessionkey", "auth", "secret", "sig",
                      "signature", "credential", "credentials", "x-amz-signature", "x-amz-security-token",
                      "x-amz-credential", "x-goog-signature", "x-goog-credential")


def redact_url(url: str) -> str:
    """The URL without its password or secret query values, so that error messages and logs
    never show credentials. Anything that is not a URL is returned as it is."""
    try:
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            return url
        if parts.password is not None:
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            parts = parts._replace(netloc=f"{parts.username}:***@{host}{port}")
        if parts.query:
            parts = parts._replace(query="&".join(_redact_parameter(p) for p in parts.query.split("&")))
        if parts.fragment:
            parts = parts._replace(fragment="&".join(_redact_parameter(p) for p in parts.fragment.split("&")))
        return urlunsplit(parts)
    except ValueError:
        return url


def _redact_parameter(parameter: str) -> str:
    name, eq, _ = parameter.partition("=")
    return f"{name}=***" if eq and name.lower() in SECRET_QUERY_NAMES else parameter


def describe_streams(container: av.container.InputContainer) -> str:
    kinds: dict[str, int] = {}
    for s in container.streams:
        kinds[s.type] = kinds.get(s.type, 0) + 1
    if not kinds:
        return "no streams at all"
    return ", ".join(f"{n} {k} stream{'s' if n > 1 else ''}" for k, n in kinds.items())


# Why an MP4 read as it arrives (a named pipe, a server without range requests) may give nothing.
MP4_INDEX_AT_END = "an MP4 or MOV file whose index (the 'moov' box) comes after its frames"
MP4_INDEX_FIX = "give the file itself, or move the index to its start with " \
                "`ffmpeg -i IN.mp4 -c copy -movflags +faststart OUT.mp4`"


def is_mp4(container: av.container.InputContainer) -> bool:
    """MP4, MOV and their family, whose frames are found through an index that may come last."""
    return "mov" in container.format.name.split(",")


class AVSource(Source):
    """Demuxes the first video stream and decodes it; subclasses decide what a failure means."""

    def __init__(self, container: av.container.InputContainer, info_name: str, uri: str,
                 live: bool, what: str, reopened: bool = False) -> None:
        self._container = container
        self._what = what                      # how messages name the input: "'x.mp4'", a URL
        self.corrupt = 0
        self._decode_errors = 0
        self._concealed = 0                    # frames given with damage the decoder covered up
        self._packets = 0                      # non-empty, non-discarded packets sent to decode
        # Packets sent to decode (where marked ones are decoded: since the first picture, or the
        # first marked packet), by timestamp, until their frame comes out: those left at the end
        # were lost to damage.
        self._awaited: set[int] | None = None
        self._pts_faults = self._dts_faults = 0   # frames whose pts (dts) did not rise: which to trust
        self._last_frame_pts: int | None = None
        self._last_frame_dts: int | None = None
        self._discarded = 0
        self._closed = False
        self._resized = False                  # warned of a mid-stream size change
        self._quarter_turns = 0                # counterclockwise, applied to every frame
        # One converter to BGR for every frame: a decoded frame's own (`to_ndarray(format=...)`)
        # is made afresh for each frame, and with it FFmpeg's scaler, its tables and its threads
        # (five buffers of ~50 KiB and two threads a frame; docs/performance.md, "The hot path, audited").
        self._to_bgr = VideoReformatter()
        try:
            if not container.streams.video:
                raise InputError(
                    f"{what} has no video stream (it has {describe_streams(container)})")
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
            raise InputError(f"cannot decode the video in {what}: {error_reason(exc)}") from None
        self._stream = stream
        self._demux = container.demux(stream)
        # A file's first packets are read now, and decoded later, so that their timestamps can
        # check the container's frame rate before the pipeline sizes its filters from it.
        self._ahead: list[av.Packet] = []
        self._ahead_error: av.FFmpegError | None = None
        self._demux_ended = False
        self._last_pts: int | None = None       # the latest timestamp of a video packet read (stream units)
        self._read_to = 0                       # bytes of the input its packets read so far reach to
        self._held_warnings = []
        if not live:
            self._read_ahead(LOOK_AHEAD_PACKETS)
        times = [float(p.pts * p.time_base) for p in self._ahead if p.pts is not None and p.time_base]
        stated = stream.average_rate or stream.guessed_rate or stream.base_rate
        if self._ahead and not times and stream.codec_context.framerate:
            # A raw elementary stream (.h264, .hevc) has no timestamps, and its demuxer states
            # 25 fps whatever the video: the bitstream's own timing, where it has one, is the rate.
            stated = stream.codec_context.framerate
        rate = choose_rate(float(stated) if stated else None, rate_from_times(times))
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
            if packet.pos is not None and packet.pos >= 0:
                self._read_to = max(self._read_to, packet.pos + packet.size)
            if packet.size and not packet.is_discard:
                self._on_packet(packet)
            marked = bool(packet.size) and packet.is_corrupt
            if marked and not self._decodes_marked_packets():
                # A packet the demuxer could only partly read (a truncated file, a lost network
                # chunk): with frame threads its decoding error loses the frames they hold.
                self._skipped(f"incomplete packet at {self._when(packet)}")
                continue
            if self._awaited is None and (index or marked) and self._decodes_marked_packets():
                # From the first picture (or marked packet) on, every packet's frame is waited for:
                # damage the demuxer did not mark loses frames too (a reference picture gone, its
                # followers dropped without an error), and only the packets left waiting show it.
                self._awaited = set()
            if packet.size:
                if packet.is_discard:
                    self._discarded += 1           # edit-list trims: never meant to be shown
                else:
                    self._packets += 1
                    if self._awaited is not None and packet.pts is not None:
                        self._awaited.add(packet.pts)
            for frame in self._decoded(packet, index):
                yield frame
                index += 1
        if read_error is not None:
            # The demuxer's end-of-stream flush packets never came: drain the decoder by hand.
            for frame in self._decoded(None, index):
                yield frame
                index += 1
        if self._concealed > 1:
            # Damage inside a picture's data that FFmpeg filled in from around it raises no
            # error: the frame is there (nothing is lost), but its picture, and so its pose, may not be.
            self._warn("%s: %d frame(s) were decoded from damaged data (the decoder filled in what was "
                       "missing); their poses may be wrong", self._what, self._concealed)
        self._account_lost(index)
        if read_error is not None:
            self._on_read_error(read_error, index)
        else:
            self._on_end(index)
        if index == 0:
            # The warnings held so far say what this line sums up.
            raise InputError(f"{self._what} gave no frame to track: {self._why_no_frames()}")
        self._release_warnings()


    def _decodes_marked_packets(self) -> bool:
        """Whether packets the demuxer marks damaged are decoded (the decoder then judges them) or
        skipped. Skipped, but for a video file's MPEG-TS (`VideoFileSource`)."""
        return False

    def _decoded(self, packet: av.Packet | None, index: int) -> Iterator[Frame]:
        """The frames `packet` decodes to (None: what the decoder still holds), numbered from `index`."""
        for av_frame in self._decode(packet):
            if self._awaited is not None and av_frame.pts is not None:
                self._awaited.discard(av_frame.pts)
            frame = self._to_frame(av_frame, index)
            self._count_concealed(av_frame, index)
            self._release_warnings()
            yield frame
            index += 1

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
            if self._awaited is not None and packet is not None and packet.pts is not None:
                self._awaited.discard(packet.pts)         # counted here, not again at the end
            where = self._when(packet) if packet is not None and packet.size else "the end"
            self._skipped(f"undecodable data at {where} ({error_reason(exc)})")
            return []

    def _account_lost(self, yielded: int) -> None:
        # After damage, FFmpeg silently drops frames whose reference frames are gone (and frame
        # threads may lose buffered frames when they report an error). Packets in minus frames
        # out minus errors already counted is that loss; counting it keeps "frames yielded +
        # corrupt == frames in the input" true. Only after an error, because some containers
        # legitimately carry a packet or two that produce no picture.
        # Where marked packets are decoded (`_decodes_marked_packets`), the loss is the packets
        # still awaiting their frame: those before the first picture, which gave none (a
        # recording begun between keyframes), were not waited for.
        if self._awaited is not None:
            lost = len(self._awaited)
        elif self.corrupt:
            lost = self._packets - yielded - self._decode_errors
        else:
            return
        if lost > 0:
            more = " more" if self.corrupt else ""
            self.corrupt += lost
            self._warn("%s: %d%s frame(s) could not be decoded after the damage", self._what, lost, more)
        if self.corrupt > DETAILED_WARNINGS:
            self._warn("%s: %d frame(s) damaged or missing in total", self._what, self.corrupt)

    def _count_concealed(self, av_frame: av.VideoFrame, index: int) -> None:
        """Counts a frame decoded from damaged data. The first is said at once: a live stream may
        never reach the count said at its end."""
        if not av_frame.is_corrupt:
            return
        self._concealed += 1
        if self._concealed == 1:
            at = f" ({av_frame.time:.3f} s)" if av_frame.time is not None and math.isfinite(av_frame.time) else ""
            self._warn("%s: frame %d%s was decoded from damaged data (the decoder filled in what was missing); "
                       "its pose may be wrong", self._what, index, at)

    def _skipped(self, what: str) -> None:
        self.corrupt += 1
        if self.corrupt <= DETAILED_WARNINGS:
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
        # Converted (and scaled, after a size change) in one pass. Possibly a strided view (FFmpeg
        # pads rows), and as stored: capture copies it into the ring anyway, turning it upright on
        # the way, so a contiguous or turned copy here would be a second full-frame copy. A new
        # array each frame, as decoding gives: a live reader thread decodes the next frame while
        # the capture still copies this one.
        image = self._to_bgr.reformat(av_frame, width=w, height=h, format="bgr24").to_ndarray()
        t_media = self._media_time(av_frame)
        return Frame(image=image, index=index, t_capture=time.time(), t_media=t_media,
                     quarter_turns=self._quarter_turns)

    def _media_time(self, av_frame: av.VideoFrame) -> float | None:
        """The frame's time in seconds, as FFmpeg's best-effort timestamp takes it: its pts, unless
        the frames' pts go back more often than their dts do. (In an AVI with B-frames the pts
        are the packets', in decode order: 0.04, 0.12, 0.16, 0.08, ...) After a damaged packet
        FFmpeg may give no usable time (PyAV then reports NaN): the protocol says "unknown" with
        null, never NaN."""
        pts, dts = av_frame.pts, av_frame.dts
        if dts is not None:
            self._dts_faults += self._last_frame_dts is not None and dts <= self._last_frame_dts
            self._last_frame_dts = dts
        if pts is not None:
            self._pts_faults += self._last_frame_pts is not None and pts <= self._last_frame_pts
            self._last_frame_pts = pts
        best = pts if pts is not None and (dts is None or self._pts_faults <= self._dts_faults) else dts
        if best is None or av_frame.time_base is None:
            return None
        t = float(best * av_frame.time_base)
        return t if math.isfinite(t) else None

    def _on_packet(self, packet: av.Packet) -> None:
        """A packet of the video stream, before it is decoded."""

    def _on_end(self, yielded: int) -> None:
        """The demuxer reached the end of the input."""

    @abstractmethod
    def _on_read_error(self, exc: av.FFmpegError, yielded: int) -> None:
        """The demuxer failed before the end."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


def main_video_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The video stream to track: FFmpeg's own pick, as players make it, and not a cover picture
    or thumbnail that some files carry as their first video stream."""
    return container.streams.best("video") or container.streams.video[0]
