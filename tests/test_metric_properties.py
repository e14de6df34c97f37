"""The reported accuracy figures against independent reimplementations: PA-MPJPE against Horn's
quaternion solution (which cannot reflect), `train.evaluate`'s PCK@0.2 and 2D error against a
plain loop, `train.video_eval`'s acceleration error against a loop over frame triples, and the
edge cases (a degenerate pose, NaN predictions, no labelled joint, a frame without a person)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.model_file import default_model_config
from engines.skeleton import H36M17
from train.evaluate import PCK_THRESHOLD, TORSO, metrics_2d
from train.intervals import crossed_ratio_interval, ratio_interval
from train.metrics import mpjpe, pa_mpjpe, procrustes_align
from train.video_eval import score_track

J = H36M17.num_joints
SETTINGS = settings(deadline=None, max_examples=40)
seeds = st.integers(0, 2**32 - 1)


def horn_rotation(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The proper rotation R minimising sum |R p_j - t_j|^2 over centred (J, 3) p and t, from the
    unit quaternion of Horn (1987): a quaternion is always a rotation, never a mirror."""
    sxx, sxy, sxz, syx, syy, syz, szx, szy, szz = (p.T @ t).ravel()
    n = np.array([[sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
                  [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
                  [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
                  [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz]])
    q0, qx, qy, qz = np.linalg.eigh(n)[1][:, -1]
    return np.array([[q0*q0 + qx*qx - qy*qy - qz*qz, 2*(qx*qy - q0*qz), 2*(qx*qz + q0*qy)],
                     [2*(qy*qx + q0*qz), q0*q0 - qx*qx + qy*qy - qz*qz, 2*(qy*qz - q0*qx)],
                     [2*(qz*qx - q0*qy), 2*(qz*qy + q0*qx), q0*q0 - qx*qx - qy*qy + qz*qz]])


def horn_pa_errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, J) per-joint distances after the best similarity transform, pose by pose."""
    out = np.empty(pred.shape[:2])
    for n in range(len(pred)):
        p, t = pred[n] - pred[n].mean(0), target[n] - target[n].mean(0)
        rp = p @ horn_rotation(p, t).T
        scale = (rp * t).sum() / max((p * p).sum(), 1e-300)
        out[n] = np.linalg.norm(scale * rp - t, axis=1)
    return out


# --- MPJPE and PA-MPJPE ------------------------------------------------------------------------

@SETTINGS
@given(seeds, st.sampled_from(["noisy", "mirrored", "planar", "collinear", "one point"]))
def test_pa_mpjpe_is_horns_similarity_procrustes(seed: int, kind: str) -> None:
    """Per pose and joint, the same errors as the quaternion solution: a reflection (which would
    fit a mirrored pose better) is never used, and degenerate predictions get the optimum too."""
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(4, J, 3))
    pred = {"noisy": target + rng.normal(scale=0.3, size=target.shape),
            "mirrored": target * np.array([-1.0, 1.0, 1.0]) + rng.normal(scale=0.05, size=target.shape),
            "planar": target * np.array([1.0, 1.0, 0.0]),
            "collinear": rng.normal(size=(4, J, 1)) * rng.normal(size=(4, 1, 3)),
            "one point": np.broadcast_to(rng.normal(size=(4, 1, 3)), target.shape).copy()}[kind]
    ours = np.linalg.norm(procrustes_align(pred, target) - target, axis=-1)
    assert np.allclose(ours, horn_pa_errors(pred, target), atol=1e-9)
    assert pa_mpjpe(pred, target) == pytest.approx(horn_pa_errors(pred, target).mean(), abs=1e-9)
    # Least squares: never worse, in summed squares, than only centring both.
    centred = pred - pred.mean(1, keepdims=True) - (target - target.mean(1, keepdims=True))
    assert (ours ** 2).sum() <= (centred ** 2).sum() + 1e-9


def test_mpjpe_is_the_mean_over_17_joints_and_the_poses() -> None:
    rng = np.random.default_rng(3)
    target = rng.normal(size=(5, J, 3))
    pred = target.copy()
    pred[2, 7] += [0.0, 0.0, 0.34]              # one joint of one pose 340 mm off
    assert mpjpe(pred, target) * 1000.0 == pytest.approx(340.0 / J / 5)


def test_a_pose_with_nan_or_inf_is_nan_and_leaves_the_others_alone() -> None:
    """A non-finite prediction is NaN in PA-MPJPE as in MPJPE, not a failed SVD for every pose."""
    rng = np.random.default_rng(4)
    target = rng.normal(size=(3, J, 3))
    pred = target + rng.normal(scale=0.1, size=target.shape)
    clean = procrustes_align(pred, target)
    pred[1, 5, 0] = np.nan
    pred[2, 0, 2] = np.inf
    aligned = procrustes_align(pred, target)
    assert np.isnan(aligned[1:]).all()
    assert np.allclose(aligned[0], clean[0])
    assert np.isnan(pa_mpjpe(pred, target)) and np.isnan(mpjpe(pred, target))


# --- 2D: PCK@0.2 and the 2D error of train.evaluate --------------------------------------------

def loop_pck(points: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> tuple[float, float, int]:
    """PCK@0.2 of the torso diagonal (l_shoulder to r_hip, ground truth), 2D error, joints: one
    joint at a time; a pose without a torso has no reference, and none of its joints count."""
    a, b = H36M17.indices(TORSO)
    hits = count = 0
    dist_sum = 0.0
    for n in range(len(gt)):
        torso = float(np.hypot(*(gt[n, a] - gt[n, b])))
        for j in range(J):
            if visible[n, j] and torso > 1e-6:
                d = float(np.hypot(*(points[n, j] - gt[n, j])))
                hits, count, dist_sum = hits + (d <= 0.2 * torso), count + 1, dist_sum + d
    return (hits / count, dist_sum / count, count) if count else (float("nan"), float("nan"), 0)


@SETTINGS
@given(seeds, st.floats(0.0, 1.0), st.booleans())
def test_evaluate_pck_and_2d_error_are_those_of_a_plain_loop(seed: int, shown: float, zero_torso: bool) -> None:
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 128, size=(6, J, 2))
    points = gt + rng.normal(scale=rng.uniform(1, 20), size=gt.shape)
    visible = rng.random((6, J)) < shown
    if zero_torso:                                   # a pose whose torso diagonal is 0
        a, b = H36M17.indices(TORSO)
        gt[0, b] = gt[0, a]
    res = metrics_2d(points, gt, visible, default_model_config())
    pck, err, count = loop_pck(points, gt, visible)
    assert res["joints"] == count
    if count:
        assert res["pck"] == pytest.approx(pck) and res["error_px"] == pytest.approx(err)
    else:                                            # nothing labelled: no figure, not 0 or 1
        assert np.isnan(res["pck"]) and np.isnan(res["error_px"])


@SETTINGS
@given(seeds, st.floats(0.1, 10.0))
def test_pck_does_not_depend_on_the_image_scale(seed: int, factor: float) -> None:
    """Relative to the torso: the same pose at another size in pixels scores the same."""
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 128, size=(5, J, 2))
    points = gt + rng.normal(scale=8.0, size=gt.shape)
    visible = np.ones((5, J), bool)
    cfg = default_model_config()
    assert metrics_2d(points * factor, gt * factor, visible, cfg)["pck"] == pytest.approx(
        metrics_2d(points, gt, visible, cfg)["pck"])


def test_a_joint_exactly_at_the_threshold_is_a_hit_and_just_beyond_is_not() -> None:
    a, b = H36M17.indices(TORSO)
    gt = np.zeros((1, J, 2))
    gt[0, b] = [30.0, 40.0]                          # torso diagonal 50 px: threshold 10 px
    points = gt.copy()
    k = H36M17.index("head_top")
    visible = np.zeros((1, J), bool)
    visible[0, k] = True
    points[0, k] = gt[0, k] + [0.0, PCK_THRESHOLD * 50.0]
    assert metrics_2d(points, gt, visible, default_model_config())["pck"] == 1.0
    points[0, k, 1] += 1e-6
    assert metrics_2d(points, gt, visible, default_model_config())["pck"] == 0.0


# --- video: frames without a person, and the acceleration error ---------------------------------

def _clip(frames: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    j3d = np.cumsum(rng.normal(0, 0.02, (frames, J, 3)), axis=0) + rng.normal(0, 0.3, (1, J, 3)) + [0, 0, 4.0]
    j2d = j3d[..., :2] / j3d[..., 2:] * 500.0 + 240.0
    return {"joints_3d": j3d, "joints_2d": j2d, "visible": rng.random((frames, J)) < 0.8}


@SETTINGS
@given(seeds, st.integers(3, 12), st.floats(0.0, 1.0))
def test_video_figures_are_those_of_a_loop_over_the_frames_found(seed: int, frames: int, missing: float) -> None:
    """MPJPE over the frames with a person (pelvis-relative, 17 joints), PCK over their visible
    joints, acceleration error over the triples of consecutive frames all with a person. A frame
    whose prediction is not finite counts as one without a person."""
    rng = np.random.default_rng(seed)
    labels = _clip(frames, seed)
    pelvis = H36M17.index("pelvis")
    pred = labels["joints_3d"] + rng.normal(0, 0.05, labels["joints_3d"].shape)
    pts = labels["joints_2d"] + rng.normal(0, 6.0, labels["joints_2d"].shape)
    found = rng.random(frames) >= missing
    if frames > 4:
        pred[4, 3, 1] = np.nan                       # reported, but not a pose
    score = score_track(found, pred, pts, labels)
    s = score.summary()
    ok = found & np.isfinite(pred).all(axis=(1, 2))
    rel = lambda x: x - x[:, pelvis:pelvis + 1]      # noqa: E731
    p, g = rel(pred), rel(labels["joints_3d"])
    a, b = H36M17.indices(TORSO)
    errs, hits, counted, accel = [], 0, 0, []
    for t in range(frames):
        if not ok[t]:
            continue
        errs.append(np.linalg.norm(p[t] - g[t], axis=1).mean() * 1000.0)
        torso = np.linalg.norm(labels["joints_2d"][t, a] - labels["joints_2d"][t, b])
        for j in range(J):
            if labels["visible"][t, j]:
                counted += 1
                hits += np.linalg.norm(pts[t, j] - labels["joints_2d"][t, j]) <= 0.2 * torso
        if t >= 2 and ok[t - 1] and ok[t - 2]:
            da = (p[t] - 2 * p[t - 1] + p[t - 2]) - (g[t] - 2 * g[t - 1] + g[t - 2])
            accel.append(np.linalg.norm(da, axis=1).mean() * 1000.0)
    assert score.found == int(ok.sum()) and s["found"] == pytest.approx(ok.mean())
    if errs:
        assert s["mpjpe_mm"] == pytest.approx(np.mean(errs))
        assert s["pa_mpjpe_mm"] == pytest.approx(pa_mpjpe(p[ok], g[ok]) * 1000.0)
    else:
        assert np.isnan(s["mpjpe_mm"]) and np.isnan(s["pa_mpjpe_mm"])
    assert score.pck_joints == counted and score.pck_hits == hits
    assert score.accel_triples == len(accel)
    if accel:
        assert s["accel_mm"] == pytest.approx(np.mean(accel))
    else:
        assert np.isnan(s["accel_mm"])


# --- intervals ------------------------------------------------------------------------------------

@SETTINGS
@given(seeds, st.integers(2, 40), st.booleans())
def test_a_ratio_interval_lies_among_the_units_own_ratios(seed: int, n: int, crossed: bool) -> None:
    """Every resample's ratio of sums is a weighted mean of the units' ratios: the bounds lie
    between the smallest and the largest, and the figure is the pooled ratio."""
    rng = np.random.default_rng(seed)
    num, den = rng.uniform(0, 10, n), rng.uniform(0.5, 3, n)
    factors = [rng.integers(0, 4, n), rng.integers(0, 3, n)] if crossed else []
    iv = crossed_ratio_interval(num, den, factors, resamples=300, seed=seed % 1000)
    ratio = num / den
    assert iv.value == pytest.approx(num.sum() / den.sum())
    if np.isfinite(iv.low):
        assert ratio.min() - 1e-9 <= iv.low <= iv.high <= ratio.max() + 1e-9
    scaled = ratio_interval(3.0 * num, den, resamples=300, seed=1)
    plain = ratio_interval(num, den, resamples=300, seed=1)
    assert np.allclose([scaled.value, scaled.low, scaled.high], [3 * plain.value, 3 * plain.low, 3 * plain.high])
