"""Smoothing of a file's published 2D joints (streamer/joints_2d.py, `filter.joints_2d`): in the
person's own size, so moving or scaling the image moves or scales the result alike; it takes out
jitter without lagging a walk; only a file's Kalman-smoothed frames get it, and every frame's 2D
leaves with its own 3D."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.model_file import default_model_config
from streamer.config import load_pipeline_config
from streamer.filters import MIN_CONF, RESET_GAP_S, FilterConfig, Joints2DFilterConfig, KalmanSmoother, PoseSmoother
from streamer.joints_2d import GATE_FRAMES, MIN_SIZE_PX, Joints2DSmoother, make_joints_2d_smoother, person_size
from streamer.packets import ResultPacket
from streamer.stages.align import AlignStage

from poses import result_packets

J = 17
FPS = 25.0
RING = 24


@pytest.fixture(scope="module")
def defaults() -> FilterConfig:
    return load_pipeline_config().filter


def _through(sm: PoseSmoother, points: np.ndarray, conf: np.ndarray | None = None) -> np.ndarray:
    out: list[np.ndarray] = []
    for i, p in enumerate(points):
        out += sm.push(i / FPS, p, None if conf is None else conf[i])
    return np.stack(out + sm.flush())


def _walker(n: int, height_px: float, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(truth, measured) (n, J, 2): a figure crossing the image at 1.5 heights a second, its
    limbs swinging at 1 Hz, measured with `noise` heights of jitter per joint."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-0.25, 0.25, (J, 2)) * np.array([0.5, 2.0])
    t = np.arange(n) / FPS
    swing = 0.08 * np.sin(2 * np.pi * t)[:, None, None] * rng.choice([-1.0, 1.0], (1, J, 1))
    truth = (base[None] + swing + np.stack([1.5 * t, np.zeros(n)], -1)[:, None]) * height_px + 300.0
    return truth, truth + rng.normal(0.0, noise * height_px, truth.shape)


# --- the person's size ----------------------------------------------------------------------

@given(st.floats(0.1, 20.0), st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_the_size_moves_with_the_person_and_scales_with_them(scale: float, dx: float, dy: float, seed: int) -> None:
    points = np.random.default_rng(seed).uniform(0.0, 100.0, (J, 2))
    size = person_size(points)
    assert size == pytest.approx(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))
    assert person_size(points * scale + [dx, dy]) == pytest.approx(max(size * scale, MIN_SIZE_PX), rel=1e-6)


def test_every_joint_on_one_pixel_still_gives_a_unit() -> None:
    assert person_size(np.full((J, 2), 7.0)) == MIN_SIZE_PX


# --- the smoother ---------------------------------------------------------------------------

@given(st.floats(0.2, 5.0), st.floats(-500.0, 500.0), st.floats(-500.0, 500.0), st.integers(0, 10_000),
       st.integers(1, 40))
@settings(max_examples=40, deadline=None)
def test_moving_or_scaling_the_image_moves_or_scales_the_result_alike(scale: float, dx: float, dy: float, seed: int,
                                                                        n: int) -> None:
    _, measured = _walker(n, 200.0, seed, 0.03)
    conf = np.random.default_rng(seed).uniform(0.1, 1.0, (n, J))
    cfg = load_pipeline_config().filter.joints_2d
    plain = _through(Joints2DSmoother(cfg, J, 10), measured, conf)
    moved = _through(Joints2DSmoother(cfg, J, 10), measured * scale + [dx, dy], conf)
    np.testing.assert_allclose(moved, plain * scale + [dx, dy], atol=1e-6 * (1 + abs(dx) + abs(dy) + 600 * scale))


@pytest.mark.parametrize("height_px", [60.0, 400.0, 1500.0])
def test_jitter_falls_and_a_walk_is_not_lagged(defaults: FilterConfig, height_px: float) -> None:
    truth, measured = _walker(150, height_px, 3, 0.03)
    out = _through(Joints2DSmoother(defaults.joints_2d, J, 10), measured)
    assert out.shape == measured.shape
    raw_err = np.linalg.norm(measured - truth, axis=-1).mean()
    err = np.linalg.norm(out - truth, axis=-1).mean()
    assert err < 0.5 * raw_err
    accel = np.linalg.norm(np.diff(out - truth, 2, axis=0), axis=-1).mean()
    raw_accel = np.linalg.norm(np.diff(measured - truth, 2, axis=0), axis=-1).mean()
    assert accel < 0.1 * raw_accel
    # No lag: the output lines up best with the truth as it is, not with the truth of a frame before.
    mid = slice(20, 130)
    shifted = [np.linalg.norm(out[mid] - truth[mid.start - k:mid.stop - k], axis=-1).mean() for k in (0, 1, 2)]
    assert shifted[0] == min(shifted)


def test_a_flush_starts_the_next_track_in_its_own_size(defaults: FilterConfig) -> None:
    def fresh() -> Joints2DSmoother:
        return Joints2DSmoother(defaults.joints_2d, J, 4)

    small = _walker(20, 50.0, 1, 0.03)[1]
    large = _walker(20, 800.0, 2, 0.03)[1]
    sm = fresh()
    _through(sm, small)
    np.testing.assert_allclose(_through(sm, large), _through(fresh(), large), rtol=1e-9)


def _reference(cfg: Joints2DFilterConfig, lag: int, points: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """The smoother written for a whole track at once: sizes from the first frame, the gate's
    median over the frames within GATE_FRAMES either side (fewer at the ends), then the fixed-lag
    smoother over the lag left."""
    k = min(GATE_FRAMES, lag - 1) if cfg.outlier_gate > 0 else 0
    size = person_size(points[0])
    z = points / size
    gated = conf.copy()
    for i in range(len(z)):
        median = np.median(z[max(0, i - k):i + k + 1], axis=0)
        gated[i][np.linalg.norm(z[i] - median, axis=1) > cfg.outlier_gate] = MIN_CONF
    sm = KalmanSmoother(cfg.kalman, (J, 2), lag - k)
    return _through(sm, z, gated) * size


@given(st.integers(1, 40), st.integers(1, 12), st.sampled_from([0.0, 0.05, 0.2]), st.integers(0, 1000))
@settings(max_examples=60, deadline=None)
def test_frame_by_frame_it_is_the_smoothing_of_the_whole_track(n: int, lag: int, gate: float, seed: int) -> None:
    cfg = replace(load_pipeline_config().filter.joints_2d, outlier_gate=gate)
    _, measured = _walker(n, 250.0, seed, 0.05)
    conf = np.random.default_rng(seed).uniform(0.2, 1.0, (n, J))
    sm = Joints2DSmoother(cfg, J, lag)
    assert sm.lag == lag
    out: list[np.ndarray] = []
    for i, p in enumerate(measured):
        got = sm.push(i / FPS, p, conf[i])
        assert len(got) == (i >= lag)              # each frame held exactly `lag` frames
        out += got
    out += sm.flush()
    np.testing.assert_allclose(np.stack(out), _reference(cfg, lag, measured, conf), rtol=1e-9, atol=1e-9)


def test_a_frame_with_left_and_right_exchanged_does_not_pull_its_neighbours_off(defaults: FilterConfig) -> None:
    truth, measured = _walker(60, 300.0, 7, 0.01)
    swapped = measured.copy()
    for i in (20, 41):                              # one frame each: both wrists exchanged
        swapped[i, [13, 16]] = swapped[i, [16, 13]]

    def neighbours_error(gate: float) -> float:
        out = _through(Joints2DSmoother(replace(defaults.joints_2d, outlier_gate=gate), J, 10), swapped)
        near = [i for c in (20, 41) for i in range(c - 4, c + 5) if i != c]
        return float(np.linalg.norm(out[near][:, [13, 16]] - truth[near][:, [13, 16]], axis=-1).mean())

    gated = Joints2DSmoother(defaults.joints_2d, J, 10)
    out = _through(gated, swapped)
    assert gated.gated >= 4                         # the two wrists of both frames, at least
    raw_wrist_error = float(np.linalg.norm(measured[:, [13, 16]] - truth[:, [13, 16]], axis=-1).mean())
    assert neighbours_error(defaults.joints_2d.outlier_gate) < raw_wrist_error < neighbours_error(0.0)
    # ... and the swapped frames themselves are put nearly right by the frames around them.
    assert np.linalg.norm(out[[20, 41]][:, [13, 16]] - truth[[20, 41]][:, [13, 16]], axis=-1).max() < 0.1 * 300.0


def test_a_jump_in_time_ends_the_track(defaults: FilterConfig) -> None:
    sm = Joints2DSmoother(defaults.joints_2d, J, 10)
    points = _walker(8, 300.0, 8, 0.02)[1]
    for i in range(5):
        assert sm.push(i / FPS, points[i]) == []
    got = sm.push(5 / FPS + 2 * RESET_GAP_S, points[5])   # the five held frames leave, the new one waits
    assert len(got) == 5
    assert len(sm.flush()) == 1


@pytest.mark.parametrize("lag, gate_frames", [(1, 0), (2, 1), (3, 2), (10, 2)])
def test_a_short_lag_shortens_the_gates_window(defaults: FilterConfig, lag: int, gate_frames: int) -> None:
    sm = Joints2DSmoother(defaults.joints_2d, J, lag)
    assert sm.gate_frames == gate_frames and sm.kalman.lag == lag - gate_frames
    with pytest.raises(ValueError, match="lag of at least one frame"):
        Joints2DSmoother(defaults.joints_2d, J, 0)


# --- which frames get it ----------------------------------------------------------------------

def _method(cfg: FilterConfig, method: str, smooth: bool = True) -> FilterConfig:
    return replace(cfg, method=method, joints_2d=replace(cfg.joints_2d, smooth=smooth))


@pytest.mark.parametrize("method, live, smooth, lag, ahead, smoothed", [
    ("auto", False, True, 10, 0, True),        # a file: the Kalman smoother's lag
    ("kalman", False, True, 10, 10, True),     # ... behind a refiner's 10 frames ahead
    ("auto", True, True, 0, 0, False),         # live: as estimated, at once
    ("auto", False, False, 10, 10, False),     # turned off: as estimated, held as long
    ("one_euro", False, True, 0, 10, False),   # a file filtered causally: as estimated
    ("off", False, True, 0, 0, False),
    ("auto", False, True, 0, 0, False),        # a ring too short for any lag
])
def test_only_a_files_kalman_smoothed_frames_get_it(defaults: FilterConfig, method: str, live: bool, smooth: bool,
                                                   lag: int, ahead: int, smoothed: bool) -> None:
    sm = make_joints_2d_smoother(_method(defaults, method, smooth), J, live, lag, ahead)
    assert sm.lag == lag + ahead
    truth, measured = _walker(40, 300.0, 4, 0.03)
    released: list[np.ndarray] = []
    for i, p in enumerate(measured):
        got = sm.push(i / FPS, p, np.ones(J))
        assert len(got) == (i + 1 > lag + ahead)
        released += got
    out = np.stack(released + sm.flush())
    assert out.shape == measured.shape
    if smoothed:
        assert np.linalg.norm(out - truth, axis=-1).mean() < 0.6 * np.linalg.norm(measured - truth, axis=-1).mean()
    else:
        np.testing.assert_array_equal(out, measured)


def test_bad_settings_are_refused(defaults: FilterConfig) -> None:
    bad = replace(defaults, joints_2d=replace(defaults.joints_2d,
                                              kalman=dataclasses.replace(defaults.joints_2d.kalman, process_noise=0.0)))
    with pytest.raises(ValueError, match="^joints_2d.kalman.process_noise must be"):
        bad.check()
    for gate in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="^joints_2d.outlier_gate must be"):
            replace(defaults, joints_2d=replace(defaults.joints_2d, outlier_gate=gate)).check()


# --- through the align stage ----------------------------------------------------------------

def _stage(overrides: dict | None, live: bool) -> AlignStage:
    cfg = replace(default_model_config(), offsets_frame="camera")
    stage = AlignStage(cfg, load_pipeline_config(overrides=overrides), "", "",
                       control=None, reporter=None)  # type: ignore[arg-type]
    stage.start(live, RING)
    return stage


def _aligned(stage: AlignStage, n: int, nobody: range) -> tuple[list[ResultPacket], list[ResultPacket]]:
    packets = result_packets(stage, n, nobody, FPS, RING)
    truth, measured = _walker(n, 300.0, 6, 0.03)
    for p, uv in zip(packets, measured):
        p.joints_2d = uv.astype(np.float32)
    out = []
    for p in packets:
        out += stage.align(p.to_dict())
    out += stage.flush()
    return packets, [ResultPacket.from_dict(d, stage.num_joints, stage.num_roots) for d in out]


def test_a_files_2d_joints_leave_smoothed_with_their_own_frame() -> None:
    stage = _stage(None, live=False)
    packets, out = _aligned(stage, 40, range(12, 15))
    assert [r.frame.seq for r in out] == list(range(40))
    cfg = stage.filter_config.joints_2d
    for run in (range(0, 12), range(15, 40)):
        want = _through(Joints2DSmoother(cfg, J, stage.smoother.lag),
                        np.stack([packets[i].joints_2d for i in run]), np.stack([packets[i].conf for i in run]))
        np.testing.assert_allclose(np.stack([out[i].joints_2d for i in run]), want, atol=1e-3)
        assert out[run[0]].joints_2d.dtype == np.float32
    for i in range(12, 15):                           # nobody there: the frame's 2D as it came
        np.testing.assert_array_equal(out[i].joints_2d, packets[i].joints_2d)


@pytest.mark.parametrize("overrides, live", [
    ({"filter": {"method": "off"}}, False),
    ({"filter": {"joints_2d": {"smooth": False}}}, False),
    (None, True),
])
def test_elsewhere_the_2d_joints_leave_as_estimated(overrides: dict | None, live: bool) -> None:
    stage = _stage(overrides, live)
    packets, out = _aligned(stage, 30, range(12, 15))
    assert [r.frame.seq for r in out] == list(range(30))
    for p, r in zip(packets, out):
        np.testing.assert_array_equal(r.joints_2d, p.joints_2d)
