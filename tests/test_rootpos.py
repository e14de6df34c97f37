"""Absolute root position (engines/rootpos.py), property tests on skeleton-shaped poses.

Poses follow the H36M17 tree: each bone (0.1-0.45 m) points roughly where a standing person's
would (legs down, spine up, shoulders and hips sideways), jittered, and the whole body turned
about the vertical and tilted a little. The pelvis is placed at T (x, y within 2 m, z 2-10 m) in
front of a camera with fx 500-2000 px and the principal point near the image centre.

Run this file as a script (`python tests/test_rootpos.py`) to print the per-call cost and the
error statistics under 2 px noise and low-confidence outliers.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engines.rootpos import Intrinsics, camera_intrinsics, root_translation, scale_translation
from engines.skeleton import H36M17

J = H36M17.num_joints
SETTINGS = settings(deadline=None, max_examples=100)

# A standing person's bone directions in camera axes (x right, y down), each bone's from its parent.
_UP, _DOWN, _SIDE = (0.0, -1.0, 0.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)
_LEFT = (-1.0, 0.0, 0.0)
TEMPLATE = np.array([(0.0, 0.0, 0.0), _LEFT, _DOWN, _DOWN, _SIDE, _DOWN, _DOWN, _UP, _UP, _UP, _UP,
                     _SIDE, _DOWN, _DOWN, _LEFT, _DOWN, _DOWN])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch),
                              math.cos(roll), math.sin(roll))
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_z = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return r_y @ r_x @ r_z


def random_pose(rng: np.random.Generator, jitter: float = 0.4) -> np.ndarray:
    """(J, 3) metres relative to the pelvis. jitter: spread of the bone directions around the
    standing template (large values give arbitrary directions)."""
    d = TEMPLATE + rng.normal(scale=jitter, size=TEMPLATE.shape)
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
    bone = d * rng.uniform(0.1, 0.45, size=(J, 1))
    x = np.zeros((J, 3))
    for j, p in enumerate(H36M17.parents):
        if p >= 0:
            x[j] = x[p] + bone[j]
    return x @ rotation(rng.uniform(0, 2 * math.pi), rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)).T


@st.composite
def scenes(draw, max_depth: float = 10.0, min_fx: float = 500.0, jitter: float = 0.4):
    """(pose, T, intrinsics, conf, rng) with the pose in front of the camera."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = np.array([draw(st.floats(-2, 2)), draw(st.floats(-2, 2)), draw(st.floats(2, max_depth))])
    fx = draw(st.floats(min_fx, 2000))
    width = draw(st.sampled_from([640, 1280, 1920]))
    height = width * 9 // 16
    k = Intrinsics(fx=fx, fy=fx * draw(st.floats(0.97, 1.03)),
                   cx=width / 2 + draw(st.floats(-20, 20)), cy=height / 2 + draw(st.floats(-20, 20)))
    x = random_pose(rng, jitter)
    conf = rng.uniform(0.3, 1.0, size=J)
    return x, t, k, conf, rng


def rel_error(est: np.ndarray, t: np.ndarray) -> float:
    return float(np.linalg.norm(est - t) / np.linalg.norm(t))


# --- intrinsics -----------------------------------------------------------------------------

@given(st.integers(16, 4096), st.integers(16, 4096), st.floats(5.0, 170.0))
def test_from_fov_focal_and_centre(width: int, height: int, hfov: float) -> None:
    k = Intrinsics.from_fov(width, height, hfov)
    assert k.fx == pytest.approx(width / 2 / math.tan(math.radians(hfov) / 2), rel=1e-12)
    assert k.fy == k.fx
    assert (k.cx, k.cy) == (width / 2, height / 2)
    # The field of view's edge lands on the image's edge (x = w with pixel centres at +0.5);
    # a point on the optical axis on the image centre.
    a = math.radians(hfov) / 2
    np.testing.assert_allclose(k.project(np.array([[math.sin(a), 0.0, math.cos(a)],
                                                   [-math.sin(a), 0.0, math.cos(a)],
                                                   [0.0, 0.0, 3.0]])),
                               [[width, height / 2], [0, height / 2], [width / 2, height / 2]],
                               atol=1e-9 * width)


