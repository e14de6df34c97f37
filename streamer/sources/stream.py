"""Network streams (RTSP, RTMP, HTTP, UDP, TCP, SRT), through PyAV."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import replace
from urllib.parse import urlsplit

import av

from engines.errors import InputError
from streamer.config import SourceConfig
from streamer.sources.av_source import MP4_INDEX_AT_END, MP4_INDEX_FIX, AVSource, is_mp4, redact_url
from streamer.sources.base import error_reason

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
# A URL typed with a slash or its colon missing ('rtsp:/cam', 'rtsp:cam', 'rtsp//cam') is read as a
# path, and "no such file" alone would leave the typo unexplained.
_MISTYPED_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)(:/?|//)(?!/)(.+)$")


def shown_spec(spec: str) -> str:
    """`spec` as an error line may show it: a URL typed wrong ('rtsp:/user:pw@cam') keeps its
    typo but not its password or secret query values, as `redact_url` keeps a URL's."""
    m = _MISTYPED_URL.match(spec)
    if m is None:
        return redact_url(spec)
    scheme, separator, rest = m.groups()
    return f"{scheme}{separator}{redact_url(f'{scheme}://{rest}')[len(scheme) + 3:]}"


def mistyped_url_hint(spec: str) -> str:
    """' (did you mean 'rtsp://cam'?)' for a missing path that looks like a stream URL typed
    wrong, else ''. A scheme that is not a stream's gets the hint only after ':/' (one letter
    and a colon is a Windows drive)."""
    m = _MISTYPED_URL.match(spec)
    if m is None:
        return ""
    scheme, separator, rest = m.groups()
    if scheme.lower() in STREAM_SCHEMES:
        return f" (did you mean '{redact_url(f'{scheme}://{rest}')}'?)"
    if separator == ":/" and len(scheme) > 1:
        return (f" (if it is a URL, it needs '//' after '{scheme}:'; the streams read are "
                f"{', '.join(STREAM_SCHEMES)})")
    return ""


class StreamSource(AVSource):
    """A network stream (RTSP, RTMP, HTTP, UDP, TCP, SRT): live, so its end is an error, unless
    it has a known length (a video file over HTTP, a recording over RTSP), which is read whole,
    as a file is."""

    backlog_at_open = True      # read live only where it is live (a recording is read as a file, or paced)

    def __init__(self, url: str, config: SourceConfig, reopened: bool = False) -> None:
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            host = parts.hostname
            _ = parts.port      # 'rtsp://cam:abc/' or ':99999': FFmpeg would say only "Invalid argument"
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
            if isinstance(exc, av.error.InvalidDataError):
                # It answered, but with nothing FFmpeg reads as video: a camera's web or login page,
                # the path of a page instead of its stream.
                raise InputError(f"cannot read {shown}: the server answered, but not with a video stream "
                                 f"(a web page?); check the URL's path") from None
            fix = _connect_hint(exc, host, parts.username is not None, hint)
            raise InputError(f"cannot connect to {shown}: {error_reason(exc)} ({fix})") from None
        # A stream with a known length (a file served over HTTP, a finished HLS playlist) is a
        # file that happens to be remote: every frame is read, none dropped to keep up, and it
        # ends. A live one (a camera over RTSP) has no length and only stops when something went
        # wrong.
        # An MPEG-TS file served with its length but without range requests has no duration
        # (FFmpeg cannot seek to its end to find one): its size says it is a file all the same.
        # PyAV 18.1.1 gives None where the size is unknown (a live stream), earlier ones 0 or less.
        size = container.size
        self._size = size if scheme in ("http", "https") and size is not None and size > 0 else None
        self._finite = bool(container.duration) or self._size is not None
        super().__init__(container, host or scheme, url, live=not self._finite, what=shown,
                         reopened=reopened)
        # A live stream in a format without timestamps (MJPEG over HTTP, a raw H.264 stream) gets
        # FFmpeg's own: frames numbered at a rate it assumes (25 fps whatever the camera sends),
        # which run slow or fast against the clock and would time a .bvh, a replay or a client
        # wrongly. Such a stream is timed as a camera is: by when its frames came (t_capture),
        # at the rate its bitstream states, if any.
        self._untimed = self.info.live and bool(container.format.flags & av.format.Flags.no_timestamps.value)
        if self._untimed:
            stated = self._stream.codec_context.framerate
            self.info = replace(self.info, fps=float(stated) if stated else None)

    def _media_time(self, av_frame: av.VideoFrame) -> float | None:
        return None if self._untimed else super()._media_time(av_frame)

    def _on_end(self, yielded: int) -> None:
        expected = self.info.frame_count
        # The count may be estimated from the duration: allow a little slack. Without one, the
        # bytes read against the stated length (a packet's position and size stop short of the
        # end by headers and a last packet, no more).
        complete = (expected is None or yielded + self.corrupt >= expected - max(2, expected // 50)) and (
            self._size is None or self._read_to >= self._size - max(65_536, self._size // 50))
        if self._finite and complete:
            return
        if self._finite:
            # Not reconnected: opened again, a recording starts from its beginning, and a run
            # would play it again and again where it ends short of the length it announced.
            raise InputError(f"stream {self._what} ended after {yielded} frames, short of the length it "
                             f"announces (the sender stopped or the connection dropped; a stream with a length is "
                             f"read as a recording, which is not reconnected: run posecast again once it is back)")
        raise InputError(f"stream {self._what} ended after {yielded} frames (the sender stopped "
                         f"or the connection dropped; `posecast run` reconnects by itself)")

    def _on_read_error(self, exc: av.FFmpegError, yielded: int) -> None:
        if isinstance(exc, (av.error.ExitError, av.error.TimeoutError)):
            reason = f"no data for {self._read_timeout:g} s"
        else:
            reason = error_reason(exc)
        if yielded == 0 and self._finite and is_mp4(self._container):
            # A file served whole, where seeking back to frames before the index takes range requests.
            raise InputError(f"{self._what} gave no frame: {reason} (check the network; or, if it is "
                             f"{MP4_INDEX_AT_END}, it can only be read from a server that takes range requests: "
                             f"{MP4_INDEX_FIX})")
        if self._finite:
            # As at its end (`_on_end`): `posecast run` does not reopen a recording, which would start again.
            raise InputError(f"stream {self._what} dropped after {yielded} frames: {reason} (a stream with a length "
                             f"is read as a recording, which is not reconnected: check the network, and run "
                             f"posecast again once it is back)")
        raise InputError(f"stream {self._what} dropped after {yielded} frames: {reason} (check "
                         f"the network and that the stream is up)")


def _connect_hint(exc: BaseException, host: str | None, credentials: bool, default: str) -> str:
    """How to fix a connection that failed, where the failure tells: FFmpeg reports a host name
    that does not resolve as a bare I/O error, and a refused login as the server's status."""
    if isinstance(exc, (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError)):
        if credentials:
            return "the server refused the user name and password in the URL: check them"
        return "the server wants a user name and password: give them in the URL, as scheme://USER:PASS@host/..."
    if host:
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError):
            return f"the host name '{host}' could not be found: check its spelling, and the network or DNS"
        except OSError:
            pass
    return default
