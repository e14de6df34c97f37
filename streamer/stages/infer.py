"""Inference: crop from the ring, run the network, decode 2D, follow the person.

File sources are batched: `inference.batch_size` frames per call (fewer only at the end of the
input), waiting for a batch to fill, so which frames share a batch, and so the crop each frame gets
from the batch before, never depends on timing: the same file and settings give the same track.
Live sources run one frame at a time for latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from engines.backends import create_backend
from engines.models import ModelArtifact
from streamer.channels import Inbox, Outbox
from streamer.config import PipelineConfig
from streamer.packets import END, FRAME, INFERENCE_FAILED, RESULT, START, EndPacket, FramePacket, ResultPacket
from streamer.ring import FrameRing, RingSpec
from streamer.shot_cuts import ShotCutDetector
from streamer.stages.base import POLL_MS, Control, Reporter, StageTimer
from streamer.tracking import PersonTracker, crops_per_call


class InferStage:
    def __init__(self, model: ModelArtifact, config: PipelineConfig, in_endpoint: str, out_endpoint: str,
                 control: Control, reporter: Reporter) -> None:
        self.model = model
        self.config = config
        self.in_endpoint = in_endpoint
        self.out_endpoint = out_endpoint
        self.control = control
        self.reporter = reporter
        self.timer = StageTimer()

    def run(self) -> None:
        inf = self.config.inference
        per_call = crops_per_call(inf.batch_size, self.config.tracking.search_tiles)
        backend = create_backend(self.model, inf.backend, inf.device, inf.threads, inf.precision, per_call,
                                 self._calibration())
        self.reporter.send("backend", backend.describe())
        self.control.mark_ready()
        ctx = zmq.Context()
        inbox, out = Inbox(ctx, self.in_endpoint), Outbox(ctx, self.out_endpoint)
        ring: FrameRing | None = None
        try:
            start = self._wait_for(inbox, START)
            if start is None:
                return
            ring = FrameRing(RingSpec(**start["ring"]), create=False)
            live = bool(start["info"]["live"])
            batch_size = 1 if live else inf.batch_size
            skeleton = self.model.info.config.skeleton
            # A search (the frame and its tiles) is one network call, live or not, whatever the
            # batch size: its crops are as many as the tracker's buffer holds.
            tracker = PersonTracker(backend.infer, self.model.info.config.input_size, self.config.tracking,
                                    self.config.alignment.window, per_call,
                                    torso=skeleton.indices(skeleton.torso))
            cuts = self._shot_cuts(bool(start["info"].get("stills")))
            out.send(START, {**start, "backend": backend.describe()})
            passed = 0                   # frames whose results went on
            while not self.control.abort.is_set():
                batch, end = self._collect(inbox, batch_size, fill=not live)
                if batch:
                    try:
                        self._process(batch, ring, tracker, cuts, out)
                    except Exception as exc:
                        # The frames before this batch are in the later stages, some held back by
                        # the align stage's smoother: end the input here so that they are written,
                        # as a source that fails does, then report the fault.
                        exc.drained = True  # type: ignore[attr-defined]
                        out.send(END, self._ended(EndPacket(INFERENCE_FAILED, passed), tracker, cuts).to_dict())
                        raise
                    passed += len(batch)
                if end is not None:
                    out.send(END, self._ended(EndPacket.from_dict(end), tracker, cuts).to_dict())
                    return
        finally:
            backend.close()
            if ring is not None:
                ring.close()
            inbox.close()
            out.close(linger_ms=0 if self.control.abort.is_set() else None)
            ctx.term()

    def _ended(self, ended: EndPacket, tracker: PersonTracker, cuts: Callable[[np.ndarray], bool] | None) -> EndPacket:
        """The end of the input as it goes on: with this stage's timings and the tracker's counts."""
        ended.timings["infer"] = self.timer.summary()
        ended.network_runs = tracker.network_runs
        ended.searches = tracker.searches
        ended.switches = tracker.switches
        ended.tracks = tracker.track + 1
        ended.shot_cuts = cuts.cuts if isinstance(cuts, ShotCutDetector) else 0
        return ended

    def _shot_cuts(self, stills: bool) -> Callable[[np.ndarray], bool] | None:
        """What says whether a frame starts a new shot (streamer/tracking.py), or None: never. An
        image folder's images are all new shots (`folder_images: shots`) or, as a video's frames,
        only where the source says so (`sequence`: an image of another size); a video's frames
        start one at a hard cut."""
        tracking = self.config.tracking
        if stills:
            return (lambda _image: True) if tracking.folder_images == "shots" else None
        return ShotCutDetector(tracking.shot_cut_diff, tracking.shot_cut_ratio) if tracking.shot_cut_diff > 0 else None

    def _calibration(self) -> Any:
        """Calibration crops, read only when a TensorRT int8 engine may be built."""
        from streamer.calibration import calibration_crops, calibration_used

        inf = self.config.inference
        if inf.calibration is None or not calibration_used(inf):
            return None

        return calibration_crops(inf.calibration, self.config.source, self.model.info.config.input_size)

    def _wait_for(self, inbox: Inbox, kind: str) -> dict[str, Any] | None:
        while not self.control.abort.is_set():
            msg = inbox.recv(POLL_MS)
            if msg is not None:
                got, body = msg
                if got == kind:
                    return body
                if got == END:
                    return None
        return None

    def _collect(self, inbox: Inbox, batch_size: int, fill: bool) -> tuple[list[FramePacket], dict[str, Any] | None]:
        """Wait for one frame, then take up to a batch: with `fill` (file sources) wait until the
        batch is full or the input ends, else take only what is already queued. Capture's ring holds
        at least a batch and one more frame, so a full batch always arrives."""
        batch: list[FramePacket] = []
        while len(batch) < batch_size:
            msg = inbox.recv(POLL_MS if fill or not batch else 0)
            if msg is None:
                if self.control.abort.is_set():
                    return [], None
                if batch and not fill:
                    break
                continue
            kind, body = msg
            if kind == END:
                return batch, body
            if kind == FRAME:
                batch.append(FramePacket(**body))
        return batch, None

    def _process(self, batch: list[FramePacket], ring: FrameRing, tracker: PersonTracker,
                 cuts: Callable[[np.ndarray], bool] | None, out: Outbox) -> None:
        t0 = time.perf_counter()
        images = [ring.view(p.slot, p.height, p.width) for p in batch]
        # Every image goes through the cut detector, which keeps a history of the picture's changes.
        cut = [cuts(img) for img in images] if cuts else [False] * len(images)
        new_shots = [c or p.new_shot for c, p in zip(cut, batch)]
        results = tracker.process(images, [p.pixel_scale for p in batch], new_shots if any(new_shots) or cuts else None)
        per_frame = (time.perf_counter() - t0) * 1000.0 / len(batch)
        for packet, res in zip(batch, results):
            self.timer.add("infer", per_frame)
            out.send(RESULT, ResultPacket(packet, res.found, res.score, res.joints_2d, res.conf,
                                          res.offsets_3d, track=res.track).to_dict())