def test_from_fov_default_and_validation() -> None:
    k = Intrinsics.from_fov(1280, 720)
    assert k.fx == pytest.approx(640 / math.tan(math.radians(30)))      # 60 degrees by default
    for bad in [(0, 720, 60.0), (1280, -1, 60.0), (1280, 720, 0.0), (1280, 720, 180.0)]:
        with pytest.raises(ValueError):
            Intrinsics.from_fov(*bad)
    with pytest.raises(ValueError, match="focal"):
        Intrinsics(fx=0.0, fy=500.0, cx=0.0, cy=0.0)


def test_camera_intrinsics_takes_a_given_focal_and_principal_point() -> None:
    k = camera_intrinsics(640, 480, None, 60.0)
    assert (k.cx, k.cy) == (320.0, 240.0) and k.fx == k.fy == Intrinsics.from_fov(640, 480).fx
    k = camera_intrinsics(640, 480, 800.0, 60.0, (300.0, 100.0))
    assert (k.fx, k.fy, k.cx, k.cy) == (800.0, 800.0, 300.0, 100.0)
    # A point on the optical axis lands on the principal point, wherever that is.
    np.testing.assert_allclose(k.project(np.array([0.0, 0.0, 4.0])), [300.0, 100.0])


# --- exactness ------------------------------------------------------------------------------

@SETTINGS
@given(scenes(jitter=2.0), st.booleans(), st.booleans())
def test_exact_projection_recovers_t(scene, uniform_conf: bool, refine: bool) -> None:
    """Any pose (jitter 2: bone directions nearly arbitrary), exact 2D: T comes back to 1e-6."""
    x, t, k, conf, _ = scene
    assume((x[:, 2] + t[2]).min() > 0.2)
    if uniform_conf:
        conf = np.ones(J)
    est, rms = root_translation(x, k.project(x + t), conf, k, refine=refine)
    assert est.shape == (3,) and est.dtype == np.float64
    assert rel_error(est, t) < 1e-6, (est, t)
    assert rms < 1e-6


@SETTINGS
@given(scenes())
def test_float32_inputs(scene) -> None:
    """The network's float32 output: T to float32 precision (2D rounding ~1e-4 px)."""
    x, t, k, conf, _ = scene
    est, rms = root_translation(x.astype(np.float32), k.project(x + t).astype(np.float32),
                                conf.astype(np.float32), k)
    assert rel_error(est, t) < 1e-4 and rms < 1e-2


# --- noise and outliers ---------------------------------------------------------------------

@SETTINGS
@given(scenes(max_depth=6.0, min_fx=800.0))
def test_two_pixel_noise_error_stays_small(scene) -> None:
    """2 px Gaussian noise per coordinate: T within 5% of the depth (measured over 20 000 draws:
    mean 0.3%, 99th percentile 1.3%, max 3.2%), and the rms reflects the noise."""
    x, t, k, conf, rng = scene
    uv = k.project(x + t) + rng.normal(scale=2.0, size=(J, 2))
    est, rms = root_translation(x, uv, conf, k)
    assert np.linalg.norm(est - t) < 0.05 * t[2], (est, t)
    assert 0.3 < rms < 6.0


def test_noise_error_grows_with_the_noise() -> None:
    """Seeded: the mean error grows about linearly with the pixel noise (graceful, no cliff)."""
    rng = np.random.default_rng(7)
    errors = {s: [] for s in (0.5, 1.0, 2.0, 4.0, 8.0)}
    for _ in range(300):
        x = random_pose(rng)
        t = np.array([rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(2, 6)])
        k = Intrinsics.from_fov(1280, 720, rng.uniform(40, 90))
        noise = rng.normal(size=(J, 2))
        for s, e in errors.items():
            est, _ = root_translation(x, k.project(x + t) + s * noise, np.ones(J), k)
            e.append(np.linalg.norm(est - t) / t[2])
    mean = {s: float(np.mean(e)) for s, e in errors.items()}
    for lo, hi in zip(list(mean)[:-1], list(mean)[1:]):
        assert 1.5 < mean[hi] / mean[lo] < 2.5, mean
    assert mean[8.0] < 0.05, mean


