"""Temporal pose filters (streamer/filters.py).

The defaults under test are the shipped ones, from configs/pipeline.yaml.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamer.filters as filters
from engines.config import from_dict, to_dict
from streamer.config import load_pipeline_config
from engines.errors import ConfigError
from streamer.filters import (
    RESET_GAP_S, CausalSmoother, FilterConfig, KalmanConfig, KalmanPoseFilter, KalmanSmoother, OneEuroConfig,
    make_filter, make_smoother,
)

FPS = 30.0
J, D = 17, 3
FRAMES = 300
WARMUP = 30
NOISE = 0.01            # m
SMOOTHING = ("one_euro", "kalman")


@pytest.fixture(scope="module")
def defaults() -> FilterConfig:
    # The shipped defaults: configs/pipeline.yaml is their one home.
    return load_pipeline_config().filter


def _with(cfg: FilterConfig, method: str) -> FilterConfig:
    return dataclasses.replace(cfg, method=method)


def _run(f: filters.PoseFilter, ts: np.ndarray, poses: np.ndarray) -> np.ndarray:
    return np.stack([f(t, p) for t, p in zip(ts, poses)])


def _best_lag_frames(ts: np.ndarray, out: np.ndarray, truth: Callable[[np.ndarray], np.ndarray]) -> float:
    """The delay (frames) that best fits the output to the truth: argmin_s |out(t) - truth(t - s)|^2."""
    shifts = np.arange(-3.0, 5.0 + 1e-9, 0.02) / FPS
    errors = [np.mean((out - truth(ts - s)) ** 2) for s in shifts]
    best = int(np.argmin(errors))
    assert 0 < best < len(shifts) - 1, "best lag at the edge of the search: widen it"
    return float(shifts[best] * FPS)


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pose = rng.normal(0.0, 0.3, (J, D)) + [0.0, 1.0, 3.0]        # metres, in front of a camera
    phase = rng.uniform(0.0, 2 * np.pi, (J, D))
    return pose, phase


def test_auto_is_one_euro_live_and_kalman_for_files(defaults: FilterConfig) -> None:
    auto = dataclasses.replace(defaults, method="auto")
    assert isinstance(make_filter(auto, (J, D), live=True), filters.OneEuroFilter)
    assert isinstance(make_filter(auto, (J, D), live=False), filters.KalmanPoseFilter)


# --- 1. jitter --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", SMOOTHING)
def test_jitter_on_a_still_pose_falls_by_more_than_half(defaults: FilterConfig, method: str) -> None:
    rng = np.random.default_rng(1)
    pose, _ = _scene(1)
    ts = np.arange(FRAMES) / FPS
    noisy = pose + rng.normal(0.0, NOISE, (FRAMES, J, D))
    out = _run(make_filter(_with(defaults, method), (J, D)), ts, noisy)
    residual = np.std(out[WARMUP:] - pose)
    assert residual < 0.5 * NOISE, f"{method}: {residual * 100:.2f} cm of jitter left of 1 cm"


# --- 2. lag ----------------------------------------------------------------------------------

def _swing(pose: np.ndarray, phase: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: pose + 0.3 * np.sin(2 * np.pi * 1.0 * np.asarray(t)[:, None, None] + phase)


def _walk(pose: np.ndarray, phase: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    heading = np.array([1.5, 0.0, 0.5]) / np.hypot(1.5, 0.5) * 1.5           # 1.5 m/s, slightly away
    return lambda t: pose + np.asarray(t)[:, None, None] * heading


@pytest.mark.parametrize("noise", [0.0, NOISE], ids=["clean", "noisy"])
@pytest.mark.parametrize("motion", [_swing, _walk], ids=["swing", "walk"])
@pytest.mark.parametrize("method", SMOOTHING)
def test_motion_is_followed_within_a_frame(defaults: FilterConfig, method: str, motion, noise: float) -> None:
    rng = np.random.default_rng(2)
    truth = motion(*_scene(2))
    ts = np.arange(FRAMES) / FPS
    measured = truth(ts) + rng.normal(0.0, noise, (FRAMES, J, D))
    out = _run(make_filter(_with(defaults, method), (J, D)), ts, measured)
    lag = _best_lag_frames(ts[WARMUP:], out[WARMUP:], truth)
    assert -1.0 <= lag <= 1.0, f"{method}: best-fit lag {lag:.2f} frames"
    # The fit must mean something: the output stays close to the (shifted) truth.
    rms = np.sqrt(np.mean((out[WARMUP:] - truth(ts[WARMUP:] - lag / FPS)) ** 2))
    assert rms < 0.04, f"{method}: {rms * 100:.1f} cm from the truth even after the best shift"


def test_the_adaptive_process_noise_is_what_keeps_the_kalman_lag_small(defaults: FilterConfig) -> None:
    # The same filter with the adaptation off lags by several frames on the 1 Hz swing: if this
    # starts passing, the adaptation is no longer needed (or no longer switched off by 0).
    truth = _swing(*_scene(3))
    ts = np.arange(FRAMES) / FPS
    plain = dataclasses.replace(defaults, method="kalman",
                                kalman=dataclasses.replace(defaults.kalman, adapt_window_s=0.0))
    out = _run(make_filter(plain, (J, D)), ts, truth(ts))
    assert _best_lag_frames(ts[WARMUP:], out[WARMUP:], truth) > 2.0


# --- 3. behaviour ----------------------------------------------------------------------------

def test_off_is_the_identity(defaults: FilterConfig) -> None:
    f = make_filter(_with(defaults, "off"), (J, D))
    rng = np.random.default_rng(4)
    for k in range(5):
        x = rng.normal(size=(J, D))
        y = f(k / FPS, x)
        assert np.array_equal(y, x) and y is not x
    x32 = rng.normal(size=(J, D)).astype(np.float32)
    assert f(1.0, x32).dtype == np.float32


@pytest.mark.parametrize("method", SMOOTHING)
def test_first_frame_passes_through_unchanged(defaults: FilterConfig, method: str) -> None:
    x = np.random.default_rng(5).normal(size=(J, D))
    f = make_filter(_with(defaults, method), (J, D))
    assert np.array_equal(f(12.5, x, np.full(J, 0.3)), x)
    x32 = x.astype(np.float32)
    f.reset()
    y = f(13.0, x32)
    assert y.dtype == np.float32 and np.array_equal(y, x32)


@pytest.mark.parametrize("method", SMOOTHING)
def test_reset_forgets_history(defaults: FilterConfig, method: str) -> None:
    rng = np.random.default_rng(6)
    first = rng.normal(size=(40, J, D))
    second = rng.normal(size=(40, J, D))
    ts = np.arange(40) / FPS
    used = make_filter(_with(defaults, method), (J, D))
    _run(used, ts, first)
    used.reset()
    fresh = make_filter(_with(defaults, method), (J, D))
    # Even at the very next timestamp: reset means no memory of time either.
    assert np.array_equal(_run(used, ts + 40 / FPS, second), _run(fresh, ts + 40 / FPS, second))


@pytest.mark.parametrize("method", SMOOTHING)
@pytest.mark.parametrize("jump", [RESET_GAP_S + 0.01, -(RESET_GAP_S + 0.01)], ids=["forwards", "backwards"])
def test_a_long_jump_in_time_starts_afresh(defaults: FilterConfig, method: str, jump: float) -> None:
    # Backwards too: a file whose timestamps start again (concatenated MPEG-TS) would otherwise
    # repeat one pose until its time passed the old one.
    rng = np.random.default_rng(7)
    f = make_filter(_with(defaults, method), (J, D))
    _run(f, 2.0 + np.arange(30) / FPS, rng.normal(size=(30, J, D)))
    x = rng.normal(size=(J, D))
    assert np.array_equal(f(2.0 + 29 / FPS + jump, x), x)


@pytest.mark.parametrize("method", SMOOTHING)
def test_repeated_or_backward_timestamps_return_the_last_output(defaults: FilterConfig, method: str) -> None:
    rng = np.random.default_rng(8)
    f = make_filter(_with(defaults, method), (J, D))
    last = _run(f, np.arange(10) / FPS, rng.normal(size=(10, J, D)))[-1]
    for t in (9 / FPS, 9 / FPS, 5 / FPS):
        y = f(t, rng.normal(size=(J, D)) * 100)
        assert np.all(np.isfinite(y)) and np.array_equal(y, last)
    assert not np.array_equal(f(10 / FPS, last + 1.0), last)      # and it carries on afterwards


@pytest.mark.parametrize("method", SMOOTHING)
def test_output_is_the_callers_to_keep(defaults: FilterConfig, method: str) -> None:
    rng = np.random.default_rng(9)
    poses = rng.normal(size=(20, J, D))
    ts = np.arange(20) / FPS
    a, b = make_filter(_with(defaults, method), (J, D)), make_filter(_with(defaults, method), (J, D))
    for t, p in zip(ts, poses):
        ya, yb = a(t, p), b(t, p)
        assert np.array_equal(ya, yb)
        ya[...] = 1e6                   # scribbling on a result must not change the filter


@pytest.mark.parametrize("method", SMOOTHING)
def test_dropped_frames_are_handled_with_the_real_time_deltas(defaults: FilterConfig, method: str) -> None:
    rng = np.random.default_rng(10)
    truth = _swing(*_scene(10))
    ts = np.arange(2 * FRAMES) / FPS
    ts = ts[rng.uniform(size=ts.size) < 0.6]                        # 40 % of frames dropped at random
    ts = ts + rng.uniform(-0.004, 0.004, ts.size)                   # and the rest jitter in time
    measured = truth(ts) + rng.normal(0.0, NOISE, (ts.size, J, D))
    out = _run(make_filter(_with(defaults, method), (J, D)), ts, measured)
    keep = ts > 1.0
    assert np.all(np.isfinite(out))
    assert _best_lag_frames(ts[keep], out[keep], truth) <= 1.0


def test_low_confidence_joints_are_trusted_less(defaults: FilterConfig) -> None:
    rng = np.random.default_rng(11)
    f = make_filter(_with(defaults, "kalman"), (J, D))
    pose = rng.normal(size=(J, D))
    conf = np.ones(J)
    _run(f, np.arange(30) / FPS, np.repeat(pose[None], 30, axis=0))
    conf[:5] = 0.0                                                   # floored at MIN_CONF, not infinite noise
    y = f(30 / FPS, pose + 0.05, conf)
    moved = np.abs(y - pose).mean(axis=1)
    assert np.all(moved[:5] < 0.2 * moved[5:].min()) and np.all(moved[:5] > 0)


def test_wrong_shapes_are_refused(defaults: FilterConfig) -> None:
    for method in ("off", *SMOOTHING):
        f = make_filter(_with(defaults, method), (J, D))
        with pytest.raises(ValueError, match="shape"):
            f(0.0, np.zeros((J, 2)))
    with pytest.raises(ValueError, match="confidences"):
        make_filter(_with(defaults, "kalman"), (J, D))(0.0, np.zeros((J, D)), np.ones(J + 1))


_finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)
_step = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=0.1), st.floats(min_value=0.1, max_value=2.0),
                  st.floats(min_value=-0.1, max_value=0.0))


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from(SMOOTHING),
       frames=st.lists(st.tuples(_step, st.lists(_finite, min_size=6, max_size=6),
                                 st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2) | st.none()),
                       min_size=1, max_size=40))
def test_finite_input_gives_finite_output(method: str, frames) -> None:
    cfg = dataclasses.replace(load_pipeline_config().filter, method=method, one_euro=OneEuroConfig(1.0, 4.0, 2.0),
                              kalman=KalmanConfig(0.03, 0.01, 0.1))
    f = make_filter(cfg, (2, 3))
    t = 0.0
    for step, values, conf in frames:
        t += step
        y = f(t, np.reshape(values, (2, 3)), None if conf is None else np.array(conf))
        assert np.all(np.isfinite(y))


# --- 4. the vectorised Kalman is filterpy's KalmanFilter --------------------------------------

def _filterpy_run(cfg: KalmanConfig, ts: np.ndarray, zs: np.ndarray, confs: np.ndarray, j: int, d: int):
    """filterpy's KalmanFilter on coordinate (j, d) with the process and measurement noise ours uses:
    the filter itself, and its per-step means, covariances, transitions and process noises."""
    from filterpy.common import Q_continuous_white_noise
    from filterpy.kalman import KalmanFilter

    q = cfg.process_noise ** 2
    r = (cfg.measurement_noise / np.maximum(confs[:, j], filters.MIN_CONF)) ** 2
    kf = KalmanFilter(dim_x=2, dim_z=1)
    kf.H = np.array([[1.0, 0.0]])
    kf.x = np.array([[zs[0, j, d]], [0.0]])
    kf.P = np.diag([r[0], q * RESET_GAP_S])
    nis = 1.0
    xs, ps, fs, qs = [kf.x.copy()], [kf.P.copy()], [np.eye(2)], [np.zeros((2, 2))]
    for k in range(1, len(ts)):
        dt = ts[k] - ts[k - 1]
        boost = max(nis, 1.0) ** 2 if cfg.adapt_window_s > 0 else 1.0
        kf.F = np.array([[1.0, dt], [0.0, 1.0]])
        kf.Q = Q_continuous_white_noise(dim=2, dt=dt, spectral_density=q * boost)
        kf.R = np.array([[r[k]]])
        kf.predict()
        kf.update(zs[k, j, d])
        if cfg.adapt_window_s > 0:
            nis += (1.0 - np.exp(-dt / cfg.adapt_window_s)) * (kf.y[0, 0] ** 2 / kf.S[0, 0] - nis)
        xs.append(kf.x.copy()), ps.append(kf.P.copy()), fs.append(kf.F.copy()), qs.append(kf.Q.copy())
    return kf, np.array(xs), np.array(ps), np.array(fs), np.array(qs)


def _irregular_track(seed: int, n: int, shape: tuple[int, int]):
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.uniform(0.005, 0.15, n))                    # irregular: drops and bursts
    zs = np.sin(2.0 * ts)[:, None, None] + rng.normal(0.0, 0.02, (n, *shape))
    zs[n // 2:] += 0.3                                              # a jump, so the adaptation acts
    confs = rng.uniform(0.0, 1.0, (n, shape[0]))
    return ts, zs, confs


@pytest.mark.parametrize("adapt_window_s", [0.0, 0.1], ids=["plain", "adaptive"])
def test_kalman_matches_filterpy(adapt_window_s: float) -> None:
    cfg = KalmanConfig(process_noise=0.5, measurement_noise=0.02, adapt_window_s=adapt_window_s)
    shape = (4, 3)
    ts, zs, confs = _irregular_track(12, 200, shape)
    ours = KalmanPoseFilter(cfg, shape)
    out = np.stack([ours(t, z, c) for t, z, c in zip(ts, zs, confs)])
    for j in range(shape[0]):
        for d in range(shape[1]):
            kf, xs, _, _, _ = _filterpy_run(cfg, ts, zs, confs, j, d)
            np.testing.assert_allclose(out[:, j, d], xs[:, 0, 0], rtol=0, atol=1e-9)
            assert abs(ours._v[j, d] - kf.x[1, 0]) < 1e-9
            np.testing.assert_allclose([ours._p00[j, d], ours._p01[j, d], ours._p11[j, d]],
                                       [kf.P[0, 0], kf.P[0, 1], kf.P[1, 1]], rtol=1e-9)


def test_one_euro_matches_the_papers_scalar_algorithm() -> None:
    # Casiez et al.'s pseudocode, one coordinate at a time, with irregular time steps.
    cfg = OneEuroConfig(min_cutoff=0.7, beta=3.0, d_cutoff=1.5)
    rng = np.random.default_rng(13)
    n, shape = 150, (5, 3)
    ts = np.cumsum(rng.uniform(0.01, 0.1, n))
    zs = np.cumsum(rng.normal(0.0, 0.05, (n, *shape)), axis=0)
    ours = make_filter(dataclasses.replace(load_pipeline_config().filter, method="one_euro", one_euro=cfg), shape)
    out = np.stack([ours(t, z) for t, z in zip(ts, zs)])

    def alpha(dt: float, cutoff: float) -> float:
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    for j in range(shape[0]):
        for d in range(shape[1]):
            x, dx = zs[0, j, d], 0.0
            ref = [x]
            for k in range(1, n):
                dt = ts[k] - ts[k - 1]
                dx += alpha(dt, cfg.d_cutoff) * ((zs[k, j, d] - x) / dt - dx)
                x += alpha(dt, cfg.min_cutoff + cfg.beta * abs(dx)) * (zs[k, j, d] - x)
                ref.append(x)
            np.testing.assert_allclose(out[:, j, d], ref, rtol=0, atol=1e-12)


# --- 5. configuration ------------------------------------------------------------------------

@pytest.mark.parametrize("section, key, value", [
    ("one_euro", "min_cutoff", 0.0), ("one_euro", "min_cutoff", -1.0), ("one_euro", "min_cutoff", float("nan")),
    ("one_euro", "d_cutoff", 0.0), ("one_euro", "d_cutoff", float("inf")), ("one_euro", "beta", -0.1),
    ("kalman", "process_noise", 0.0), ("kalman", "measurement_noise", -0.01),
    ("kalman", "measurement_noise", float("inf")), ("kalman", "adapt_window_s", -1.0),
])
def test_check_rejects_bad_values(defaults: FilterConfig, section: str, key: str, value: float) -> None:
    bad = dataclasses.replace(defaults, **{section: dataclasses.replace(getattr(defaults, section), **{key: value})})
    with pytest.raises(ValueError, match=f"^{section}.{key} must be"):
        bad.check()
    data = to_dict(load_pipeline_config().filter)
    data[section][key] = value
    # From a file, a NaN or infinity is caught by the loader ("'filter.x.y' must be a finite number").
    with pytest.raises(ConfigError, match=f"filter.{section}.{key}'? must be"):
        from_dict(FilterConfig, data, source="test", prefix="filter.")


def test_check_rejects_an_unknown_method(defaults: FilterConfig) -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        _with(defaults, "median").check()
    data = to_dict(load_pipeline_config().filter)
    data["method"] = "median"
    with pytest.raises(ConfigError, match="method"):
        from_dict(FilterConfig, data, source="test")


def test_defaults_and_edge_values_pass_check(defaults: FilterConfig) -> None:
    defaults.check()
    dataclasses.replace(defaults, one_euro=dataclasses.replace(defaults.one_euro, beta=0.0),
                        kalman=dataclasses.replace(defaults.kalman, adapt_window_s=0.0)).check()


# --- 6. the fixed-lag smoother (files) --------------------------------------------------------

def _smooth(sm: filters.PoseSmoother, ts, zs, confs=None) -> np.ndarray:
    out = []
    for k, (t, z) in enumerate(zip(ts, zs)):
        out += sm.push(t, z, None if confs is None else confs[k])
    out += sm.flush()
    assert len(out) == len(ts), "every frame in comes out once"
    return np.stack(out)


@pytest.mark.parametrize("adapt_window_s", [0.0, 0.1], ids=["plain", "adaptive"])
def test_smoother_with_the_whole_track_in_hand_is_filterpys_rts_smoother(adapt_window_s: float) -> None:
    cfg = KalmanConfig(process_noise=0.5, measurement_noise=0.02, adapt_window_s=adapt_window_s)
    shape = (2, 3)
    n = 80
    ts, zs, confs = _irregular_track(21, n, shape)
    out = _smooth(KalmanSmoother(cfg, shape, lag=n), ts, zs, confs)
    for j in range(shape[0]):
        for d in range(shape[1]):
            kf, xs, ps, fs, qs = _filterpy_run(cfg, ts, zs, confs, j, d)
            ref, _, _, _ = kf.rts_smoother(xs, ps, fs, qs)
            np.testing.assert_allclose(out[:, j, d], ref[:, 0, 0], rtol=0, atol=1e-9)


def test_fixed_lag_output_is_the_smoothing_of_what_was_seen_by_then() -> None:
    # Frame k comes out once frame k + lag is in: it is then exactly what the whole-track
    # smoother makes of frames 0..k+lag.
    cfg = KalmanConfig(process_noise=0.5, measurement_noise=0.02, adapt_window_s=0.1)
    shape, n, lag = (3, 3), 40, 5
    ts, zs, confs = _irregular_track(22, n, shape)
    sm = KalmanSmoother(cfg, shape, lag)
    released = []
    for k in range(n):
        got = sm.push(ts[k], zs[k], confs[k])
        assert len(got) == (1 if k >= lag else 0)
        released += got
    for k, pose in enumerate(released):
        seen = k + lag + 1
        whole = _smooth(KalmanSmoother(cfg, shape, lag=n), ts[:seen], zs[:seen], confs[:seen])
        np.testing.assert_allclose(pose, whole[k], rtol=0, atol=1e-12)
    assert len(sm.flush()) == lag and sm.flush() == []


@pytest.mark.parametrize("motion", [_swing, _walk], ids=["swing", "walk"])
def test_smoother_is_closer_to_the_truth_than_the_filter_and_does_not_lag(defaults: FilterConfig, motion) -> None:
    rng = np.random.default_rng(23)
    truth = motion(*_scene(23))
    ts = np.arange(FRAMES) / FPS
    measured = truth(ts) + rng.normal(0.0, NOISE, (FRAMES, J, D))
    files = _with(defaults, "auto")
    causal = _smooth(make_smoother(dataclasses.replace(files, file_lag=0), (J, D), live=False), ts, measured)
    smoothed = _smooth(make_smoother(files, (J, D), live=False), ts, measured)

    def rms(out: np.ndarray) -> float:
        return float(np.sqrt(np.mean((out[WARMUP:] - truth(ts[WARMUP:])) ** 2)))

    assert rms(smoothed) < 0.75 * rms(causal), f"{rms(smoothed) * 100:.2f} cm against {rms(causal) * 100:.2f}"
    assert abs(_best_lag_frames(ts[WARMUP:], smoothed[WARMUP:], truth)) < 0.2


def test_smoother_repeats_gaps_and_flushes_keep_every_frame_in_order(defaults: FilterConfig) -> None:
    cfg, lag = defaults.kalman, 4
    rng = np.random.default_rng(24)
    sm = KalmanSmoother(cfg, (J, D), lag)
    first = rng.normal(size=(10, J, D))
    out = []
    for k in range(10):
        out += sm.push(k / FPS, first[k])
    out += sm.push(9 / FPS, first[9] + 5.0)       # a repeated timestamp: its predecessor's copy
    out += sm.push(8 / FPS, first[9] - 5.0)       # backwards: the same
    later = rng.normal(size=(6, J, D))
    t0 = 9 / FPS + RESET_GAP_S + 0.01             # a gap: the first run is released, then a fresh one
    for k in range(6):
        out += sm.push(t0 + k / FPS, later[k])
    out += sm.flush()
    assert len(out) == 18
    alone = _smooth(KalmanSmoother(cfg, (J, D), lag), np.arange(10) / FPS, first)
    np.testing.assert_array_equal(np.stack(out[:10]), alone)
    assert np.array_equal(out[10], out[9]) and np.array_equal(out[11], out[9])
    fresh = _smooth(KalmanSmoother(cfg, (J, D), lag), t0 + np.arange(6) / FPS, later)
    np.testing.assert_array_equal(np.stack(out[12:]), fresh)
    for o in out:
        assert not any(np.shares_memory(o, buf) for buf in vars(sm).values() if isinstance(buf, np.ndarray)), \
            "each output is the caller's own array"


def test_repeated_frames_are_held_like_any_other(defaults: FilterConfig) -> None:
    # Each frame the smoother holds keeps a slot of the frame ring: repeats must count, or a file
    # whose timestamps stall would hold frames without end and stall the capture.
    lag = 5
    sm = KalmanSmoother(defaults.kalman, (J, D), lag)
    rng = np.random.default_rng(25)
    first = rng.normal(size=(J, D))
    out = sm.push(0.0, first)
    for k in range(1, 30):
        out += sm.push(0.0 if k < 20 else (k - 19) / FPS, rng.normal(size=(J, D)))
        assert k + 1 - len(out) == min(k + 1, lag), "held frames"
    out += sm.flush()
    assert len(out) == 30
    # Released before any later time was seen, the repeats are the first pose as it was given.
    assert all(np.array_equal(o, first) for o in out[:20 - lag])


def test_smoother_leaves_less_jitter_on_a_still_pose_than_the_filter(defaults: FilterConfig) -> None:
    rng = np.random.default_rng(1)
    pose, _ = _scene(1)
    ts = np.arange(FRAMES) / FPS
    noisy = pose + rng.normal(0.0, NOISE, (FRAMES, J, D))
    smoothed = _smooth(make_smoother(_with(defaults, "auto"), (J, D), live=False), ts, noisy)
    residual = np.std(smoothed[WARMUP:] - pose)
    assert residual < 0.3 * NOISE, f"{residual * 100:.2f} cm of jitter left of 1 cm"    # the filter: under 0.5


def test_smoother_keeps_float32_and_refuses_a_lag_of_zero(defaults: FilterConfig) -> None:
    sm = KalmanSmoother(defaults.kalman, (J, D), 3)
    out = _smooth(sm, np.arange(6) / FPS, np.zeros((6, J, D), np.float32))
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="at least one frame"):
        KalmanSmoother(defaults.kalman, (J, D), 0)


def test_make_smoother_lags_only_files_filtered_by_kalman(defaults: FilterConfig) -> None:
    auto = _with(defaults, "auto")
    assert defaults.file_lag > 0
    files = make_smoother(auto, (J, D), live=False)
    assert isinstance(files, KalmanSmoother) and files.lag == defaults.file_lag
    assert make_smoother(auto, (J, D), live=False, max_lag=3).lag == 3      # a short ring
    assert isinstance(make_smoother(_with(defaults, "kalman"), (J, D), live=False), KalmanSmoother)
    for cfg, live, room in ((auto, True, 100), (_with(defaults, "kalman"), True, 100),
                            (_with(defaults, "one_euro"), False, 100), (_with(defaults, "off"), False, 100),
                            (dataclasses.replace(auto, file_lag=0), False, 100), (auto, False, 0)):
        sm = make_smoother(cfg, (J, D), live=live, max_lag=room)
        assert isinstance(sm, CausalSmoother) and sm.lag == 0
        x = np.ones((J, D))
        assert len(sm.push(0.0, x)) == 1 and sm.flush() == []


def test_root_settings_are_the_roots_own(defaults: FilterConfig) -> None:
    root = defaults.for_root()
    assert root.method == defaults.method and root.file_lag == defaults.file_lag
    assert root.kalman == defaults.root.kalman and root.one_euro == defaults.root.one_euro
    # The root's depth jitters by decimetres: no adaptation to follow it, no speed term to open
    # the One Euro cutoff on it (docs/results.md, "Rendered video").
    assert root.kalman.adapt_window_s == 0 and root.one_euro.beta == 0


@pytest.mark.parametrize("method", SMOOTHING)
def test_a_non_finite_timestamp_is_refused(defaults: FilterConfig, method: str) -> None:
    f = make_filter(_with(defaults, method), (J, D))
    f(0.0, np.zeros((J, D)))
    for t in (math.nan, math.inf):
        with pytest.raises(ValueError, match="finite"):
            f(t, np.zeros((J, D)))


def test_after_a_flush_the_smoother_starts_afresh(defaults: FilterConfig) -> None:
    """The frames after a flush (a track's end) are smoothed as by a new smoother, even at the
    very next timestamps, where no gap in time would reset it."""
    cfg = defaults.kalman
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(8, J, D)), rng.normal(size=(8, J, D))
    used, fresh = KalmanSmoother(cfg, (J, D), 3), KalmanSmoother(cfg, (J, D), 3)
    for k in range(8):
        used.push(k / FPS, a[k])
    used.flush()
    got, want = [], []
    for k in range(8):
        got += used.push((8 + k) / FPS, b[k])
        want += fresh.push((8 + k) / FPS, b[k])
    np.testing.assert_array_equal(np.stack(got + used.flush()), np.stack(want + fresh.flush()))


@pytest.mark.parametrize("key", ["refiner", "live_refiner"])
@pytest.mark.parametrize("value", ["", "  ", None])
def test_an_empty_refiner_setting_is_refused(defaults: FilterConfig, key: str, value: str | None) -> None:
    cfg = dataclasses.replace(defaults, **{key: value})
    with pytest.raises(ValueError, match=f"{key} must be"):
        cfg.check()
