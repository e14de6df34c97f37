"""Alignment: the per-root 3D estimates of each frame -> one pose (engines.align), then temporal
filtering of that pose (streamer.filters; by default One Euro for live sources; for files a
Kalman filter with a fixed-lag smoother, which holds each frame back `filter.kalman.file_lag`
frames to correct its pose with the frames after it).
A model whose offsets are in the person's ray frame has its pose turned into the camera's first,
with the ray through its 2D joints' mean and the focal length (engines/ray_frame.py), so
filtering and root placement see camera axes whichever model runs.

The filter runs on the time the frame was captured (live) or its media time (files), so frames
dropped to stay live only make a longer step, never a wrong one. A frame with nobody in it resets
the filter: the frames still held come out first, and the next person found starts fresh, not
from where the last one was. Frames leave in the order they came.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import zmq

from engines.align import RootAligner
from engines.model_config import ModelConfig
from engines.ray_frame import person_rotations
from engines.rootpos import Intrinsics, camera_intrinsics, root_translation
from streamer.channels import Inbox, Outbox
from streamer.config import PipelineConfig
from streamer.filters import PoseFilter, PoseSmoother, make_filter, make_smoother
from streamer.packets import END, RESULT, START, FramePacket, ResultPacket
from streamer.stages.base import POLL_MS, Control, Reporter, StageTimer


class AlignStage:
    def __init__(self, model_config: ModelConfig, config: PipelineConfig, in_endpoint: str, out_endpoint: str,
                 control: Control, reporter: Reporter) -> None:
        skel = model_config.skeleton
        self.num_joints = skel.num_joints
        self.num_roots = len(model_config.roots)
        self.aligner = RootAligner(skel.num_joints, model_config.root_indices, skel.index(skel.origin),
                                   config.alignment.method)
        self.filter_config = config.filter
        self.coordinates = config.coordinates
        self.smoother: PoseSmoother = make_smoother(config.filter, (skel.num_joints, 3), live=False)
        self.root_filter: PoseFilter = make_filter(config.filter, (1, 3), live=False)
        # Frames with a person whose pose the smoother still holds, oldest first: (result, camera, time).
        self.held: deque[tuple[ResultPacket, Intrinsics, float]] = deque()
        # A ray-frame model's pose is turned into the camera's frame (engines/ray_frame.py).
        self.ray_frame = model_config.offsets_frame == "ray"
        self.live = False
        self._intrinsics: dict[tuple[int, int], Intrinsics] = {}
        self.in_endpoint = in_endpoint
        self.out_endpoint = out_endpoint
        self.control = control
        self.reporter = reporter
        self.timer = StageTimer()

    def run(self) -> None:
        ctx = zmq.Context()
        inbox, out = Inbox(ctx, self.in_endpoint), Outbox(ctx, self.out_endpoint)
        try:
            while not self.control.abort.is_set():
                msg = inbox.recv(POLL_MS)
                if msg is None:
                    continue
                kind, body = msg
                if kind == RESULT:
                    for result in self.align(body):
                        out.send(RESULT, result)
                    continue
                if kind == START:
                    self.live = bool(body["info"]["live"])
                    self.smoother = make_smoother(self.filter_config, (self.num_joints, 3), live=self.live)
                    self.root_filter = make_filter(self.filter_config, (1, 3), live=self.live)
                if kind == END:
                    for result in self.release(self.smoother.flush()):
                        out.send(RESULT, result)
                    body["timings"]["align"] = self.timer.summary()
                out.send(kind, body)
                if kind == END:
                    return
        finally:
            inbox.close()
            out.close(linger_ms=0 if self.control.abort.is_set() else None)
            ctx.term()

    def _camera(self, fp: FramePacket) -> Intrinsics:
        """The camera model for a frame of this size (input-image pixels)."""
        size = (round(fp.width * fp.scale), round(fp.height * fp.scale))
        if size not in self._intrinsics:
            c = self.coordinates
            self._intrinsics[size] = camera_intrinsics(size[0], size[1], c.focal_px, c.hfov_deg)
        return self._intrinsics[size]

    def align(self, body: dict) -> list[dict]:
        """One frame's result in; the results now final out, oldest first (none while the smoother
        holds this frame, several when it lets go)."""
        t0 = time.perf_counter()
        res = ResultPacket.from_dict(body, self.num_joints, self.num_roots)
        if res.found:
            joints_3d = self.aligner(res.offsets_3d, res.conf)
            fp = res.frame
            k = self._camera(fp)
            if self.ray_frame:
                rot = person_rotations(res.joints_2d, k.fx, np.array([k.cx, k.cy]))
                joints_3d = joints_3d @ rot.T
            t = fp.t_media if (fp.t_media is not None and not self.live) else fp.t_capture
            self.held.append((res, k, t))
            done = self.release(self.smoother.push(t, joints_3d, res.conf))
        else:
            done = self.release(self.smoother.flush())
            self.root_filter.reset()
            res.joints_3d = None              # nobody found: no pose to align, nothing is published
            done.append(res.to_dict())
        self.timer.since("align", t0)
        return done

    def release(self, poses: list[np.ndarray]) -> list[dict]:
        """The oldest held frames with their final poses, placed in the camera (root_3d)."""
        done = []
        for joints_3d in poses:
            res, k, t = self.held.popleft()
            res.joints_3d = joints_3d.astype(np.float32)
            root, _ = root_translation(res.joints_3d, res.joints_2d, res.conf, k)
            res.root_3d = self.root_filter(t, root[None])[0].astype(np.float32)
            done.append(res.to_dict())
        return done