@SETTINGS
@given(scenes(max_depth=6.0, min_fx=800.0), st.data())
def test_low_confidence_outliers_barely_matter(scene, data) -> None:
    """Two joints moved 100 px but reported with conf 0.01: T moves under 5% of the depth and
    under a sixth of what the same outliers do at full confidence. (The worst seen: 3.3% of the
    depth, over 20,000 random draws at the ranges' far edge, fx 800 px and 6 m, where the person
    is smallest; 3.1% was the counter-example that retired a 3% bound. A ratio of 0.096 over
    20,000 draws across the ranges.)"""
    x, t, k, conf, rng = scene
    uv = k.project(x + t)
    bad = list(data.draw(st.lists(st.integers(0, J - 1), min_size=2, max_size=2, unique=True)))
    angle = rng.uniform(0, 2 * math.pi, size=2)
    moved = uv.copy()
    moved[bad] += 100.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    low, high = conf.copy(), conf.copy()
    low[bad], high[bad] = 0.01, 1.0
    est_low, _ = root_translation(x, moved, low, k)
    est_high, _ = root_translation(x, moved, high, k)
    shift_low = np.linalg.norm(est_low - t)
    assert shift_low < 0.05 * t[2], (est_low, t)
    assert shift_low < 0.15 * np.linalg.norm(est_high - t)


def test_depth_reweighting_beats_the_plain_algebraic_solve() -> None:
    """Seeded: with 2 px noise on close-up poses (depth spread large against the distance), the
    re-weighted solve is at least as good on average as the plain one."""
    rng = np.random.default_rng(11)
    plain, refined = [], []
    for _ in range(400):
        x = random_pose(rng)
        t = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(1.5, 2.5)])
        k = Intrinsics.from_fov(1280, 720, 70.0)
        uv = k.project(x + t) + rng.normal(scale=2.0, size=(J, 2))
        plain.append(np.linalg.norm(root_translation(x, uv, np.ones(J), k, refine=False)[0] - t))
        refined.append(np.linalg.norm(root_translation(x, uv, np.ones(J), k)[0] - t))
    assert np.mean(refined) <= 1.01 * np.mean(plain), (np.mean(refined), np.mean(plain))


# --- degenerate input: the weak-perspective fallback ----------------------------------------

def assert_in_front(est: np.ndarray, min_depth: float = 0.3, max_depth: float = 100.0) -> None:
    assert est.shape == (3,) and np.all(np.isfinite(est)), est
    assert min_depth <= est[2] <= max_depth, est


@SETTINGS
@given(scenes())
def test_no_confidence_falls_back_near_the_truth(scene) -> None:
    """All conf 0: the scale-based estimate from the (still exact) 2D points, every joint alike."""
    x, t, k, _, _ = scene
    est, rms = root_translation(x, k.project(x + t), np.zeros(J), k)
    assert_in_front(est)
    np.testing.assert_array_equal(est, scale_translation(x, k.project(x + t), np.ones(J), k))
    assert abs(est[2] - t[2]) < 0.25 * t[2]          # measured: mean 0.9%, max 14% (module docstring)
    assert math.isfinite(rms)


@SETTINGS
@given(scenes())
def test_solution_behind_the_camera_falls_back(scene) -> None:
    """A mirrored 3D pose fits the 2D exactly with the pelvis at -T (behind the camera). The
    fallback's scale depends on spreads only, so it places the mirrored pose's centroid where
    the true pose's centroid is (its pelvis is then on the other side of that centroid)."""
    x, t, k, conf, _ = scene
    uv = k.project(x + t)
    est, _ = root_translation(-x, uv, conf, k)
    assert_in_front(est)
    z_bar = conf @ x[:, 2] / conf.sum()
    true = scale_translation(x, uv, conf, k)
    if est[2] > 0.3:                              # (not clipped to min_depth)
        assert est[2] - z_bar == pytest.approx(true[2] + z_bar, rel=1e-9)
    assert abs(est[2] - z_bar - (t[2] + z_bar)) < 0.25 * t[2]


def test_closer_than_min_depth_falls_back() -> None:
    rng = np.random.default_rng(3)
    x = random_pose(rng) * 0.05                   # a 10 cm figure 20 cm from the lens
    k = Intrinsics.from_fov(640, 480)
    t = np.array([0.0, 0.0, 0.2])
    est, _ = root_translation(x, k.project(x + t), np.ones(J), k, min_depth=0.3)
    assert_in_front(est, min_depth=0.3)
    assert est[2] == 0.3


