"""root_3d's bound on depth speed (streamer/depth_limit.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.depth_limit import DepthRateLimit

DT = 0.04


def _limit(rate: float = 2.0) -> DepthRateLimit:
    return DepthRateLimit(rate, reset_gap_s=1.0)


def test_slow_motion_passes_untouched() -> None:
    limit = _limit()
    for i, z in enumerate(np.linspace(3.0, 3.3, 20)):          # 0.3 m in 0.8 s
        root = np.array([0.1, -0.2, z])
        assert limit(i * DT, root) is root


def test_a_jump_is_cut_to_the_bound_along_the_ray() -> None:
    limit = _limit(2.0)
    limit(0.0, np.array([0.3, 0.1, 3.0]))
    far = np.array([3.0, 1.0, 30.0])                            # the same ray, ten times as far
    got = limit(DT, far)
    assert got[2] == pytest.approx(3.0 * math.exp(2.0 * DT))
    np.testing.assert_allclose(got[:2] / got[2], far[:2] / far[2])
    near = limit(2 * DT, np.array([0.03, 0.01, 0.3]))
    assert near[2] == pytest.approx(got[2] * math.exp(-2.0 * DT))


@given(st.lists(st.floats(0.2, 80.0), min_size=2, max_size=40), st.floats(0.1, 5.0))
def test_no_step_is_faster_than_the_bound(depths: list[float], rate: float) -> None:
    limit = _limit(rate)
    out = [limit(i * DT, np.array([0.0, 0.0, z]))[2] for i, z in enumerate(depths)]
    assert out[0] == depths[0]
    steps = np.abs(np.diff(np.log(out)))
    assert (steps <= rate * DT + 1e-9).all()


@pytest.mark.parametrize("gap", ["reset", "time"])
def test_a_new_track_starts_from_its_own_depth(gap: str) -> None:
    limit = _limit()
    limit(0.0, np.array([0.0, 0.0, 3.0]))
    t = DT
    if gap == "reset":
        limit.reset()
    else:
        t = 1.5                                                 # over reset_gap_s
    assert limit(t, np.array([0.0, 0.0, 12.0]))[2] == 12.0


def test_time_going_backwards_starts_afresh() -> None:
    # Concatenated streams start their clocks again.
    limit = _limit()
    limit(5.0, np.array([0.0, 0.0, 3.0]))
    assert limit(0.0, np.array([0.0, 0.0, 9.0]))[2] == 9.0


def test_rate_zero_and_odd_depths_pass_untouched() -> None:
    off = _limit(0.0)
    off(0.0, np.array([0.0, 0.0, 3.0]))
    assert off(DT, np.array([0.0, 0.0, 40.0]))[2] == 40.0
    limit = _limit()
    limit(0.0, np.array([0.0, 0.0, 3.0]))
    for odd in (np.nan, np.inf, -1.0, 0.0):
        root = np.array([0.0, 0.0, odd])
        assert limit(DT, root) is root
    assert limit(2 * DT, np.array([0.0, 0.0, 3.1]))[2] == 3.1     # the odd ones left no trace


def test_start_sets_where_a_track_begins() -> None:
    limit = _limit(2.0)
    assert not limit.started
    limit.start(0.0, 4.0)
    assert limit.started
    assert limit(0.0, np.array([0.0, 0.0, 20.0]))[2] == pytest.approx(4.0)      # its first frame too
    assert limit(DT, np.array([0.0, 0.0, 20.0]))[2] == pytest.approx(4.0 * math.exp(2.0 * DT))
    fresh = _limit(2.0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        fresh.start(0.0, bad)
        assert not fresh.started
