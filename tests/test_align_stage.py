"""The align stage's frame bookkeeping with the smoothers (streamer/stages/align.py): a file's frames
are held back `filter.file_lag` frames, and still every frame leaves once, in order, with its own
result and root; a frame without a person lets the held ones go first; a live source holds nothing;
a ring too short for the lag shortens it."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from engines.model_file import default_model_config
from engines.rootpos import root_translation
from streamer.config import load_pipeline_config
from streamer.depth_limit import DepthRateLimit
from streamer.filters import RESET_GAP_S, KalmanSmoother
from streamer.packets import FramePacket, ResultPacket
from streamer.stages.align import AlignStage

from poses import result_packets

FPS = 25.0
RING = 24
NOBODY = range(12, 15)          # frames without a person


def _stage(live: bool, ring_slots: int = RING) -> AlignStage:
    cfg = replace(default_model_config(), offsets_frame="camera")
    stage = AlignStage(cfg, load_pipeline_config(), "", "", control=None, reporter=None)  # type: ignore[arg-type]
    stage.start(live, ring_slots)
    return stage


def _packets(stage: AlignStage, n: int) -> list[ResultPacket]:
    return result_packets(stage, n, NOBODY, FPS, RING)


def _run(stage: AlignStage, packets: list[ResultPacket]) -> tuple[list[ResultPacket], list[int]]:
    out, released_per_frame = [], []
    for p in packets:
        got = stage.align(p.to_dict())
        released_per_frame.append(len(got))
        out += got
    out += stage.flush()     # what END does
    return [ResultPacket.from_dict(d, stage.num_joints, stage.num_roots) for d in out], released_per_frame


def _smoothed(cfg, shape, lag: int, ts, values) -> np.ndarray:
    sm = KalmanSmoother(cfg, shape, lag)
    return np.stack(sum((sm.push(t, v) for t, v in zip(ts, values)), []) + sm.flush())


def test_a_file_is_held_back_by_the_lag_and_every_frame_leaves_once_in_order() -> None:
    stage = _stage(live=False)
    lag = stage.smoother.lag
    assert lag == stage.filter_config.file_lag > 0 and stage.root_smoother.lag == lag
    packets = _packets(stage, 40)
    out, per_frame = _run(stage, packets)
    assert [r.frame.seq for r in out] == list(range(40))
    assert [r.found for r in out] == [p.found for p in packets]
    assert all((r.joints_3d is None) == (not r.found) for r in out)
    # Nothing leaves while the first lag frames are held, then one frame per frame; a frame
    # without a person lets the lag frames held before it go with it.
    assert per_frame[:lag] == [0] * lag and per_frame[lag:12] == [1] * (12 - lag)
    assert per_frame[12] == lag + 1 and per_frame[13] == 1
    # Each run of frames with a person is smoothed on its own, as the smoothers alone do it; the
    # root is measured on each pose as aligned, and smoothed with the root's settings.
    cfg = stage.filter_config
    k = stage._camera(packets[0].frame)
    for run in (range(0, 12), range(15, 40)):
        ts = [i / FPS for i in run]
        aligned = [stage.aligner(packets[i].offsets_3d, packets[i].conf) for i in run]
        sm = KalmanSmoother(cfg.kalman, (stage.num_joints, 3), lag)
        want = np.stack(sum((sm.push(t, a, packets[i].conf) for t, a, i in zip(ts, aligned, run)), []) + sm.flush())
        np.testing.assert_allclose(np.stack([out[i].joints_3d for i in run]), want, atol=1e-6)
        # Each run's depths are bounded in speed from the median of its first `lag` (streamer/depth_limit.py).
        measured = [root_translation(a, packets[i].joints_2d, packets[i].conf, k)[0] for a, i in zip(aligned, run)]
        limit = DepthRateLimit(cfg.root.max_depth_rate, RESET_GAP_S)
        limit.start(ts[0], float(np.median([r[2] for r in measured[:lag]])))
        roots = [limit(t, r)[None] for t, r in zip(ts, measured)]
        want_root = _smoothed(cfg.root.kalman, (1, 3), lag, ts, roots)[:, 0]
        np.testing.assert_allclose(np.stack([out[i].root_3d for i in run]), want_root, atol=1e-5)


def test_a_live_source_holds_nothing() -> None:
    stage = _stage(live=True)
    assert stage.smoother.lag == 0 and stage.root_smoother.lag == 0
    out, per_frame = _run(stage, _packets(stage, 20))
    assert per_frame == [1] * 20
    assert [r.frame.seq for r in out] == list(range(20))
    assert all(r.root_3d is not None for r in out if r.found)


@pytest.mark.parametrize("ring_slots, lag", [(RING, 10), (12, 10), (11, 9), (3, 1), (2, 0)])
def test_a_short_ring_shortens_the_lag_with_a_warning(ring_slots: int, lag: int, caplog) -> None:
    # Batch 1: a held frame keeps its slot, so the ring must also leave one for the batch and one
    # for the output, or the capture would wait for a slot that never frees.
    with caplog.at_level(logging.WARNING, logger="streamer.stages.align"):
        stage = _stage(live=False, ring_slots=ring_slots)
    assert stage.smoother.lag == stage.root_smoother.lag == lag
    assert ("looks %d frames ahead instead of 10" % lag in caplog.text) == (lag < 10)
    out, _ = _run(stage, _packets(stage, 30))
    assert [r.frame.seq for r in out] == list(range(30))


def test_stalled_backward_and_missing_times_never_hold_more_than_the_lag() -> None:
    # A damaged packet leaves a frame without a media time; concatenated MPEG-TS starts its times
    # again; a stalled clock repeats one. Each held frame keeps a ring slot, so none of these may
    # make the stage hold more than the lag it was given, or the capture would stall.
    stage = _stage(live=False)
    stage.fps = FPS
    lag = stage.smoother.lag
    packets = _packets(stage, 60)
    times = [k / FPS for k in range(10)] + [9 / FPS] * 15 + [None] * 3 + [0.1 + k / FPS for k in range(32)]
    out = []
    for p, t in zip(packets, times):
        p.frame.t_media = t
        out += stage.align(p.to_dict())
        assert len(stage.held) <= lag
    out += stage.flush()
    assert [d["frame"]["seq"] for d in out] == list(range(60))


def test_frames_without_any_time_are_not_filtered() -> None:
    # An image folder: no media times and no frame rate, so nothing to filter over.
    stage = _stage(live=False)
    packets = [p for p in _packets(stage, 8) if p.found]
    for p in packets:
        p.frame.t_media = None
    out, _ = _run(stage, packets)
    for p, r in zip(packets, out):
        np.testing.assert_allclose(r.joints_3d, stage.aligner(p.offsets_3d, p.conf), atol=1e-6)


def _squeezed(stage: AlignStage, n: int, squeeze: range) -> list[ResultPacket]:
    """A still person 3 m away whose 2D joints shrink to a tenth in `squeeze`, as when they are
    mostly outside the frame and the network draws the whole skeleton in the part it sees."""
    joints = stage.num_joints
    pose = np.random.default_rng(2).normal(0.0, 0.3, (joints, 3))
    pose -= pose[0]
    offsets = pose[None] - pose[list(stage.aligner.roots)][:, None]
    k = stage._camera(FramePacket(0, 0, 480, 640, 0.0, 0.0, 1.0))
    uv = k.project(pose + [0.2, 0.1, 3.0])
    packets = []
    for seq in range(n):
        seen = uv[0] + (uv - uv[0]) * (0.1 if seq in squeeze else 1.0)
        packets.append(ResultPacket(FramePacket(seq, seq % RING, 480, 640, seq / FPS, seq / FPS, 1.0), True, 0.9,
                                    seen.astype(np.float32), np.ones(joints, np.float32), offsets.astype(np.float32)))
    return packets


@pytest.mark.parametrize("live", [False, True])
def test_a_squeezed_skeleton_does_not_throw_the_root_far_away(live: bool) -> None:
    stage = _stage(live)
    rate = stage.filter_config.root.max_depth_rate
    squeeze = range(20, 30)
    out, _ = _run(stage, _squeezed(stage, 60, squeeze))
    depth = np.array([r.root_3d[2] for r in out])
    # Measured alone, the squeezed frames are about ten times as far (the next test). Bounded, the ten frames can
    # drift at most exp(rate * 10 / FPS), and the filter smooths that further.
    bound = 3.0 * np.exp(rate * len(squeeze) / FPS)
    assert depth.max() < bound + 0.05 and bound < 10.0
    np.testing.assert_allclose(depth[:10], 3.0, atol=0.02)   # a file's smoother sees 10 frames ahead
    # Back to the whole skeleton, the depth comes back (a file's Kalman smoother overshoots a little).
    assert abs(depth[-1] - 3.0) < 0.3


def test_with_filtering_off_every_frame_is_its_own_measurement() -> None:
    stage = AlignStage(replace(default_model_config(), offsets_frame="camera"),
                       load_pipeline_config(overrides={"filter": {"method": "off"}}), "", "",
                       control=None, reporter=None)  # type: ignore[arg-type]
    stage.start(False, RING)
    out, _ = _run(stage, _squeezed(stage, 30, range(20, 30)))
    depth = np.array([r.root_3d[2] for r in out])
    np.testing.assert_allclose(depth[:20], 3.0, rtol=1e-4)
    assert (depth[20:] > 25.0).all()


def test_a_file_track_starts_from_the_median_of_its_first_depths() -> None:
    # The person enters the frame: their first frames are squeezed and read far away. A file's
    # track starts its bound from the median depth of its first `lag` frames, not from the first.
    stage = _stage(live=False)
    lag = stage.root_smoother.lag
    out, _ = _run(stage, _squeezed(stage, 40, range(0, 3)))
    depth = np.array([r.root_3d[2] for r in out])
    assert lag > 6 and (depth < 3.6).all(), depth
    # A live source cannot wait: its track starts where its first frame puts it.
    live = _stage(live=True)
    out, _ = _run(live, _squeezed(live, 40, range(0, 3)))
    assert out[0].root_3d[2] > 25.0


def test_unrelated_images_share_no_depth() -> None:
    # An image folder has no time between its frames: each is its own track, unbounded.
    stage = _stage(live=False)
    packets = _squeezed(stage, 6, range(0, 6, 2))
    for p in packets:
        p.frame.t_media = None
    out, _ = _run(stage, packets)
    np.testing.assert_allclose([r.root_3d[2] for r in out][1::2], 3.0, rtol=1e-4)
    assert all(r.root_3d[2] > 25.0 for r in out[0::2])


def test_a_new_track_lets_the_held_frames_go_and_starts_the_filters_afresh() -> None:
    """Another person (the tracker numbers a new track) is not smoothed into the last one."""
    stage = _stage(live=False)
    lag = stage.smoother.lag
    packets = _packets(stage, 40)
    for p in packets:
        p.found = True
        p.track = 3 if p.frame.seq < 20 else 4
    out, per_frame = _run(stage, packets)
    assert [r.frame.seq for r in out] == list(range(40)) and [r.track for r in out] == [p.track for p in packets]
    assert per_frame[20] == lag and per_frame[20 + lag] == 1   # the first track's held frames leave; the new one's wait
    for run in (range(0, 20), range(20, 40)):
        ts = [i / FPS for i in run]
        aligned = [stage.aligner(packets[i].offsets_3d, packets[i].conf) for i in run]
        sm = KalmanSmoother(stage.filter_config.kalman, (stage.num_joints, 3), lag)
        want = np.stack(sum((sm.push(t, a, packets[i].conf) for t, a, i in zip(ts, aligned, run)), []) + sm.flush())
        np.testing.assert_allclose(np.stack([out[i].joints_3d for i in run]), want, atol=1e-6)


def test_the_root_is_solved_from_the_joints_in_view() -> None:
    from engines.rootpos import in_view_weights

    stage = _stage(live=True)
    packet = _packets(stage, 1)[0]
    packet.joints_2d[:5, 1] = 520.0                  # five joints below the 480-pixel frame
    packet.conf[:5] = 0.4
    out, _ = _run(stage, [packet])
    k = stage._camera(packet.frame)
    aligned = stage.aligner(packet.offsets_3d, packet.conf)
    want, _ = root_translation(aligned, packet.joints_2d, in_view_weights(packet.conf, packet.joints_2d, 640, 480, 4), k)
    every, _ = root_translation(aligned, packet.joints_2d, packet.conf, k)
    np.testing.assert_allclose(out[0].root_3d, want, atol=1e-5)      # the first frame passes the filters as it is
    assert np.abs(want - every).max() > 1e-3