def test_no_2d_spread_gives_the_farthest_point() -> None:
    """Every joint on one pixel: no scale in the image, the person is as far as allowed."""
    x = random_pose(np.random.default_rng(4))
    k = Intrinsics.from_fov(640, 480)
    uv = np.tile([400.0, 300.0], (J, 1))
    est, _ = root_translation(x, uv, np.ones(J), k, max_depth=50.0)
    assert_in_front(est, max_depth=50.0)
    assert est[2] == 50.0
    # On the ray through that pixel, up to the pose's own centroid offset.
    ray = (np.array([400.0, 300.0]) - (k.cx, k.cy)) / k.fx
    np.testing.assert_allclose(est[:2] / est[2], ray, atol=0.05)


def test_non_finite_joints_are_left_out() -> None:
    rng = np.random.default_rng(5)
    x = random_pose(rng)
    t = np.array([0.3, -0.2, 4.0])
    k = Intrinsics.from_fov(1280, 720)
    uv = k.project(x + t) + rng.normal(scale=1.0, size=(J, 2))
    conf = rng.uniform(0.3, 1.0, size=J)
    keep = np.ones(J, dtype=bool)
    keep[[3, 13]] = False
    x_bad, uv_bad, conf_bad = x.copy(), uv.copy(), conf.copy()
    x_bad[3, 1], uv_bad[13, 0], conf_bad[13] = np.nan, np.inf, np.nan
    est, rms = root_translation(x_bad, uv_bad, conf_bad, k)
    ref, ref_rms = root_translation(x[keep], uv[keep], conf[keep], k)
    np.testing.assert_allclose(est, ref, rtol=1e-12)
    assert rms == pytest.approx(ref_rms)
    nothing, rms = root_translation(np.full((J, 3), np.nan), uv, conf, k)
    assert_in_front(nothing)
    assert rms == math.inf


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
anything = st.floats(-1e4, 1e4) | st.sampled_from([np.nan, np.inf, -np.inf, 0.0])


@SETTINGS
@given(arrays(np.float64, (J, 3), elements=anything), arrays(np.float64, (J, 2), elements=anything),
       arrays(np.float64, (J,), elements=st.floats(-1, 2) | st.just(np.nan)),
       st.floats(0.05, 2.0), st.floats(2.0, 200.0))
def test_any_input_gives_a_finite_point_in_front(x: np.ndarray, uv: np.ndarray, conf: np.ndarray,
                                                 min_depth: float, max_depth: float) -> None:
    k = Intrinsics(fx=800.0, fy=800.0, cx=640.0, cy=360.0)
    with np.errstate(all="ignore"):
        est, rms = root_translation(x, uv, conf, k, min_depth=min_depth, max_depth=max_depth)
        fallback = scale_translation(x, uv, conf, k, min_depth=min_depth, max_depth=max_depth)
    assert est.shape == (3,) and np.all(np.isfinite(est)) and est[2] >= min_depth
    assert rms == math.inf or (math.isfinite(rms) and rms >= 0.0)
    assert_in_front(fallback, min_depth, max_depth)


def test_shape_validation() -> None:
    k = Intrinsics.from_fov(640, 480)
    with pytest.raises(ValueError, match="expected joints_3d"):
        root_translation(np.zeros((J, 3)), np.zeros((J - 1, 2)), np.ones(J), k)
    with pytest.raises(ValueError, match="expected joints_3d"):
        root_translation(np.zeros((J, 2)), np.zeros((J, 2)), np.ones(J), k)
    with pytest.raises(ValueError, match="expected joints_3d"):
        root_translation(np.zeros((J, 3)), np.zeros((J, 2)), np.ones((J, 1)), k)


# --- cost (measured by running this file, never asserted: tests assert no wall-clock time) -----------------------------------------------------------------------------------

