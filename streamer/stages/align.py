"""Alignment: the per-root 3D estimates of each frame -> one pose (engines.align).

Temporal filtering (issue: live streaming) will sit here too, after alignment.
"""

from __future__ import annotations

import time

import zmq

from engines.align import RootAligner
from engines.model_config import ModelConfig
from streamer.channels import Inbox, Outbox
from streamer.config import PipelineConfig
from streamer.packets import END, RESULT, ResultPacket
from streamer.stages.base import POLL_MS, Control, Reporter, StageTimer


class AlignStage:
    def __init__(self, model_config: ModelConfig, config: PipelineConfig, in_endpoint: str, out_endpoint: str,
                 control: Control, reporter: Reporter) -> None:
        skel = model_config.skeleton
        self.num_joints = skel.num_joints
        self.num_roots = len(model_config.roots)
        self.aligner = RootAligner(skel.num_joints, model_config.root_indices, skel.index(skel.origin),
                                   config.alignment.method)
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
                    out.send(RESULT, self.align(body))
                    continue
                if kind == END:
                    body["timings"]["align"] = self.timer.summary()
                out.send(kind, body)
                if kind == END:
                    return
        finally:
            inbox.close()
            out.close(linger_ms=0 if self.control.abort.is_set() else None)
            ctx.term()

    def align(self, body: dict) -> dict:
        t0 = time.perf_counter()
        res = ResultPacket.from_dict(body, self.num_joints, self.num_roots)
        res.joints_3d = self.aligner(res.offsets_3d, res.conf)
        res.frame.timings["align"] = self.timer.since("align", t0)
        return res.to_dict()
