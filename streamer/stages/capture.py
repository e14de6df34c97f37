"""Capture: read the source, copy each frame once into the ring, announce it downstream.

File sources (videos, image folders) apply backpressure: the stage waits for a free slot, so every
frame gets exactly one result, in order. Live sources (cameras, streams) are read by a thread that
always keeps the newest frame; when a slot frees, the newest frame is the one that goes, and the
frames it replaced are counted as dropped. Latency stays bounded by the ring's few live slots
instead of growing with a queue. Either kind is read only once every stage after this one is
ready (Control.ready).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from multiprocessing.synchronize import Semaphore

import zmq

from engines.errors import InputError, PosecastError
from streamer.channels import Outbox
from streamer.config import PipelineConfig
from streamer.frame_rate import FilePace
from streamer.packets import END, FRAME, START, EndPacket, FramePacket
from streamer.ring import FrameRing, RingSpec, fit_slots, shm_free_bytes
from streamer.sources import Frame, Source, open_source, redact_url
from streamer.stages.base import POLL_MS, Control, Reporter, StageTimer

log = logging.getLogger(__name__)


class SourceChangedError(InputError):
    """A source that came back, but not as the run knows it (another frame size): reopening it
    again cannot help, so the run ends instead of retrying."""


class CaptureStage:
    def __init__(self, source: str, config: PipelineConfig, ring_name: str, free_slots: Semaphore,
                 out_endpoint: str, control: Control, reporter: Reporter, realtime: bool = False,
                 stages_after: int = 0) -> None:
        self.source_spec = source
        self.realtime = realtime      # play a file at its own frame rate, as a live source
        self.stages_after = stages_after    # how many stages mark themselves ready (Control.ready)
        self.paced = False
        self.reconnects = 0
        self.config = config
        self.ring_name = ring_name
        self.free_slots = free_slots
        self.out_endpoint = out_endpoint
        self.control = control
        self.reporter = reporter
        self.timer = StageTimer()
        self.seq = 0
        self.dropped = 0

    def run(self) -> None:
        ctx = zmq.Context()
        out = Outbox(ctx, self.out_endpoint)
        ring: FrameRing | None = None
        reason = "error"
        try:
            opened = self._open()
            if opened is None:
                return
            with opened as src:
                info = src.info
                if self.realtime and not info.live:
                    info = replace(info, live=True)
                wanted = self.config.ring.live_slots if info.live else self.config.ring.file_slots
                minimum = 2 if info.live else self.config.inference.batch_size + 1
                slot_bytes = info.width * info.height * 3
                slots = fit_slots(wanted, minimum, slot_bytes, shm_free_bytes())
                if slots < wanted:
                    log.warning("shared memory is short: the frame ring holds %d frames instead of %d", slots, wanted)
                ring = FrameRing(RingSpec(self.ring_name, slots, info.height, info.width), create=True)
                for _ in range(slots):
                    self.free_slots.release()
                out.send(START, {"info": asdict(info), "ring": asdict(ring.spec)})
                loop = self._live if info.live else self._file
                self.paced = self.realtime and not src.info.live
                try:
                    # A file waits for the stages too: frames read ahead while the network loads
                    # would be processed before the run's clock (the output stage's) starts.
                    reason = self._wait_for_stages() or loop(src, ring, out)
                except Exception as exc:
                    # The source failed mid-run (a stream dropped, a camera was unplugged, or an
                    # error no one foresaw: FFmpeg's conversion of a frame failed with EAGAIN on a
                    # machine out of threads): end the input here so every frame already captured
                    # is still processed and written, then report the fault.
                    exc.drained = True  # type: ignore[attr-defined]
                    self._send_end(out, "source failed", src.corrupt)
                    raise
                corrupt = src.corrupt
            self._send_end(out, reason, corrupt)
        finally:
            if ring is not None:
                ring.close()
            out.close(linger_ms=0 if self.control.abort.is_set() else None)
            ctx.term()

    def _open(self) -> Source | None:
        """The source, opened in a thread of its own so that Ctrl-C or SIGTERM is heeded while
        opening it waits (a stream that answers nothing waits `source.open_timeout_s`, in FFmpeg,
        where no signal reaches). None if the run is stopped first: nothing was read, and the
        stages after this one are told to end at once (`abort`), with no frame in flight to wait for."""
        got: list[Source | BaseException] = []

        def open_it() -> None:
            try:
                got.append(open_source(self.source_spec, self.config.source))
            except BaseException as exc:  # handed over below
                got.append(exc)

        opener = threading.Thread(target=open_it, daemon=True, name="capture-open")
        opener.start()
        while opener.is_alive():
            opener.join(POLL_MS / 1000.0)
            if opener.is_alive() and (self.control.stop.is_set() or self.control.abort.is_set()):
                self.control.abort.set()
                return None              # the opening thread is left to FFmpeg's timeout, then dies with us
        result = got[0]
        if isinstance(result, BaseException):
            if self.control.stop.is_set() or self.control.abort.is_set():
                self.control.abort.set()
                return None              # it failed because it was stopped, or no one waits for why
            raise result
        return result

    def _send_end(self, out: Outbox, reason: str, corrupt: int) -> None:
        out.send(END, EndPacket(reason, self.seq, self.dropped, corrupt, self.reconnects,
                                {"capture": self.timer.summary()}).to_dict())

    def _acquire_slot(self) -> str | None:
        """A free ring slot for the next frame: None once taken, else why the input ends instead.
        A stop ends it too: after a later stage has failed, the slots of the frames it held never
        come back, and waiting for one would hold the run until it is aborted."""
        while not self.free_slots.acquire(timeout=POLL_MS / 1000.0):
            if self.control.abort.is_set():
                return "aborted"
            if self.control.stop.is_set():
                return "stopped"
        return None

    def _admit(self, frame: Frame, ring: FrameRing, out: Outbox) -> None:
        t0 = time.perf_counter()
        w, h = frame.upright_size
        slot = self.seq % ring.spec.slots
        frame.copy_upright_into(ring.view(slot, h, w))
        self.timer.since("copy", t0)
        full_w, full_h = frame.full_size or (0, 0)
        packet = FramePacket(self.seq, slot, h, w, frame.t_capture, frame.t_media, frame.scale, frame.name,
                             frame.new_shot, full_w, full_h)
        out.send(FRAME, packet.to_dict())
        self.seq += 1

    def _file(self, src: Source, ring: FrameRing, out: Outbox) -> str:
        frames = iter(src.frames())
        while True:
            if self.control.abort.is_set():
                return "aborted"
            if self.control.stop.is_set():
                return "stopped"
            t0 = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                return "end of input"
            self.timer.since("read", t0)
            ended = self._acquire_slot()
            if ended is not None:
                return ended
            self._admit(frame, ring, out)

    def _reopen(self, shape: tuple[int, int]) -> Source:
        """The same source again, for a reconnect or a loop; it must keep its frame size."""
        src = open_source(self.source_spec, self.config.source, reopened=True)
        if (src.info.height, src.info.width) != shape:
            src.close()
            raise SourceChangedError(f"'{redact_url(self.source_spec)}' came back at {src.info.width}x"
                                     f"{src.info.height}, not {shape[1]}x{shape[0]}; restart posecast to follow "
                                     f"the new size")
        return src

    def _wait_for_stages(self) -> str | None:
        """Until the stages after this one are ready for frames (`Control.ready`); why the run
        ends instead, if it does."""
        waiting = self.stages_after if self.control.ready is not None else 0
        while waiting:
            if self.control.ready.acquire(timeout=POLL_MS / 1000.0):
                waiting -= 1
            elif self.control.abort.is_set():
                return "aborted"
            elif self.control.stop.is_set():
                return "stopped"
        return None

    def _live(self, src: Source, ring: FrameRing, out: Outbox) -> str:
        newest = _NewestFrame()
        cfg = self.config.source
        policy = _Reopen(opener=lambda: self._reopen((src.info.height, src.info.width)),
                         reconnect=cfg.reconnect and src.info.live, loop=cfg.loop and not src.info.live,
                         max_wait_s=cfg.reconnect_max_s)
        reader = threading.Thread(target=newest.fill_from, args=(src, self.control, self.paced, policy),
                                  daemon=True, name="capture-reader")
        reader.start()
        try:
            while True:
                if self.control.abort.is_set():
                    return "aborted"
                if self.control.stop.is_set():
                    return "stopped"
                ended = self._acquire_slot()
                if ended is not None:
                    self.dropped = newest.dropped
                    return ended
                taken = newest.take(timeout_s=POLL_MS / 1000.0)
                while taken is None:
                    if newest.error is not None:
                        taken = newest.take(timeout_s=0)   # the frame read before the failure
                        if taken is None:
                            raise newest.error
                        break
                    if newest.finished:
                        taken = newest.take(timeout_s=0)   # the last frame may have come in just before
                        if taken is None:
                            self.dropped = newest.dropped
                            return "end of input"
                        break
                    if self.control.abort.is_set() or self.control.stop.is_set():
                        self.dropped = newest.dropped
                        return "aborted" if self.control.abort.is_set() else "stopped"
                    taken = newest.take(timeout_s=POLL_MS / 1000.0)
                frame, read_ms = taken
                self.timer.add("read", read_ms)
                self._admit(frame, ring, out)
                self.dropped = newest.dropped
        finally:
            # The source is closed next, and must not be while the reader is inside it (closing a
            # container that another thread decodes from can crash the process).
            newest.quit.set()
            reader.join(timeout=2.0)
            # Counted however the run ends: a reopen whose first frame never came is one too.
            self.reconnects = newest.reconnects


@dataclass(frozen=True)
class _Resume:
    """Where a source opened again takes its media time up: after `last_media`, by one frame
    period for a looped file, or by the time since `last_read` (monotonic) for a stream that
    reconnected, whose own clock started again with the connection."""

    last_media: float
    last_read: float | None = None

    def offset(self, first_media: float, now: float, period: float) -> float:
        """What to add to the media times of the new opening, whose first frame came `now`."""
        gap = period if self.last_read is None else max(period, now - self.last_read)
        return self.last_media + gap - first_media


@dataclass
class _Reopen:
    """When the live reader opens its source again: after a failure (`reconnect`, waiting 0.5 s,
    1 s, 2 s, ... up to `max_wait_s` between attempts) and at the end of a file (`loop`)."""

    opener: Callable[[], Source]
    reconnect: bool = False
    loop: bool = False
    max_wait_s: float = 10.0


class _CatchUp:
    """The start of a live network stream's connection. FFmpeg reads ahead while it opens one, and
    those frames decode at once, seconds of motion in a fraction of one (up to 8 s in 0.4 s was
    seen): a sender that keeps up would take most of them and publish them as if just captured.
    So until a frame comes at the stream's pace (at least half its media time after the one
    before; a frame period where there is none), and for at most `max_s` after the first, each
    frame waits to be the newest for half that time (`hold`) before it may go: of such a run only
    the last goes, the others are dropped as stale. From then on, every frame goes at once: a
    frame rate the stream misstates cannot hold frames back for longer than `max_s`. (A stream
    without timestamps, such as MJPEG over HTTP, has no media time: a frame period, 1/30 s where
    its rate is unknown, stands in for the gap.)"""

    def __init__(self, period: float, max_s: float = 1.0) -> None:
        self.period = period
        self.max_s = max_s
        self._first: float | None = None
        self._last: tuple[float, float | None] | None = None      # (arrival, media time) of the last
        self.done = False

    def hold(self, now: float, t_media: float | None) -> float:
        """How long the frame that came `now` waits to be the newest before it may go (0: at once)."""
        if self.done:
            return 0.0
        last, self._last = self._last, (now, t_media)
        if last is None:
            self._first = now
            return 0.5 * self.period
        gap = self.period
        if t_media is not None and last[1] is not None and t_media > last[1]:
            gap = t_media - last[1]
        if now - last[0] >= 0.5 * gap or now - self._first > self.max_s:
            self.done = True
            return 0.0
        return 0.5 * gap


class _NewestFrame:
    """A one-frame mailbox: the reader thread overwrites, the sender takes the newest, once the
    frame may go (a connection's backlog waits: `_CatchUp`)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.frame: tuple[Frame, float] | None = None
        self._settle_at = 0.0             # monotonic time from which the frame in the box may go
        self.dropped = 0
        self.reconnects = 0
        self.finished = False
        self.error: BaseException | None = None
        self.quit = threading.Event()     # the sending thread is done: stop reading
        self._last_media = 0.0            # the media time of the newest frame read
        self._last_read = time.monotonic()  # when it was read

    def fill_from(self, src: Source, control: Control, paced: bool = False, reopen: _Reopen | None = None) -> None:
        """Keep the newest frame of `src`, reopening it as `reopen` says. The reader owns every
        source it opens again, and closes it: a source is only ever used by one thread."""
        reopen = reopen or _Reopen(opener=lambda: src)
        current, resume = src, None
        try:
            while True:
                try:
                    self._read(current, control, paced, resume)
                except PosecastError as exc:
                    if not reopen.reconnect or self._stopping(control):
                        raise
                    log.warning("%s; reconnecting", exc)
                    dropped, current = current, src    # closed by _reconnect; nothing else of ours is open
                    fresh = self._reconnect(dropped, src, reopen, control)
                    if fresh is None:
                        return
                    # The stream's clock starts again with the connection: its media time runs
                    # on by the time it was away instead, and the person may be anywhere now.
                    current, resume = fresh, _Resume(self._last_media, self._last_read)
                    continue
                if self._stopping(control) or not reopen.loop:
                    return
                resume = _Resume(self._last_media)          # the loop's media time runs on
                self._close(current, src)
                current = reopen.opener()
        except BaseException as exc:  # handed to the sending thread, which reports it
            with self.cond:
                # Finished with it: a frame still waiting to go (`_CatchUp`) goes before the error.
                self.error, self.finished = exc, True
        finally:
            self._close(current, src)
            with self.cond:
                self.finished = True
                self.cond.notify()

    def _stopping(self, control: Control) -> bool:
        return control.stop.is_set() or control.abort.is_set() or self.quit.is_set()

    @staticmethod
    def _close(current: Source, original: Source) -> None:
        if current is not original:       # the original belongs to the capture stage's `with`
            current.close()

    def _reconnect(self, current: Source, original: Source, reopen: _Reopen, control: Control) -> Source | None:
        """Reopen with backoff until it works or the run stops (None)."""
        if current is original:
            original.close()              # a camera cannot be opened twice
        else:
            current.close()
        wait = 0.5
        while not self._stopping(control):
            if self.quit.wait(wait):
                return None
            try:
                fresh = reopen.opener()
            except SourceChangedError:
                raise                     # it will not change back by itself
            except PosecastError as exc:
                wait = min(wait * 2.0, reopen.max_wait_s)
                log.warning("still cannot reopen the source (%s); next try in %.1f s", exc, wait)
                continue
            self.reconnects += 1
            log.warning("source reopened (reconnect %d)", self.reconnects)
            return fresh
        return None

    def _read(self, src: Source, control: Control, paced: bool, resume: _Resume | None = None) -> None:
        """Frames of `src` into the mailbox until it ends or the run stops. `resume`: the source
        opened again (a looped file from its start, a stream reconnected), whose media time then
        runs on (`_Resume`), and whose first frame is a new shot: the person may be anywhere, and
        the tracker and filters must not carry them across. A stream's backlog at open waits to be
        the newest (`_CatchUp`)."""
        t0 = time.perf_counter()
        period = 1.0 / (src.info.fps or 30.0)
        pace = FilePace(period)
        media_offset: float | None = None
        catch_up = _CatchUp(period) if getattr(src, "backlog_at_open", False) and not paced else None
        restarted = resume is not None
        for frame in src.frames():
            read_ms = (time.perf_counter() - t0) * 1000.0
            now = time.monotonic()
            hold = catch_up.hold(now, frame.t_media) if catch_up is not None else 0.0
            if paced:
                delay = pace.due(frame.t_media, time.monotonic()) - time.monotonic()
                if delay > 0 and self.quit.wait(delay):
                    break
                frame.t_capture = time.time()        # captured when a camera would have delivered it
            if frame.t_media is not None:
                if media_offset is None:
                    media_offset = resume.offset(frame.t_media, now, period) if resume is not None else 0.0
                frame.t_media += media_offset
                self._last_media = frame.t_media
            self._last_read = now
            if restarted:
                frame.new_shot, restarted = True, False
            with self.cond:
                if self.frame is not None:
                    self.dropped += 1
                    frame.new_shot |= self.frame[0].new_shot    # a dropped restart still starts a shot
                self.frame = (frame, read_ms)
                self._settle_at = now + hold
                self.cond.notify()
            if self._stopping(control):
                break
            t0 = time.perf_counter()

    def take(self, timeout_s: float) -> tuple[Frame, float] | None:
        """The newest frame, once it may go, waiting at most `timeout_s` for one; None if none."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                now = time.monotonic()
                if self.frame is not None and (self.finished or now >= self._settle_at):
                    taken, self.frame = self.frame, None
                    return taken
                if self.finished or now >= deadline:
                    return None
                wake = deadline if self.frame is None else min(deadline, self._settle_at)
                self.cond.wait(wake - now)