def per_call_us(calls: int = 2000, **kwargs) -> float:
    """Median over 5 batches of the cost of one call, in microseconds (float32 network outputs)."""
    rng = np.random.default_rng(0)
    x = random_pose(rng)
    k = Intrinsics.from_fov(1280, 720)
    uv = k.project(x + [0.3, 0.1, 3.5]) + rng.normal(size=(J, 2))
    args = (x.astype(np.float32), uv.astype(np.float32), rng.uniform(0.3, 1, J).astype(np.float32), k)
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            root_translation(*args, **kwargs)
        batches.append((time.perf_counter() - start) / calls * 1e6)
    return float(np.median(batches))


if __name__ == "__main__":  # the numbers for the docs
    print(f"root_translation: {per_call_us():.1f} us/call (refined), "
          f"{per_call_us(refine=False):.1f} us/call (one solve)")
    rng = np.random.default_rng(1)
    noise, outlier = [], []
    for _ in range(20000):
        x = random_pose(rng)
        t = np.array([rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(2, 6)])
        f = rng.uniform(800, 2000)
        k = Intrinsics(f, f, 640 + rng.uniform(-20, 20), 360 + rng.uniform(-20, 20))
        uv = k.project(x + t)
        conf = rng.uniform(0.3, 1.0, size=J)
        est, _ = root_translation(x, uv + rng.normal(scale=2, size=(J, 2)), conf, k)
        noise.append(np.linalg.norm(est - t) / t[2])
        bad = rng.choice(J, 2, replace=False)
        a = rng.uniform(0, 2 * math.pi, 2)
        uv[bad] += 100 * np.stack([np.cos(a), np.sin(a)], axis=1)
        conf[bad] = 0.01
        outlier.append(np.linalg.norm(root_translation(x, uv, conf, k)[0] - t) / t[2])
    for label, e in [("2 px noise", noise), ("2 outliers of 100 px at conf 0.01", outlier)]:
        e = np.asarray(e)
        print(f"{label:36s} |T error| / depth: mean {100 * e.mean():.2f}%  "
              f"p99 {100 * np.quantile(e, 0.99):.2f}%  max {100 * e.max():.2f}%")


@settings(deadline=None, max_examples=80)
@given(arrays(np.float64, (17, 2), elements=st.floats(-300.0, 900.0)), arrays(np.float64, (17,), elements=st.floats(0.0, 1.0)),
       st.integers(0, 17))
def test_in_view_weights_drop_the_joints_outside_the_image_when_enough_are_inside(points, conf, min_joints) -> None:
    from engines.rootpos import in_view_weights

    w = in_view_weights(conf, points, 640.0, 480.0, min_joints)
    inside = (points[:, 0] >= 0) & (points[:, 0] <= 640) & (points[:, 1] >= 0) & (points[:, 1] <= 480)
    if min_joints > 0 and inside.sum() >= min_joints:
        np.testing.assert_array_equal(w, np.where(inside, conf, 0.0))
    else:
        np.testing.assert_array_equal(w, conf)     # too few in view to solve from them alone, or off


def test_the_root_of_a_person_cut_off_comes_from_the_joints_in_view() -> None:
    """Legs below the frame that the network guessed too short no longer pull the depth."""
    from engines.rootpos import in_view_weights

    k = camera_intrinsics(640, 480, 500.0, 60.0)
    rng = np.random.default_rng(3)
    pose = rng.normal(0.0, 0.25, (17, 3))
    pose[:, 1] = np.linspace(-0.9, 0.9, 17)                 # head at the top, feet at the bottom
    t_true = np.array([0.1, 0.6, 3.0])
    cam = pose + t_true
    uv = np.stack([k.fx * cam[:, 0] / cam[:, 2] + k.cx, k.fy * cam[:, 1] / cam[:, 2] + k.cy], axis=1)
    below = uv[:, 1] > 480
    assert 4 <= (~below).sum() < 17
    guessed = uv.copy()
    guessed[below, 1] = 480 + 0.3 * (uv[below, 1] - 480)     # squeezed towards the frame's edge
    conf = np.where(below, 0.4, 0.8)
    t_all, _ = root_translation(pose, guessed, conf, k)
    t_view, _ = root_translation(pose, guessed, in_view_weights(conf, guessed, 640, 480, 4), k)
    assert abs(t_view[2] - t_true[2]) < 1e-6 < abs(t_all[2] - t_true[2])
