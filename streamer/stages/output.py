"""Output: turn results into protocol messages in the requested axes; publish them, write the
track files, the overlay video and the preview; give the ring slot back; keep the progress bar
and the run's statistics."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from multiprocessing.synchronize import Semaphore
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from engines.crop import points_bbox
from engines.errors import PosecastError, ReaderGoneError
from engines.model_config import ModelConfig
from engines.rootpos import camera_intrinsics
from streamer.axes import axes_meta, axes_spec, convert_points
from streamer.channels import Inbox
from streamer.closing import close_all
from streamer.config import CoordinatesConfig, PublishConfig
from streamer.failed_outputs import FailedOutput, OutputsFailedError
from streamer.packets import (END, FAILED_ENDS, RESULT, START, EndPacket, ResultPacket, RunSummary,
                              published_end_reason)
from streamer.protocol import (END_FAILED, END_STOPPED, PersonPose, PoseFrame, end_message, meta_message,
                               pose_message)
from streamer.publish import Publisher
from streamer.ring import FrameRing, RingSpec
from streamer.stages.base import POLL_MS, Control, Reporter, StageTimer
from streamer.tracks import ReaderWaitStopped, is_stdout, track_name

if TYPE_CHECKING:
    from streamer.overlay import OverlayWriter
    from streamer.tracks import TrackWriter

log = logging.getLogger(__name__)

ABORTED_LINGER_MS = 200


class OutputStage:
    def __init__(self, model_config: ModelConfig, model_meta: dict[str, Any], tracks: list[Path],
                 overlay: Path | None, publish: PublishConfig, coordinates: CoordinatesConfig,
                 free_slots: Semaphore, in_endpoint: str,
                 control: Control, reporter: Reporter, progress: bool, preview: bool = False) -> None:
        self.model_config = model_config
        self.publish_config = publish
        self.coordinates = coordinates
        self.axes = axes_spec(coordinates.axes)
        self.preview_wanted = preview
        self.model_meta = model_meta
        self.track_paths = tracks
        self.overlay_path = overlay
        self.free_slots = free_slots
        self.in_endpoint = in_endpoint
        self.control = control
        self.reporter = reporter
        self.progress = progress
        self.timer = StageTimer()
        self.latency = StageTimer()
        self.frames = 0
        self.last_seq: int | None = None
        self.found = 0
        self.live = False
        self.preview = None
        self.preview_note: str | None = None
        self.failed: list[FailedOutput] = []      # outputs closed mid-run, the others going on

    def run(self) -> None:
        from streamer.tracks import open_track_writer

        publisher = None
        if self.publish_config.enabled:
            # Bound before anything else, so a port in use fails the run at once; announced only
            # once the source is open (START), so a source that cannot be opened is the one line.
            publisher = Publisher(self.publish_config.endpoint, self.publish_config.encoding,
                                  self.publish_config.hwm, self.publish_config.meta_interval_s)
        ctx = zmq.Context()
        inbox = Inbox(ctx, self.in_endpoint)
        writers: list[Any] = []
        overlay = None
        ring: FrameRing | None = None
        bar = None
        failing = False
        try:
            start = self._wait_start(inbox)
            if start is None:
                return
            info = start["info"]
            self.live = bool(info["live"])
            c = self.coordinates
            k = camera_intrinsics(info["width"], info["height"], c.focal_px, c.hfov_deg, c.principal_px)
            camera = {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy,
                      "focal": "given" if c.focal_px is not None else f"assumed from a {c.hfov_deg:g} degree field of view",
                      "principal": "given" if c.principal_px is not None else "the image centre"}
            meta = meta_message(self.model_config.skeleton, info["name"], (info["width"], info["height"]),
                                info["fps"], {**self.model_meta, "backend": start["backend"]},
                                axes=axes_meta(self.axes), camera=camera)
            stopped = lambda: self.control.stop.is_set() or self.control.abort.is_set()  # noqa: E731
            writers = [open_track_writer(p, meta, stopped, live=self.live) for p in self.track_paths]
            note = None if self.model_meta.get("trained") else "UNTRAINED MODEL: poses are not meaningful"
            if self.preview_wanted:
                # Before "publishing on ...": a window that cannot open is the run's one line.
                from streamer.preview import PreviewWindow

                self.preview = PreviewWindow(info["name"], info["width"], info["height"])
                self.preview_note = note
            if publisher is not None:
                publisher.start(info["name"], meta)
                self.reporter.send("publishing", publisher.endpoint)
                publisher.let_waiting_subscribers_join()
                wanted = self.publish_config.wait_subscribers
                if wanted and publisher.pose_subscribers < wanted:
                    self.reporter.send("waiting_subscribers", (wanted, publisher.pose_subscribers))
                    # The capture reads nothing until this stage is ready (mark_ready, below):
                    # a file run's first frame waits with it, and a camera's frames until then are stale.
                    if not publisher.wait_for_subscribers(wanted, stopped):
                        return
            if self.overlay_path is not None or self.preview_wanted:
                ring = FrameRing(RingSpec(**start["ring"]), create=False)
            if self.overlay_path is not None:
                # Imported only for an overlay: it brings in PyAV, which a run that writes tracks alone
                # paid for at every input's start.
                from streamer.overlay import OverlayWriter

                # Told once the file is made, at the first frame: a stage killed from then on leaves an
                # unfinished video for the pipeline to remove; before, the path is untouched.
                overlay = OverlayWriter(self.overlay_path, info["width"], info["height"], info["fps"], note=note,
                                        on_made=lambda: self.reporter.send("overlay_opened", str(self.overlay_path)),
                                        live=self.live)
            bar = self._progress_bar(info)
            # The run's clock starts before the capture is told to read (it waits for every
            # stage's mark_ready), so it covers every frame's whole way through the pipeline.
            t_first = time.perf_counter()
            self.control.mark_ready()
            while not self.control.abort.is_set():
                msg = inbox.recv(POLL_MS)
                if msg is None:
                    if publisher is not None:
                        publisher.tick()
                    continue
                kind, body = msg
                if kind == RESULT:
                    failures = self._write(body, writers, overlay, ring, publisher)
                    if bar is not None:
                        bar.update(1)
                    if failures:
                        writers, overlay = self._retire(failures, writers, overlay)
                        left = writers or overlay is not None or publisher is not None or self.preview is not None
                        # A pipe's reader that went away ends the run as a shell pipeline's does (141).
                        gone_from, gone = next(((output, err) for output, err in failures
                                                if isinstance(err, ReaderGoneError)), (None, None))
                        if gone is not None or not left:
                            # Nothing left to write to: the run ends here (a single failure in its own words).
                            if gone is not None:
                                # `| head`: standard output's reader chose to go, and with no file cut short
                                # beside it the run ends as a pipeline's writer does, without a line.
                                gone.quiet = is_stdout(gone_from.path) and not (writers or overlay is not None)
                            raise OutputsFailedError(self.failed) if len(self.failed) > 1 else self.failed[0].error
                        if self.live:
                            # A live run may go on for hours: said now, and again in its last line.
                            for output in self.failed[-len(failures):]:
                                log.warning("%s; the run goes on with the other outputs", output.said())
                elif kind == END:
                    # Finished before the summary, and taken off the closers in `finally`, so
                    # that a file that cannot be finished (a full disk) is reported once.
                    # A source that failed, or a run stopped, before the first frame is said by the
                    # run's one line ("... before the first frame; no file was written").
                    failed = body.get("reason") in FAILED_ENDS
                    reason = published_end_reason(body.get("reason", ""))
                    if publisher is not None:
                        publisher.end(reason)
                    finishing = self._finishers(writers, overlay, meta["source"], reason, failed)
                    writers, overlay = [], None
                    if self.failed:
                        raise self._finish_after_failures(finishing, publisher)
                    close_all([close for _, close in finishing])
                    self.reporter.send("summary", self._summary(body, time.perf_counter() - t_first))
                    return
            if self.failed:
                # Aborted (another stage failed, or a second Ctrl-C): the outputs that failed before
                # are said beside the run's line, not lost behind it.
                raise OutputsFailedError(self.failed)
        except BaseException:
            failing = True
            raise
        finally:
            closers = [w.close for w in writers]
            if overlay is not None:
                # After the tracks. (A video that failed, a full disk, was removed where it failed, in
                # `_retire`: an .npz or .bvh, written whole as it closes, may need the room it took.)
                # A run that failed (this stage, or another one: abort) says why in its one line;
                # "no frame reached the overlay video" beside it would be a second.
                closers.append(functools.partial(overlay.close, input_failed=failing or self.control.abort.is_set()))
            closers += [c.close for c in (bar, self.preview, ring) if c is not None]
            if publisher is not None:
                # A stream already ended whole (an output that failed beside it fails the run after) keeps
                # the usual linger for its last poses.
                aborted = (failing or self.control.abort.is_set()) and not publisher.ended
                # A run that ends early still tells its subscribers (nothing, where the stream never started).
                closers.append(functools.partial(publisher.end, END_FAILED if aborted else END_STOPPED))
                # An aborted run's queue gets a moment, for that end message, not the usual second.
                closers.append(lambda: publisher.close(linger_ms=ABORTED_LINGER_MS if aborted else 1000))
            closers += [inbox.close, ctx.term]
            close_all(closers)

    def _finishers(self, writers: list[TrackWriter], overlay: OverlayWriter | None, source: str, reason: str,
                   input_failed: bool) -> list[tuple[str, Callable[[], None]]]:
        """What finishes each output at the input's end, with its name (for the line that names
        the outputs written whole after others failed). The outputs with no place for an end (a
        .bvh, the overlay video) are finished first, and the tracks record their end after them: a
        run killed while it finishes a long .bvh or video, or a .bvh the disk cannot take, must
        not leave tracks that say the input was done beside an unfinished video or an earlier
        run's .bvh at the path (`track --skip-done` would skip that input)."""
        unfinished: list[Path] = []
        plain = [(track_name(w.path), w.path, w.close) for w in writers if not w.records_end] + (
            [(f"the overlay video '{overlay.path}'", overlay.path,
              functools.partial(overlay.close, input_failed=input_failed))] if overlay is not None else [])
        return [(name, _noting_unfinished(close, path, unfinished)) for name, path, close in plain] + [
            (track_name(w.path), functools.partial(self._end_track, w, source, reason, unfinished))
            for w in writers if w.records_end]

    def _end_track(self, writer: TrackWriter, source: str, reason: str, unfinished: list[Path]) -> None:
        """Closes a track that got every frame, its end recorded first (`TrackWriter.end`), unless
        an output finished before it failed and left a file at its path (`unfinished`). The end's
        counts are the stream's, as the publisher's are: a live run's named pipe whose slow reader
        had poses left out (or has some still waiting) took fewer, and its reader can tell."""
        try:
            if not unfinished:
                writer.end(end_message(source, reason, self.frames, self.last_seq if self.frames else None))
        finally:
            writer.close()

    def _wait_start(self, inbox: Inbox) -> dict[str, Any] | None:
        while not self.control.abort.is_set():
            msg = inbox.recv(POLL_MS)
            if msg is not None and msg[0] == START:
                return msg[1]
            if msg is not None and msg[0] == END:
                return None
        return None

    def _progress_bar(self, info: dict[str, Any]) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=info["frame_count"], unit="frame", desc=info["name"], file=sys.stderr,
                    dynamic_ncols=True, smoothing=0.1, leave=False)

    def _write(self, body: dict[str, Any], writers: list[Any], overlay: Any, ring: FrameRing | None,
               publisher: Publisher | None) -> list[tuple[Any, PosecastError]]:
        """Gives the frame to every output; returns those that failed on it (a full disk), each
        with its error, for `run` to close while the others go on."""
        t0 = time.perf_counter()
        if self.frames == 0:
            self.reporter.send("first_frame", None)      # the outputs are made from here on
        skel = self.model_config.skeleton
        res = ResultPacket.from_dict(body, skel.num_joints, len(self.model_config.roots))
        fp = res.frame
        size = fp.input_size
        people = []
        if res.found:
            self.found += 1
            assert res.joints_3d is not None
            joints_3d = convert_points(res.joints_3d, self.axes)
            root_3d = None if res.root_3d is None else convert_points(res.root_3d, self.axes)
            people.append(PersonPose(max(res.track, 0), res.score, points_bbox(res.joints_2d), joints_3d,
                                     res.joints_2d, res.conf, root_3d))
        frame = PoseFrame(fp.seq, fp.t_capture, fp.t_media, size, people, fp.image)
        # One protocol message per frame, shared by the JSONL tracks and the publisher (which sends
        # a copy with t_publish added).
        message = pose_message(frame) if (writers or publisher is not None) else None
        # Subscribers first: a track's slow disk or pipe reader must not delay their message.
        if publisher is not None:
            publisher.publish(message)
            self.latency.add("capture_to_publish", (time.time() - fp.t_capture) * 1000.0)
        # An output that fails (a full disk, a pipe's reader gone) is closed by `run` once this
        # frame is in every other output too.
        failures: list[tuple[Any, PosecastError]] = []
        for w in list(writers):
            try:
                w.write(frame, message)
            except ReaderWaitStopped:
                # The run was stopped while a named pipe waited for its reader: that track is
                # left out, and the stop ends the run as any stop does.
                writers.remove(w)
                log.warning("nothing was written to the named pipe '%s': no program opened it to read before "
                            "the run was stopped", w.path)
            except PosecastError as err:
                failures.append((w, err))
        if self.preview is not None and ring is not None:
            t_show = time.perf_counter()
            shown = frame if fp.scale == 1.0 else _rescaled(frame, 1.0 / fp.pixel_scale)
            if not self.preview.show(ring.view(fp.slot, fp.height, fp.width), shown, self.preview_note):
                self.control.stop.set()           # the window was closed: end the run as Ctrl-C does
            self.timer.since("preview", t_show)   # --stats: the frames shown, and what showing them costs
        if overlay is not None and ring is not None:
            image = ring.view(fp.slot, fp.height, fp.width)
            if fp.scale != 1.0:
                frame = _rescaled(frame, 1.0 / fp.pixel_scale)
            try:
                overlay.write(image, frame)
            except PosecastError as err:
                failures.append((overlay, err))
        self.free_slots.release()
        self.frames += 1
        self.last_seq = fp.seq
        self.timer.since("output", t0)
        if publisher is None:
            self.latency.add("capture_to_output", (time.time() - fp.t_capture) * 1000.0)
        return failures

    def _retire(self, failures: list[tuple[Any, PosecastError]], writers: list[TrackWriter],
                overlay: OverlayWriter | None) -> tuple[list[TrackWriter], OverlayWriter | None]:
        """Closes the outputs that failed, each keeping what it holds (a .jsonl or .csv its whole
        frames; a failed overlay video is removed, which frees its room at once), and counts them
        in `self.failed`; returns the outputs that go on."""
        for output, err in failures:
            frames = None if output is overlay else output.frames_written
            try:
                output.close()
            except Exception as closing:  # noqa: BLE001 - its failure is said already; one line per output
                log.debug("closing '%s' after it failed: %s", output.path, closing)
            self.failed.append(FailedOutput(err, frames))
        gone = [output for output, _ in failures]
        return ([w for w in writers if not any(w is g for g in gone)],
                None if any(overlay is g for g in gone) else overlay)

    def _finish_after_failures(self, finishing: list[tuple[str, Callable[[], None]]],
                               publisher: Publisher | None) -> OutputsFailedError:
        """At the input's end, after outputs failed mid-run: finishes the others, and returns the
        run's one line, naming the failed ones (those that fail as they finish too) with what each
        holds, and the outputs that got every frame."""
        whole: list[str] = []

        def finish(name: str, close: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    close()
                except PosecastError as err:          # an .npz or .bvh that the full disk cannot take
                    self.failed.append(FailedOutput(err))
                    return
                whole.append(name)
            return run

        close_all([finish(name, close) for name, close in finishing])
        if publisher is not None:
            whole.append("the published stream")
        if self.preview is not None:
            whole.append("the preview")
        return OutputsFailedError(self.failed, self.frames, whole)

    def _summary(self, end: dict[str, Any], elapsed_s: float) -> RunSummary:
        ended = EndPacket.from_dict(end)
        ended.timings["output"] = self.timer.summary()
        ended.timings["per_frame"] = self.latency.summary()
        return RunSummary(self.frames, self.found, elapsed_s, self.live, ended)


def _noting_unfinished(close: Callable[[], None], path: Path, unfinished: list[Path]) -> Callable[[], None]:
    """`close`, noting `path` in `unfinished` where it fails and a file is left at the path (an
    earlier run's, which a .bvh written through a rename leaves as it was)."""
    def run() -> None:
        try:
            close()
        except BaseException:
            if Path(path).is_file():
                unfinished.append(Path(path))
            raise
    return run


def _rescaled(frame: PoseFrame, factor: np.ndarray) -> PoseFrame:
    """The frame's 2D results in the ring image's pixels (image folders scale big images down);
    `factor` (2,): across and down."""
    box_factor = np.tile(factor, 2)                      # x0, y0, x1, y1
    people = [PersonPose(p.id, p.score, tuple(np.asarray(p.bbox) * box_factor), p.joints_3d, p.joints_2d * factor,
                         p.conf, p.root_3d) for p in frame.people]
    return PoseFrame(frame.seq, frame.t_capture, frame.t_media, frame.image_size, people, frame.image)
