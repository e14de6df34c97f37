"""Metrics: known values and the invariances PA-MPJPE must have."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train.metrics import calibration, mpjpe, pa_mpjpe, pck, procrustes_align


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def test_mpjpe_known_value():
    target = np.zeros((2, 17, 3))
    pred = target.copy()
    pred[..., 0] = 3.0
    pred[..., 1] = 4.0
    assert mpjpe(pred, target) == 5.0


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.5, 2.0))
def test_pa_mpjpe_ignores_similarity_transforms(seed, scale):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(3, 17, 3))
    moved = scale * target @ _rotation(rng).T + rng.normal(size=(1, 1, 3))
    assert pa_mpjpe(moved, target) < 1e-9
    assert mpjpe(moved, target) > 1e-3


def test_procrustes_excludes_reflection():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(1, 17, 3))
    mirrored = target * np.array([-1.0, 1.0, 1.0])
    aligned = procrustes_align(mirrored, target)
    rot_check = np.linalg.norm(aligned - target, axis=-1).mean()
    assert rot_check > 0.05          # a mirror image cannot be rotated onto the original


def test_pa_mpjpe_not_more_than_mpjpe():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(20, 17, 3))
    pred = target + rng.normal(scale=0.1, size=target.shape)
    assert pa_mpjpe(pred, target) <= mpjpe(pred, target) + 1e-12


def test_pck_threshold_and_visibility():
    target = np.zeros((1, 4, 2))
    pred = np.array([[[0.0, 0.0], [1.9, 0.0], [2.1, 0.0], [5.0, 0.0]]])
    assert pck(pred, target, np.array([10.0]), 0.2) == 0.5
    assert pck(pred, target, np.array([10.0]), 0.2, visible=np.array([[True, True, False, False]])) == 1.0


def test_calibration_known_values():
    # 70% hits at a confidence of 0.7: calibrated. The same hits claimed at 1.0: 0.3 off.
    hit = np.arange(10) < 7
    assert calibration(np.full(10, 0.7), hit)["ece"] == pytest.approx(0.0)
    full = calibration(np.ones(10), hit)
    assert full["ece"] == pytest.approx(0.3)
    assert full["bins"] == [{"low": 0.9, "high": 1.0, "joints": 10, "mean_conf": 1.0, "hit_rate": 0.7}]
    # Three bins, weighted by their share of the joints; 1.0 falls in the top one.
    res = calibration(np.array([0.1, 0.2, 0.9, 1.0]), np.array([True, False, True, True]))
    assert [b["joints"] for b in res["bins"]] == [1, 1, 2]
    assert res["ece"] == pytest.approx(0.25 * 0.9 + 0.25 * 0.2 + 0.5 * 0.05)
    empty = calibration(np.zeros(0), np.zeros(0, bool))
    assert np.isnan(empty["ece"]) and empty["joints"] == 0 and empty["bins"] == []
    with pytest.raises(ValueError, match="differ in size"):
        calibration(np.ones(3), np.ones(2, bool))


@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=60))
@settings(max_examples=60, deadline=None)
def test_calibration_bins_partition_the_joints(pairs):
    conf = np.array([c for c, _ in pairs])
    hit = np.array([h for _, h in pairs])
    res = calibration(conf, hit)
    assert sum(b["joints"] for b in res["bins"]) == len(pairs) == res["joints"]
    assert 0.0 <= res["ece"] <= 1.0
    for b in res["bins"]:
        assert b["low"] - 1e-12 <= b["mean_conf"] <= b["high"] + 1e-12
