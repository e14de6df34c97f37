"""The align stage's frame bookkeeping with the smoother (streamer/stages/align.py): a file's frames
are held back `filter.kalman.file_lag` frames, and still every frame leaves once, in order, with its
own result; a frame without a person lets the held ones go first; a live source holds nothing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from engines.model_file import default_model_config
from streamer.config import load_pipeline_config
from streamer.filters import KalmanSmoother, make_smoother
from streamer.packets import FramePacket, ResultPacket
from streamer.stages.align import AlignStage

FPS = 25.0
NOBODY = range(12, 15)          # frames without a person


def _stage(live: bool) -> AlignStage:
    cfg = replace(default_model_config(), offsets_frame="camera")
    stage = AlignStage(cfg, load_pipeline_config(), "", "", control=None, reporter=None)  # type: ignore[arg-type]
    stage.live = live
    stage.smoother = make_smoother(stage.filter_config, (stage.num_joints, 3), live=live)
    return stage


def _packets(stage: AlignStage, n: int) -> list[ResultPacket]:
    rng = np.random.default_rng(5)
    joints, roots = stage.num_joints, stage.num_roots
    packets = []
    for seq in range(n):
        pose = rng.normal(0.0, 0.3, (joints, 3)) * 0.05 + np.linspace(0.0, 1.0, joints)[:, None]
        offsets = pose[None] - pose[list(stage.aligner.roots)][:, None] + rng.normal(0.0, 0.01, (roots, joints, 3))
        uv = rng.uniform(200.0, 300.0, (joints, 2))
        packets.append(ResultPacket(FramePacket(seq, seq % 24, 480, 640, seq / FPS, seq / FPS, 1.0),
                                    seq not in NOBODY, 0.9, uv.astype(np.float32), np.ones(joints, np.float32),
                                    offsets.astype(np.float32)))
    return packets


def _run(stage: AlignStage, packets: list[ResultPacket]) -> tuple[list[ResultPacket], list[int]]:
    out, released_per_frame = [], []
    for p in packets:
        got = stage.align(p.to_dict())
        released_per_frame.append(len(got))
        out += got
    out += stage.release(stage.smoother.flush())     # what END does
    return [ResultPacket.from_dict(d, stage.num_joints, stage.num_roots) for d in out], released_per_frame


def test_a_file_is_held_back_by_the_lag_and_every_frame_leaves_once_in_order() -> None:
    stage = _stage(live=False)
    lag = stage.smoother.lag
    assert lag > 0
    packets = _packets(stage, 40)
    out, per_frame = _run(stage, packets)
    assert [r.frame.seq for r in out] == list(range(40))
    assert [r.found for r in out] == [p.found for p in packets]
    assert all((r.joints_3d is None) == (not r.found) for r in out)
    assert all(r.root_3d is not None for r in out if r.found)
    # Nothing leaves while the first lag frames are held, then one frame per frame; a frame
    # without a person lets the lag frames held before it go with it.
    assert per_frame[:lag] == [0] * lag and per_frame[lag:12] == [1] * (12 - lag)
    assert per_frame[12] == lag + 1 and per_frame[13] == 1
    # Each run of frames with a person is smoothed on its own, as the smoother alone does it.
    for run in (range(0, 12), range(15, 40)):
        aligned = [stage.aligner(packets[i].offsets_3d, packets[i].conf) for i in run]
        sm = KalmanSmoother(stage.filter_config.kalman, (stage.num_joints, 3), lag)
        want = sum((sm.push(i / FPS, a, packets[i].conf) for i, a in zip(run, aligned)), []) + sm.flush()
        np.testing.assert_allclose(np.stack([out[i].joints_3d for i in run]), np.stack(want), atol=1e-6)


def test_a_live_source_holds_nothing() -> None:
    stage = _stage(live=True)
    out, per_frame = _run(stage, _packets(stage, 20))
    assert per_frame == [1] * 20
    assert [r.frame.seq for r in out] == list(range(20))
