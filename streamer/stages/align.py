"""Alignment: the per-root 3D estimates of each frame -> one pose (engines.align), then temporal
filtering of that pose and of its place in the camera, root_3d (streamer.filters; by default One
Euro for live sources; for files a Kalman filter with a fixed-lag smoother, which holds each frame
back `filter.file_lag` frames to correct its pose with the frames after it). Before its filter, a
file's pose goes through the learned temporal refiner where there is one for the model
(`filter.refiner`, streamer/refiner.py), which holds it back `future` frames more (twice as
many from 32 to 62 fps, where it reads every second frame); root_3d's
smoother then holds its frames as long, so the two stay in step. A live source's pose goes
through a causal refiner (`filter.live_refiner`: the frames before it only), which holds nothing.
A model whose offsets are in the person's ray frame has its pose turned into the camera's first,
with the ray through its 2D joints' mean and the focal length (engines/ray_frame.py), so
filtering and root placement see camera axes whichever model runs.

The filter runs on the time the frame was captured (live) or its media time (files), so frames
dropped to stay live only make a longer step, never a wrong one. A file frame without a media
time (after a damaged packet) follows the one before at the nominal frame rate; a file with no
rate either (an image folder: unrelated shots, or frames at an unknown rate) is not filtered over
time, since there is no time between its frames to filter over. A frame with nobody in it resets
the filter: the frames still held come out first, and the next person found starts fresh, not
from where the last one was. So does a person of a new track (streamer/tracking.py: with
`tracking.new_track_iou`, a search that found someone else). Frames leave in the order they came.

root_3d is measured on the pose as aligned, then filtered with its own settings (`filter.root`),
by a smoother in step with the joints' one (same lag, same frames). Measuring it on the smoothed
pose instead would hold a file's frames back twice as long; live, on the refined pose it jittered
more (docs/results.md, "The refiner live"), and the pose as aligned is the one that fits the
frame's own 2D joints. Before its
filter, its depth is held to a physical speed (`filter.root.max_depth_rate`,
streamer/depth_limit.py), so a person half out of the frame does not jump tens of metres away.

A file's published 2D joints go through a smoother of their own in step with the 3D ones, where
those go through the fixed-lag Kalman smoother (`filter.joints_2d`, streamer/joints_2d.py). The
refiner, the ray-frame turn and root_3d still read each frame's own 2D joints.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import numpy as np
import zmq

from engines.align import RootAligner
from engines.model_config import ModelConfig
from engines.ray_frame import person_rotations
from engines.rootpos import Intrinsics, camera_intrinsics, in_view_weights, root_translation
from streamer.channels import Inbox, Outbox
from streamer.config import PipelineConfig
from streamer.depth_limit import DepthRateLimit
from streamer.filters import RESET_GAP_S, PoseSmoother, make_smoother, resolved_method, smoother_lag
from streamer.joints_2d import make_joints_2d_smoother
from streamer.packets import ALIGN_FAILED, END, RESULT, START, EndPacket, FramePacket, ResultPacket
from streamer.refiner import (SLOWEST_RATE, DelayedSmoother, LiveRefiningSmoother, RefiningSmoother,
                              TemporalRefiner)
from streamer.stages.base import POLL_MS, Control, Reporter, StageTimer

log = logging.getLogger(__name__)


class AlignStage:
    def __init__(self, model_config: ModelConfig, config: PipelineConfig, in_endpoint: str, out_endpoint: str,
                 control: Control, reporter: Reporter, refiner: TemporalRefiner | None = None,
                 live_refiner: TemporalRefiner | None = None) -> None:
        skel = model_config.skeleton
        self.origin = skel.index(skel.origin)
        self.refiner = refiner                       # files only (streamer/refiner.py)
        self.live_refiner = live_refiner             # live sources only: past frames, none ahead
        self.num_joints = skel.num_joints
        self.num_roots = len(model_config.roots)
        self.aligner = RootAligner(skel.num_joints, model_config.root_indices, skel.index(skel.origin),
                                   config.alignment.method)
        self.filter_config = config.filter
        self.coordinates = config.coordinates
        self.batch_size = config.inference.batch_size
        self.smoother: PoseSmoother = make_smoother(config.filter, (skel.num_joints, 3), live=False)
        self.root_smoother: PoseSmoother = make_smoother(config.filter.for_root(), (1, 3), live=False)
        self.joints_2d_smoother: PoseSmoother = make_joints_2d_smoother(config.filter, skel.num_joints, False,
                                                                        self.smoother.lag, 0)
        self.depth_limit = self._depth_limit(live=False)
        self.first_roots: list[tuple[float, np.ndarray]] = []   # a file track's first roots, while they wait
        # Frames with a person whose pose the smoothers still hold, oldest first.
        self.held: deque[ResultPacket] = deque()
        # Frames released by the smoothers during one call, until it returns them (kept if it fails).
        self.ready: list[dict] = []
        self.track = -1                              # the last frame's track number (-1: nobody)
        # A ray-frame model's pose is turned into the camera's frame (engines/ray_frame.py).
        self.ray_frame = model_config.offsets_frame == "ray"
        self.live = False
        self.fps: float | None = None
        self._last_t: float | None = None            # the last file frame's time for the filters
        self._intrinsics: dict[tuple[int, int], Intrinsics] = {}
        self.in_endpoint = in_endpoint
        self.out_endpoint = out_endpoint
        self.control = control
        self.reporter = reporter
        self.timer = StageTimer()

    def run(self) -> None:
        ctx = zmq.Context()
        inbox, out = Inbox(ctx, self.in_endpoint), Outbox(ctx, self.out_endpoint)
        self.control.mark_ready()
        passed = 0                       # frames whose results went on
        try:
            while not self.control.abort.is_set():
                msg = inbox.recv(POLL_MS)
                if msg is None:
                    continue
                kind, body = msg
                if kind == RESULT:
                    try:
                        results = self.align(body)
                    except Exception as exc:
                        # Up to `filter.file_lag` frames (and the refiner's) are held back here:
                        # sent on as measured, the input ends after them, as a failing source's
                        # does, so that every frame before this one is written.
                        exc.drained = True  # type: ignore[attr-defined]
                        salvaged = self.salvage()
                        self._end(out, salvaged, EndPacket(ALIGN_FAILED, passed + len(salvaged)))
                        raise
                    for result in results:
                        out.send(RESULT, result)
                    passed += len(results)
                    continue
                if kind == END:
                    try:
                        results = self.flush()
                    except Exception as exc:
                        # The last track's frames, all held here: sent on as after a failure mid-file.
                        exc.drained = True  # type: ignore[attr-defined]
                        self._end(out, self.salvage(), EndPacket.from_dict(body))
                        raise
                    self._end(out, results, EndPacket.from_dict(body))
                    return
                if kind == START:
                    info = body["info"]
                    self.start(bool(info["live"]), int(body["ring"]["slots"]), info.get("fps"))
                out.send(kind, body)
        finally:
            inbox.close()
            out.close(linger_ms=0 if self.control.abort.is_set() else None)
            ctx.term()

    def _end(self, out: Outbox, results: list[dict], ended: EndPacket) -> None:
        """The last results on, then the end of the input with this stage's timings."""
        for result in results:
            out.send(RESULT, result)
        ended.timings["align"] = self.timer.summary()
        out.send(END, ended.to_dict())

    def start(self, live: bool, ring_slots: int, fps: float | None = None) -> None:
        """Filters for a new source. A held frame keeps its ring slot, so the lag is bounded by the
        slots a batch and the output leave free: more would stall the capture."""
        self.live = live
        self.fps = fps if fps and fps > 0 else None
        self._last_t = None
        wanted = smoother_lag(self.filter_config, live)
        room = max(ring_slots - self.batch_size - 1, 0)
        # A file with a frame rate: an image folder's shots are not a sequence to refine over.
        timed_file = not live and self.fps is not None
        refiner = self.refiner if timed_file and resolved_method(self.filter_config, live) != "off" else None
        stride = refiner.stride(self.fps) if refiner is not None else None
        if refiner is not None and stride is None:
            log.info("the temporal refiner runs from %.1f fps; this file's %.1f fps is filtered without it",
                     SLOWEST_RATE * refiner.fps, self.fps)
            refiner = None
        if refiner is not None and stride is not None:
            if stride > 1 and refiner.future * stride + wanted > room:
                # Fast footage: a shorter stride before a shorter smoother (every frame read at 60
                # fps did nearly as well as every second; the smoother's lag cut to 2 tripled the jitter).
                fitting = max(1, (room - wanted) // max(refiner.future, 1))
                if fitting < stride:
                    log.info("the frame ring holds %d frames: the temporal refiner reads this %.0f fps file at "
                             "stride %d instead of %d (raise ring.file_slots)", ring_slots, self.fps, fitting, stride)
                    stride = fitting
            if refiner.future * stride > room:
                log.warning("the frame ring holds %d frames: too few for the temporal refiner's %d frames ahead, "
                            "which is left out (raise ring.file_slots)", ring_slots, refiner.future * stride)
                refiner = None
        ahead = refiner.future * stride if refiner is not None and stride is not None else 0
        if wanted + ahead > room:
            log.warning("the frame ring holds %d frames: the filter looks %d frames ahead instead of %d "
                        "(raise ring.file_slots, or give /dev/shm more room)", ring_slots, room, wanted + ahead)
        lag = min(wanted, room - ahead)
        self.smoother = make_smoother(self.filter_config, (self.num_joints, 3), live, max_lag=lag)
        if refiner is not None:
            self.smoother = RefiningSmoother(refiner, self.smoother, self.origin, stride or 1)
        elif live and self.live_refiner is not None and resolved_method(self.filter_config, live) != "off":
            self.smoother = LiveRefiningSmoother(self.live_refiner, self.smoother, self.origin)
        # The root's smoother releases its frames in step with the pose's: the same total lag.
        self.root_smoother = make_smoother(self.filter_config.for_root(), (1, 3), live, max_lag=lag)
        if ahead:
            self.root_smoother = DelayedSmoother(self.root_smoother, ahead)
        # The 2D joints' too: the same frames ahead for the refiner, then the Kalman smoother's lag.
        self.joints_2d_smoother = make_joints_2d_smoother(self.filter_config, self.num_joints, live,
                                                          self.smoother.lag - ahead, ahead)
        self.depth_limit = self._depth_limit(live)
        self.first_roots = []
        self.track = -1

    def _depth_limit(self, live: bool) -> DepthRateLimit:
        """root_3d's bound on depth speed; none where filtering is off (every frame its own measurement)."""
        off = resolved_method(self.filter_config, live) == "off"
        return DepthRateLimit(0.0 if off else self.filter_config.root.max_depth_rate, RESET_GAP_S)

    def _time(self, fp: FramePacket) -> float:
        """The frame's time for the filters (see the module docstring)."""
        if self.live:
            return fp.t_capture
        if fp.t_media is not None:
            t = fp.t_media
        elif self._last_t is not None and self.fps:
            t = self._last_t + 1.0 / self.fps
        else:
            t = (self._last_t or 0.0) + 2.0 * RESET_GAP_S     # a jump: the filters start afresh
        self._last_t = t
        return t

    def _camera(self, fp: FramePacket) -> Intrinsics:
        """The camera model for a frame of this size (input-image pixels)."""
        size = fp.input_size
        if size not in self._intrinsics:
            c = self.coordinates
            self._intrinsics[size] = camera_intrinsics(size[0], size[1], c.focal_px, c.hfov_deg, c.principal_px)
        return self._intrinsics[size]

    def align(self, body: dict) -> list[dict]:
        """One frame's result in; the results now final out, oldest first (none while the smoothers
        hold this frame, several when they let go)."""
        t0 = time.perf_counter()
        res = ResultPacket.from_dict(body, self.num_joints, self.num_roots)
        if res.found and res.track != self.track:
            # Another person (streamer/tracking.py): their pose must not be smoothed into the last one's.
            self.ready += self.flush()
        self.track = res.track
        if res.found:
            aligned, root = self.measure(res)
            t = self._time(res.frame)
            self.held.append(res)
            poses = self.smoother.push(t, aligned, res.conf, res.joints_2d)
            points = self.joints_2d_smoother.push(t, res.joints_2d, res.conf)
            self.ready += self.release(poses, self._push_root(t, root, start=bool(poses)), points)
        else:
            self.ready += self.flush()
            res.joints_3d = None              # nobody found: no pose to align, nothing is published
            self.ready.append(res.to_dict())
        self.timer.since("align", t0)
        done, self.ready = self.ready, []
        return done

    def measure(self, res: ResultPacket) -> tuple[np.ndarray, np.ndarray]:
        """A found person's pose in camera axes, aligned from its roots, and its place (root_3d):
        what this frame alone says, before any filter."""
        aligned = self.aligner(res.offsets_3d, res.conf)
        k = self._camera(res.frame)
        if self.ray_frame:
            rot = person_rotations(res.joints_2d, k.fx, np.array([k.cx, k.cy]))
            aligned = aligned @ rot.T
        weights = in_view_weights(res.conf, res.joints_2d, *res.frame.input_size,
                                  self.coordinates.root_min_joints_in_view)
        root, _ = root_translation(aligned, res.joints_2d, weights, k)
        return aligned, root

    def salvage(self) -> list[dict]:
        """After a failure: the frames the smoothers still held, oldest first, each with its pose and
        place as measured (unsmoothed: the filters' state is not to be trusted now). Stops at the
        first frame that cannot be measured either; the ones from there are lost with the stage."""
        done, self.ready = self.ready, []
        while self.held:
            res = self.held.popleft()
            try:
                aligned, root = self.measure(res)
                res.joints_3d = aligned.astype(np.float32)
                res.root_3d = root.astype(np.float32)
                done.append(res.to_dict())
            except Exception:  # noqa: BLE001 - the first failure is the one the run reports
                log.warning("%d frame(s) held back by the filters could not be measured again and are lost",
                            len(self.held) + 1)
                break
        return done

    def _push_root(self, t: float, root: np.ndarray, start: bool) -> list[np.ndarray]:
        """A frame's root into its smoother, its depth bounded in speed (streamer/depth_limit.py);
        the roots it releases. A file's track waits for its first `lag` roots and starts the bound
        from their median depth: tracks often start on a person entering the frame, squeezed and
        read as far away. The smoother would hold those frames anyway, so nothing waits longer;
        where the pose smoother lets frames go early (`start`: a jump in time), the track starts
        then, so that the two stay in step."""
        lag = self.root_smoother.lag
        if lag and self.depth_limit.max_rate > 0.0 and not self.depth_limit.started:
            self.first_roots.append((t, root))
            return self._start_track() if start or len(self.first_roots) >= lag else []
        return self.root_smoother.push(t, self.depth_limit(t, root)[None])

    def _start_track(self) -> list[np.ndarray]:
        """The waiting roots into the smoother, bounded from their median depth."""
        if not self.first_roots:
            return []
        # The median of the first frames the bound would link: not across a jump in time.
        depths = [float(self.first_roots[0][1][2])]
        for (t0, _), (t1, root) in zip(self.first_roots, self.first_roots[1:]):
            if not 0.0 <= t1 - t0 <= self.depth_limit.reset_gap_s:
                break
            depths.append(float(root[2]))
        self.depth_limit.start(self.first_roots[0][0], float(np.median(depths)))
        released = []
        for t, root in self.first_roots:
            released += self.root_smoother.push(t, self.depth_limit(t, root)[None])
        self.first_roots.clear()
        return released

    def flush(self) -> list[dict]:
        """Every frame held, with its pose and root: the track ends (nobody found, or the source)."""
        roots = self._start_track()
        done = self.release(self.smoother.flush(), roots + self.root_smoother.flush(), self.joints_2d_smoother.flush())
        self.depth_limit.reset()
        return done

    def release(self, poses: list[np.ndarray], roots: list[np.ndarray], points: list[np.ndarray]) -> list[dict]:
        """The oldest held frames with their final poses, places (root_3d) and 2D joints."""
        if not len(poses) == len(roots) == len(points):
            raise RuntimeError(f"the pose, root and 2D smoothers fell out of step ({len(poses)} poses, "
                               f"{len(roots)} roots, {len(points)} 2D poses)")
        done = []
        for joints_3d, root, joints_2d in zip(poses, roots, points):
            res = self.held.popleft()
            res.joints_3d = joints_3d.astype(np.float32)
            res.root_3d = root[0].astype(np.float32)
            res.joints_2d = joints_2d.astype(np.float32, copy=False)
            done.append(res.to_dict())
        return done
