"""The resampled intervals of the evaluations' headline figures (train/intervals.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train.intervals import crossed_paired_difference, crossed_ratio_interval, paired_ratio_difference, ratio_interval


def photos(rng: np.random.Generator, n: int, p: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """PCK's terms for n photos: 8 to 13 labelled joints each, each found with chance p."""
    joints = rng.integers(8, 14, size=n)
    return rng.binomial(joints, p), joints


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(0, 2**31 - 1))
def test_the_value_is_the_ratio_of_sums_and_the_bounds_are_ordered(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    hits, joints = photos(rng, n)
    got = ratio_interval(hits, joints, resamples=300, seed=seed)
    assert got.value == pytest.approx(hits.sum() / joints.sum())
    per_photo = hits / joints
    if n == 1:                       # one photo alone says nothing of others
        assert np.isnan(got.low) and np.isnan(got.high)
        return
    # Every resample is a mix of the photos, so its ratio lies within theirs.
    assert per_photo.min() - 1e-12 <= got.low <= got.high <= per_photo.max() + 1e-12


def test_the_interval_covers_the_truth_about_95_times_in_100() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        hits, joints = photos(rng, 100, p=0.85)
        got = ratio_interval(hits, joints, resamples=1000, seed=int(rng.integers(1 << 30)))
        covered += got.low <= 0.85 <= got.high
    assert 180 <= covered <= 198          # 95% of 200 is 190; a binomial's 99.9% band


def test_the_interval_narrows_as_the_square_root_of_the_samples() -> None:
    rng = np.random.default_rng(1)
    small = ratio_interval(*photos(rng, 100))
    large = ratio_interval(*photos(rng, 10_000))
    ratio = (small.high - small.low) / (large.high - large.low)
    assert 7.0 < ratio < 13.0              # sqrt(100) = 10


def test_clusters_are_drawn_whole() -> None:
    """Ten identical copies of each photo add no evidence: resampled by cluster, the interval is
    the one of the photos alone; resampled one by one, it would be about sqrt(10) narrower."""
    rng = np.random.default_rng(2)
    hits, joints = photos(rng, 50)
    alone = ratio_interval(hits, joints, seed=5)
    labels = np.repeat(np.arange(50), 10)
    copies = ratio_interval(np.repeat(hits, 10), np.repeat(joints, 10), clusters=labels, seed=5)
    assert copies.value == pytest.approx(alone.value)
    assert copies.low == pytest.approx(alone.low) and copies.high == pytest.approx(alone.high)
    naive = ratio_interval(np.repeat(hits, 10), np.repeat(joints, 10), seed=5)
    assert (naive.high - naive.low) < 0.5 * (alone.high - alone.low)
    # Any order of the labels names the same clusters.
    shuffled = rng.permutation(500)
    again = ratio_interval(np.repeat(hits, 10)[shuffled], np.repeat(joints, 10)[shuffled], clusters=labels[shuffled],
                           seed=5)
    assert again.value == pytest.approx(alone.value)


def renders(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """800 rendered images' motions (40) and backgrounds (8), and their errors: 10 on average, moved
    by both."""
    motion, background = rng.integers(0, 40, 800), rng.integers(0, 8, 800)
    return motion, background, 10.0 + rng.normal(0, 1, 40)[motion] + rng.normal(0, 1, 8)[background] + rng.normal(0, 2, 800)


def test_crossed_factors_are_resampled_at_once() -> None:
    """Renders share a motion and a background: both move the figure. Over 100 such sets the
    interval resampling both covers the true mean about 95 times; resampling motions alone misses
    it about a third of the time, as the evaluation's intervals did before both were resampled."""
    rng = np.random.default_rng(0)
    both = motions_only = 0
    for k in range(100):
        motion, background, err = renders(rng)
        ones = np.ones(800)
        got = crossed_ratio_interval(err, ones, [motion, background], resamples=1000, seed=k)
        assert got.value == pytest.approx(err.mean())
        both += got.low <= 10.0 <= got.high
        alone = ratio_interval(err, ones, motion, resamples=1000, seed=k)
        motions_only += alone.low <= 10.0 <= alone.high
    assert both >= 90 and motions_only <= 80


def test_one_crossed_factor_is_a_cluster_resampling() -> None:
    rng = np.random.default_rng(4)
    hits, joints = photos(rng, 300)
    clusters = rng.integers(0, 30, 300)
    crossed = crossed_ratio_interval(hits, joints, [clusters], seed=1)
    whole = ratio_interval(hits, joints, clusters, seed=1)
    assert crossed.value == pytest.approx(whole.value)
    assert crossed.high - crossed.low == pytest.approx(whole.high - whole.low, rel=0.15)
    with pytest.raises(ValueError, match="every unit"):
        crossed_ratio_interval(hits, joints, [clusters[:-1]])
    with pytest.raises(ValueError, match="every unit a level"):
        crossed_ratio_interval(hits, joints, [clusters, clusters[:-1]])
    one_level = crossed_ratio_interval(hits, joints, [clusters, np.zeros(300)])
    assert np.isnan(one_level.low) and np.isnan(one_level.high)     # one background says nothing of others


def test_no_crossed_factor_resamples_the_units_one_by_one() -> None:
    """Without a factor the product weights are each unit's draw count: the units' own bootstrap,
    not a resampling that never varies."""
    rng = np.random.default_rng(6)
    hits, joints = photos(rng, 300)
    crossed = crossed_ratio_interval(hits, joints, [], seed=1)
    alone = ratio_interval(hits, joints, seed=1)
    assert crossed.high - crossed.low == pytest.approx(alone.high - alone.low, rel=0.15)


def test_a_crossed_paired_difference_resamples_both_factors_for_both_runs() -> None:
    """Two runs on renders that share motions and backgrounds, b a consistent 1 unit worse, with a
    background-by-run interaction: the paired interval resampling motions alone is too narrow
    (over 60 sets it covers the true difference 8 times, the crossed one 53)."""
    rng = np.random.default_rng(7)
    crossed_hits = motions_hits = 0
    for k in range(60):
        motion, background, base = renders(rng)
        worse = base + 1.0 + rng.normal(0, 1, 8)[background] + rng.normal(0, 0.2, 800)
        ones = np.ones(800)
        both = crossed_paired_difference(base, ones, worse, ones, [motion, background], resamples=1000, seed=k)
        alone = paired_ratio_difference(base, ones, worse, ones, motion, resamples=1000, seed=k)
        assert both.value == pytest.approx(alone.value)
        crossed_hits += both.low <= -1.0 <= both.high
        motions_hits += alone.low <= -1.0 <= alone.high
    assert crossed_hits >= 45 and motions_hits <= 20, (crossed_hits, motions_hits)
    same = crossed_paired_difference(base, ones, base, ones, [motion, background])
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)


def test_a_paired_difference_sees_a_small_consistent_change_that_either_interval_hides() -> None:
    rng = np.random.default_rng(3)
    base = rng.gamma(2.0, 70.0, size=200)                 # per-pose errors, mm: widely spread
    better = base - 2.0 + rng.normal(0.0, 0.5, size=200)   # 2 mm better on every pose
    ones = np.ones(200)
    a, b = ratio_interval(better, ones), ratio_interval(base, ones)
    assert a.high > b.low                                   # the two intervals overlap widely
    diff = paired_ratio_difference(better, ones, base, ones)
    assert diff.value == pytest.approx(better.mean() - base.mean())
    assert -2.2 < diff.low < diff.value < diff.high < -1.8
    # The same run against itself differs by exactly nothing.
    same = paired_ratio_difference(base, ones, base, ones)
    assert same.value == same.low == same.high == 0.0


def test_the_same_seed_gives_the_same_interval() -> None:
    hits, joints = photos(np.random.default_rng(4), 30)
    assert ratio_interval(hits, joints, seed=9) == ratio_interval(hits, joints, seed=9)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one length"):
        ratio_interval(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="label every unit"):
        ratio_interval(np.ones(3), np.ones(3), clusters=np.zeros(2))
    with pytest.raises(ValueError, match="nothing to resample"):
        ratio_interval(np.ones(0), np.ones(0))
    with pytest.raises(ValueError, match="same units"):
        paired_ratio_difference(np.ones(3), np.ones(3), np.ones(2), np.ones(2))


def test_a_single_cluster_or_a_nan_figure_has_no_interval() -> None:
    """Rendered images of one motion resampled as one cluster never vary: a zero-width interval
    would claim a certainty the set does not have. A figure that is NaN has none either."""
    one_motion = ratio_interval(np.array([3.0, 5.0, 4.0]), np.array([4.0, 6.0, 5.0]), clusters=np.zeros(3))
    assert np.isnan(one_motion.low) and np.isnan(one_motion.high) and one_motion.value == pytest.approx(12 / 15)
    undefined = ratio_interval(np.array([np.nan, 1.0, 2.0]), np.ones(3))
    assert np.isnan(undefined.value) and np.isnan(undefined.low) and np.isnan(undefined.high)


def test_units_without_any_weight_leave_no_nan_in_the_bounds() -> None:
    """A photo with no labelled joint (or a clip with no frame found) counts for nothing."""
    got = ratio_interval(np.array([3.0, 0.0, 5.0]), np.array([4.0, 0.0, 5.0]), seed=0)
    assert np.isfinite(got.low) and np.isfinite(got.high) and got.value == pytest.approx(8 / 9)
